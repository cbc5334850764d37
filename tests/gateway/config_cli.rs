//! `edgegate check` and configuration errors with file:line:column.

use crate::support::{check, temp_dir};
use std::path::Path;

fn check_text(yaml: &str) -> (bool, String, String) {
    let path = temp_dir().join("edgegate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let result = check(&path);
    (
        result.0,
        result.1,
        result.2.replace(&format!("{}", path.display()), "FILE"),
    )
}

const VALID: &str = "\
listeners:
  - { name: http, address: 127.0.0.1:8080 }
upstreams:
  users:
    targets:
      - { address: 127.0.0.1:9001, weight: 3 }
routes:
  - name: users
    match: { path_prefix: /users }
    upstream: users
";

#[test]
fn every_shipped_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let entries = ["conf", "benches"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let output = std::process::Command::new(crate::support::binary())
                .args(["check", "-c"])
                .arg(&path)
                .env(
                    "EDGEGATE_BENCH_JWT_SECRET",
                    "a-secret-for-the-benchmark-config-0123456789",
                )
                .output()
                .unwrap();
            let (ok, stdout, stderr) = (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
            assert!(ok, "{} failed: {stderr}", path.display());
            assert!(stdout.contains("routes (first match wins):"), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected conf/edgegate.yaml and benches/proxybench.yaml"
    );
}

#[test]
fn check_prints_a_summary() {
    let (ok, stdout, _) = check_text(VALID);
    assert!(ok);
    assert!(stdout.contains("http://127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9001 weight 3"), "{stdout}");
    assert!(
        stdout.contains("users") && stdout.contains("path /users/*"),
        "{stdout}"
    );
}

#[test]
fn the_summary_names_canary_stickiness_cors_and_compression() {
    let yaml = format!(
        "{VALID}  - name: canary\n    match: {{ path_prefix: /canary }}\n\
         \x20   split: {{ sticky: \"cookie:session\", force: {{ header: X-Canary }}, arms: [{{ upstream: users, weight: 1 }}] }}\n\
         \x20   cors: {{ allow_origins: [\"*\"] }}\n    compression: {{ algorithms: [br, gzip], level: {{ br: 5 }} }}\n"
    );
    let (ok, stdout, stderr) = check_text(&yaml);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "path /canary/* -> users:1 sticky by cookie:session, forced by header x-canary [cors, compressed br-5/gzip-6]"
        ),
        "{stdout}"
    );
}

#[test]
fn the_summary_names_an_aggregation_routes_parts() {
    let yaml = format!(
        "{VALID}  - name: dash\n    match: {{ path_template: \"/u/{{id}}/dash\" }}\n\
         \x20   aggregate: {{ timeout: 750ms, parts: {{ me: {{ upstream: users, path: \"/u/{{path.id}}\", required: true }}, feed: {{ upstream: users, path: /feed }} }} }}\n"
    );
    let (ok, stdout, stderr) = check_text(&yaml);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("path = /u/{id}/dash -> aggregate me!=users + feed=users within 750ms"),
        "{stdout}"
    );
}

#[test]
fn unknown_keys_are_reported_with_their_position() {
    let yaml = VALID.replace(
        "    match: { path_prefix: /users }",
        "    match: { path_prefx: /users }",
    );
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    assert!(stderr.starts_with("FILE:9:"), "{stderr}");
    assert!(stderr.contains("unknown field `path_prefx`"), "{stderr}");
}

