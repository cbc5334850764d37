//! `server`, `admin` and `access_log`.

use super::*;
use crate::config::{AccessLogSpec, EncodedSlashes, PathRules, ServerSettings};
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn server_defaults() {
    let model = model("");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        model.server,
        ServerSettings {
            threads,
            pid_file: "/tmp/edgegate.pid".into(),
            upgrade_sock: "/tmp/edgegate-upgrade.sock".into(),
            grace_period: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(60),
            max_request_header_size: 64 << 10,
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            paths: PathRules {
                merge_slashes: true,
                encoded_slashes: EncodedSlashes::Reject,
            },
        }
    );
    assert_eq!(
        model.admin_address,
        SocketAddr::from(([127, 0, 0, 1], 9901))
    );
    assert_eq!(model.access_log, AccessLogSpec::Stdout);
}

#[test]
fn server_values_are_read() {
    let model = model(
        "server:\n  threads: 3\n  grace_period: 2m\n  max_request_header_size: 8KiB\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7]\n  merge_slashes: false\n  path_encoded_slashes: keep\n",
    );
    assert_eq!(model.server.threads, 3);
    assert_eq!(model.server.grace_period, Duration::from_secs(120));
    assert_eq!(model.server.max_request_header_size, 8192);
    let proxies: Vec<String> = model
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert_eq!(
        model.server.paths,
        PathRules {
            merge_slashes: false,
            encoded_slashes: EncodedSlashes::Keep,
        }
    );
}

#[test]
fn server_problems() {
    expect_problems(&[
        ("server:\n  threads: 0\n", &["2:3 server.threads: must be between 1 and 1024"]),
        ("server:\n  threads: 2000\n", &["2:3 server.threads: must be between 1 and 1024"]),
        ("server:\n  max_request_header_size: 512\n", &["2:3 server.max_request_header_size: must be between 1KiB and 1048575 bytes (Pingora's own limit)"]),
        ("server:\n  max_request_header_size: 2MiB\n", &["2:3 server.max_request_header_size: must be between 1KiB and 1048575 bytes (Pingora's own limit)"]),
        ("server:\n  max_request_header_size: lots\n", &["2:3 server.max_request_header_size: size `lots` must start with a whole number"]),
        ("server:\n  grace_period: 10\n", &["2:3 server.grace_period: duration `10` has no unit (use ms, s, m, h or d)"]),
        ("server:\n  shutdown_timeout: -1s\n", &["2:3 server.shutdown_timeout: duration `-1s` must start with a whole number"]),
        ("server:\n  keepalive_timeout: 5x\n", &["2:3 server.keepalive_timeout: duration `5x` has unknown unit `x` (use ms, s, m, h or d)"]),
        ("server:\n  header_read_timeout: 0\n", &["2:3 server.header_read_timeout: must be greater than zero"]),
        ("server:\n  body_read_timeout: 0s\n", &["2:3 server.body_read_timeout: must be greater than zero"]),
        ("server:\n  trusted_proxies: [10.0.0.0/8, nonsense, 10.0.0.0/33]\n", &["2:33 server.trusted_proxies[1]: `nonsense` is not a CIDR (like 10.0.0.0/8) or an IP address", "2:43 server.trusted_proxies[2]: `10.0.0.0/33` is not a CIDR (like 10.0.0.0/8) or an IP address"]),
        ("server:\n  path_encoded_slashes: decode\n", &["2:3 server.path_encoded_slashes: `decode` is not one of: reject, keep"]),
    ]);
}

#[test]
fn admin_and_access_log() {
    let model =
        model("admin:\n  address: 127.0.0.1:9999\naccess_log:\n  path: /var/log/edgegate.log\n");
    assert_eq!(
        model.admin_address,
        SocketAddr::from(([127, 0, 0, 1], 9999))
    );
    assert_eq!(
        model.access_log,
        AccessLogSpec::File("/var/log/edgegate.log".into())
    );
    assert_eq!(
        model_access_log("access_log:\n  format: off\n"),
        AccessLogSpec::Off
    );
    assert_eq!(
        model_access_log("access_log:\n  path: stdout\n"),
        AccessLogSpec::Stdout
    );
    expect_problems(&[
        ("admin:\n  address: nowhere\n", &["2:3 admin.address: `nowhere` is not an address like 127.0.0.1:8080 or a resolvable host:port"]),
        ("admin:\n  address: 127.0.0.1:18080\n", &["2:3 admin.address: 127.0.0.1:18080 is also a proxy listener"]),
        ("access_log:\n  format: xml\n", &["2:3 access_log.format: `xml` is not one of: json, off"]),
        ("access_log:\n  path: \"\"\n", &["2:3 access_log.path: must be `stdout` or a file path"]),
    ]);
}

fn model_access_log(sections: &str) -> AccessLogSpec {
    model(sections).access_log
}
