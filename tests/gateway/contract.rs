//! The configuration contract (`tests/contract/reference.yaml`, a verbatim copy of the shared
//! reference) goes through `edgegate check` with its files pointed at generated ones. Until
//! the round is done it is refused only for the sections of issues still open, each named here:
//! when an issue lands, its lines go, and the test fails if they are not removed.

use crate::support::{ca::Ca, check, temp_dir};
use std::collections::BTreeSet;
use std::path::Path;

/// (the refused key, the open issue that owns it).
const STILL_REFUSED: [(&str, u32); 2] = [
    ("cache.purge_channel", 24),
    // `rate_limits.redis` beside `store: local` serves the purge channel once the fleet work
    // lands; until then a Redis that nothing uses is refused.
    ("rate_limits.redis", 24),
];

fn contract_copy(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let contract = std::fs::read_to_string(root.join("tests/contract/reference.yaml")).unwrap();
    let ca = Ca::new("contract clients");
    let server = ca.server(&["api.example.com"]);
    server.write(dir, "api");
    let client_ca = ca.write(dir, "clients-ca");
    let text = contract
        .replace(
            "/etc/edgegate/tls/api.pem",
            &dir.join("api.pem").display().to_string(),
        )
        .replace(
            "/etc/edgegate/tls/api.key",
            &dir.join("api.key").display().to_string(),
        )
        .replace(
            "/etc/edgegate/tls/clients-ca.pem",
            &client_ca.display().to_string(),
        )
        // The contract shows `hash_key` beside a selection it does not apply to, to document
        // every key in one place; a real configuration with both is refused (the key would do
        // nothing), so the copy uses the selection `hash_key` is for.
        .replace(
            "selection: weighted_round_robin",
            "selection: consistent_hash     ",
        )
        // The aggregation example's `orders` part names an upstream the contract does not
        // define (a route naming an unknown upstream is refused): the copy defines it.
        .replacen(
            "\n  users:\n",
            "\n  orders: { targets: [{ address: 10.0.1.30:8080 }] }\n  users:\n",
            1,
        );
    let path = dir.join("reference.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_contract_is_refused_only_for_sections_of_open_issues() {
    let dir = temp_dir();
    let path = contract_copy(&dir);
    let (ok, _, stderr) = check(&path);
    assert!(!ok, "the contract loads: remove STILL_REFUSED\n{stderr}");
    let prefix = format!("{}:", path.display());
    let refused: BTreeSet<&str> = stderr
        .lines()
        .map(|line| {
            // FILE:line:column: key: message
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line}"));
            let (_position, rest) = rest.split_once(": ").unwrap_or_else(|| panic!("{line}"));
            rest.split_once(": ").map_or(rest, |(key, _)| key)
        })
        .collect();
    let expected: BTreeSet<&str> = STILL_REFUSED.iter().map(|(key, _)| *key).collect();
    assert_eq!(refused, expected, "{stderr}\nowners: {STILL_REFUSED:?}");
}

#[test]
fn the_contract_copy_is_the_shared_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Beside the repository on the machines the project is built on; a clean clone has only
    // the copy.
    let Ok(shared) = std::fs::read_to_string(root.join("../shared/reference.yaml")) else {
        return;
    };
    let copy = std::fs::read_to_string(root.join("tests/contract/reference.yaml")).unwrap();
    assert!(
        shared == copy,
        "../shared/reference.yaml changed: copy it to tests/contract/reference.yaml"
    );
}