#[test]
fn a_route_to_a_missing_upstream_names_line_column_and_key() {
    let yaml = VALID.replace("    upstream: users", "    upstream: orders");
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    assert!(
        stderr
            .contains("FILE:10:5: routes[0].upstream: no upstream named `orders` (defined: users)"),
        "{stderr}"
    );
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let yaml = VALID
        .replace(
            "127.0.0.1:9001, weight: 3",
            "127.0.0.1:9001, weight: 3 }\n      - { address: nowhere",
        )
        .replace("path_prefix: /users", "path_prefix: users")
        + "    ip_deny: [300.1.1.1/8]\n    timeout: 5 seconds\n";
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    for expected in [
        "FILE:7:11: upstreams.users.targets[1].address: `nowhere` is not an address",
        "FILE:10:14: routes[0].match.path_prefix: `users` must start with /",
        "FILE:12:15: routes[0].ip_deny[0]: `300.1.1.1/8` is not a CIDR",
        "FILE:13:5: routes[0].timeout: duration `5 seconds`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn a_misspelt_key_is_rejected_not_ignored() {
    let yaml = format!("{VALID}cache: {{ purge_chanel: \"edgegate:purge\" }}\n");
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    assert!(
        stderr.contains("FILE:11:10: cache: unknown field `purge_chanel`, expected one of"),
        "{stderr}"
    );
}

#[test]
fn cache_settings_are_validated() {
    let yaml = format!(
        "{VALID}    cache: {{ ttl: soon, vary: [\"bad header\"], methods: [GET, POST] }}\n\
         cache: {{ max_size: 1MiB, max_object_size: 2MiB, lock_timeout: 0 }}\n"
    );
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    for expected in [
        "routes[0].cache.ttl: duration `soon`",
        "routes[0].cache.vary[0]: `bad header` is not a valid HTTP header name",
        "routes[0].cache.methods[1]: `POST` responses cannot be cached",
        "cache.max_object_size: 2097152 bytes is larger than cache.max_size",
        "cache.lock_timeout: must be greater than zero",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let good = format!("{VALID}    cache: {{ ttl: 30s, vary: [Accept] }}\n");
    let (ok, stdout, stderr) = check_text(&good);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("cache"), "{stdout}");
}

#[test]
fn edge_security_settings_are_validated_and_summarized() {
    let yaml = VALID
        .replace(
            "  - { name: http, address: 127.0.0.1:8080 }",
            "  - { name: http, address: 127.0.0.1:8080, max_connections: 0 }\n\
             \x20 - { name: two, address: 127.0.0.1:8081, max_connections: 5, max_connections_per_ip: 6 }",
        )
        .replace(
            "listeners:",
            "server:\n  header_read_timeout: 0s\n  body_read_timeout: soon\n  \
             merge_slashes: yes-please\n  path_encoded_slashes: decode\nlisteners:",
        );
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    assert!(
        stderr.contains("FILE:4:18: server.merge_slashes: invalid type: string \"yes-please\", expected a boolean"),
        "{stderr}"
    );
    let yaml = yaml.replace("merge_slashes: yes-please", "merge_slashes: false");
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    for expected in [
        "FILE:2:3: server.header_read_timeout: must be greater than zero",
        "FILE:3:3: server.body_read_timeout: duration `soon`",
        "FILE:5:3: server.path_encoded_slashes: `decode` is not one of: reject, keep",
        "FILE:7:44: listeners[0].max_connections: must be at least 1 (omit it for no limit)",
        "listeners[1].max_connections_per_ip: 6 is more than the listener's max_connections (5)",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let good = VALID.replace(
        "  - { name: http, address: 127.0.0.1:8080 }",
        "  - { name: http, address: 127.0.0.1:8080, max_connections: 100, max_connections_per_ip: 10 }",
    );
    let good = format!("server:\n  header_read_timeout: 3s\n  path_encoded_slashes: keep\n  merge_slashes: false\n{good}");
    let (ok, stdout, stderr) = check_text(&good);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("http://127.0.0.1:8080 (connections: 100, per client address: 10)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "requests: head within 3s, body reads 30s apart; slashes kept, %2F/%5C kept encoded"
        ),
        "{stdout}"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let (ok, _, stderr) = check_text("listeners: [\n  - {name: x\n");
    assert!(!ok);
    assert!(stderr.starts_with("FILE:"), "{stderr}");
    let position: Vec<&str> = stderr.splitn(4, ':').collect();
    assert!(
        position[1].parse::<usize>().is_ok() && position[2].parse::<usize>().is_ok(),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (ok, _, stderr) = check(Path::new("/nonexistent/edgegate.yaml"));
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/edgegate.yaml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn version_and_help_work() {
    let output = std::process::Command::new(crate::support::binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("edgegate "));
    let output = std::process::Command::new(crate::support::binary())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("run") && help.contains("check") && help.contains("hash-key"),
        "{help}"
    );
}

#[test]
fn hash_key_prints_sha256_hex() {
    let output = std::process::Command::new(crate::support::binary())
        .args(["hash-key", "foo"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    );
}

#[test]
fn outlier_detection_and_retry_conditions_are_validated() {
    let yaml = VALID.replace(
        "      - { address: 127.0.0.1:9001, weight: 3 }\n",
        "      - { address: 127.0.0.1:9001, weight: 3 }\n    outlier_detection: { base_ejection_time: 1m, max_ejection_time: 10s, max_ejection_percent: 150 }\n",
    ) + "    retries: { attempts: 9, on: [connect_failure, teapot] }\n";
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    for expected in [
        "FILE:7:50: upstreams.users.outlier_detection.max_ejection_time: must not be shorter than base_ejection_time",
        "upstreams.users.outlier_detection.max_ejection_percent: must be between 0 and 100",
        "routes[0].retries.attempts: must be at most 5",
        "routes[0].retries.on[1]: `teapot` is not one of: connect_failure, gateway_error, 5xx, reset",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    let (ok, stdout, _) = check_text(&VALID.replace(
        "      - { address: 127.0.0.1:9001, weight: 3 }\n",
        "      - { address: 127.0.0.1:9001, weight: 3 }\n    outlier_detection: {}\n",
    ));
    assert!(ok);
    assert!(stdout.contains("outlier detection"), "{stdout}");
}

#[test]
fn a_route_may_list_at_most_64_rate_limit_policies() {
    let names: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    let policies: String = names
        .iter()
        .map(|name| {
            format!(
                "    {name}: {{ algorithm: fixed_window, key: global, limit: 10, window: 1m }}\n"
            )
        })
        .collect();
    let yaml = format!(
        "{VALID}    rate_limits: [{}]\nrate_limits:\n  policies:\n{policies}",
        names.join(", ")
    );
    let (ok, _, stderr) = check_text(&yaml);
    assert!(!ok);
    assert!(
        stderr.contains("routes[0].rate_limits: 65 policies listed; a route may list at most 64"),
        "{stderr}"
    );
    let yaml = format!(
        "{VALID}    rate_limits: [{}]\nrate_limits:\n  policies:\n{policies}",
        names[..64].join(", ")
    );
    let (ok, _, stderr) = check_text(&yaml);
    assert!(ok, "{stderr}");
}
