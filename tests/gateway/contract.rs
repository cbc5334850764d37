//! The configuration contract (`tests/contract/reference.yaml`, a verbatim copy of the shared
//! reference) goes through `edgegate check` with its files pointed at generated ones: every key
//! it documents loads.

use crate::support::{ca::Ca, check, temp_dir};
use std::path::Path;

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
fn the_contract_loads() {
    let dir = temp_dir();
    let path = contract_copy(&dir);
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("reference.yaml: OK"), "{stdout}");
    assert!(
        stdout.contains(
            "redis: server redis://127.0.0.1:6379/0, timeout 20ms; for purge channel `edgegate:purge`"
        ),
        "{stdout}"
    );
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
