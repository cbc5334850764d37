//! TLS to Redis: a real `redis-server` listening only on its TLS port with a certificate from a
//! CA made in the test. Gateways that trust the CA (`ca_file`) share a limit and follow the
//! purge channel through it; one that trusts only the system's roots cannot verify the server
//! and applies `on_error`.

use crate::support::ca::Ca;
use crate::support::redis::RedisServer;
use crate::support::{free_port, temp_dir, Gateway, Origin};

fn gateway(origin: &Origin, port: u16, ca_file: Option<&std::path::Path>) -> Gateway {
    let ca = ca_file.map_or(String::new(), |path| {
        format!(", ca_file: \"{}\"", path.display())
    });
    Gateway::start(&format!(
        "rate_limits:\n  store: redis\n  redis: {{ url: \"rediss://127.0.0.1:{port}/0\"{ca}, timeout: 2s, on_error: deny }}\n\
         \x20 policies:\n    shared: {{ algorithm: fixed_window, key: global, limit: 4, window: 1h }}\n\
         cache: {{ purge_channel: \"edgegate:purge\" }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: api, upstream: app, rate_limits: [shared] }}\n",
        origin.addr
    ))
}

#[test]
fn gateways_trusting_the_ca_share_a_limit_over_tls_and_others_cannot_connect() {
    let dir = temp_dir();
    let ca = Ca::new("Redis test CA");
    let ca_file = ca.write(&dir, "redis-ca");
    let server = ca.server(&["127.0.0.1"]);
    server.write(&dir, "redis");
    let port = free_port();
    let (cert, key) = (dir.join("redis.pem"), dir.join("redis.key"));
    let redis = RedisServer::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca_file.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    )
    .expect("redis-server with TLS (Debian's is built with it)");
    let origin = Origin::start("app");
    let (a, b) = (
        gateway(&origin, redis.port, Some(&ca_file)),
        gateway(&origin, redis.port, Some(&ca_file)),
    );
    let statuses: Vec<u16> = (0..6)
        .map(|i| if i % 2 == 0 { a.get("/") } else { b.get("/") }.status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "one limit over TLS: {}",
        a.stderr()
    );
    for gw in [&a, &b] {
        gw.wait_metric("edgegate_cache_purge_channel_up", 1.0);
    }

    let untrusting = gateway(&origin, redis.port, None);
    let refused = untrusting.get("/");
    assert_eq!(
        refused.status, 503,
        "the server's certificate is not verified: on_error"
    );
    assert!(
        untrusting.stderr().contains("Redis unavailable"),
        "{}",
        untrusting.stderr()
    );
}
