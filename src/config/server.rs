//! Validation of `server`, `admin` and `access_log`.

use super::check::Checker;
use super::model::*;
use super::raw::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Pingora refuses request heads above this many bytes whatever we configure.
const PINGORA_MAX_HEADER_BYTES: u64 = 1_048_575;

const DEFAULT_ADMIN_ADDRESS: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);

/// Validates the `server` section.
pub(super) fn server_settings(check: &mut Checker, raw: RawServer) -> ServerSettings {
    let RawServer {
        threads,
        pid_file,
        upgrade_sock,
        grace_period,
        shutdown_timeout,
        keepalive_timeout,
        max_request_header_size,
        trusted_proxies,
        header_read_timeout,
        body_read_timeout,
        merge_slashes,
        path_encoded_slashes,
    } = raw;
    let encoded_slashes = check
        .choice(
            "server.path_encoded_slashes".into(),
            path_encoded_slashes.as_deref(),
            EncodedSlashes::Reject,
            &[
                ("reject", EncodedSlashes::Reject),
                ("keep", EncodedSlashes::Keep),
            ],
        )
        .unwrap_or(EncodedSlashes::Reject);
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 1024 {
        check.fail("server.threads", "must be between 1 and 1024");
    }
    ServerSettings {
        threads,
        pid_file: pid_file.unwrap_or_else(|| "/tmp/edgegate.pid".into()),
        upgrade_sock: upgrade_sock.unwrap_or_else(|| "/tmp/edgegate-upgrade.sock".into()),
        grace_period: check.duration(
            "server.grace_period".into(),
            grace_period.as_deref(),
            Duration::from_secs(10),
        ),
        shutdown_timeout: check.duration(
            "server.shutdown_timeout".into(),
            shutdown_timeout.as_deref(),
            Duration::from_secs(5),
        ),
        keepalive_timeout: check.duration(
            "server.keepalive_timeout".into(),
            keepalive_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        max_request_header_size: max_header_size(check, max_request_header_size.as_deref()),
        trusted_proxies: check.cidrs("server.trusted_proxies", &trusted_proxies),
        header_read_timeout: check.positive_duration(
            "server.header_read_timeout".into(),
            header_read_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        body_read_timeout: check.positive_duration(
            "server.body_read_timeout".into(),
            body_read_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        paths: PathRules {
            merge_slashes: merge_slashes.unwrap_or(true),
            encoded_slashes,
        },
    }
}

fn max_header_size(check: &mut Checker, raw: Option<&str>) -> usize {
    let key = "server.max_request_header_size";
    let size = check.size(key.into(), raw, 64 << 10);
    if !(1024..=PINGORA_MAX_HEADER_BYTES).contains(&size) {
        check.fail(
            key,
            format!(
                "must be between 1KiB and {PINGORA_MAX_HEADER_BYTES} bytes (Pingora's own limit)"
            ),
        );
    }
    size as usize
}

/// Validates `admin`: its address must not be a proxy listener's.
pub(super) fn admin_address(
    check: &mut Checker,
    raw: Option<RawAdmin>,
    listeners: &[ListenerSpec],
) -> SocketAddr {
    let address = raw
        .and_then(|RawAdmin { address }| check.socket_addr("admin.address".into(), &address))
        .unwrap_or_else(|| SocketAddr::from(DEFAULT_ADMIN_ADDRESS));
    if listeners.iter().any(|l| l.address == address) {
        check.fail(
            "admin.address",
            format!("{address} is also a proxy listener"),
        );
    }
    address
}

/// Validates `access_log` (JSON lines to stdout by default).
pub(super) fn access_log_spec(check: &mut Checker, raw: Option<RawAccessLog>) -> AccessLogSpec {
    let Some(RawAccessLog { format, path }) = raw else {
        return AccessLogSpec::Stdout;
    };
    let json = check.choice(
        "access_log.format".into(),
        format.as_deref(),
        true,
        &[("json", true), ("off", false)],
    );
    match (json, path.as_deref()) {
        (Some(false) | None, _) => AccessLogSpec::Off,
        (Some(true), None | Some("stdout")) => AccessLogSpec::Stdout,
        (Some(true), Some("")) => {
            check.fail("access_log.path", "must be `stdout` or a file path");
            AccessLogSpec::Off
        }
        (Some(true), Some(file)) => AccessLogSpec::File(file.into()),
    }
}
