//! `listeners`, with and without TLS.

use super::*;
use crate::config::{ClientAuth, ListenerSpec, TlsVersion};
use std::net::SocketAddr;

#[test]
fn listener_defaults() {
    let model = model("");
    assert_eq!(
        model.listeners,
        [ListenerSpec {
            name: "main".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 18080)),
            tls: None,
            h2c: false,
            max_connections: None,
            max_connections_per_ip: None,
        }]
    );
}

#[test]
fn listener_problems() {
    expect_problems(&[
        ("listeners: []\n", &["1:1 listeners: at least one listener is needed"]),
        ("listeners:\n  - { name: a, address: 127.0.0.1:1, max_connections: 0, max_connections_per_ip: 0 }\n", &["2:38 listeners[0].max_connections: must be at least 1 (omit it for no limit)", "2:58 listeners[0].max_connections_per_ip: must be at least 1 (omit it for no limit)"]),
        ("listeners:\n  - { name: a, address: 127.0.0.1:1, max_connections: 10, max_connections_per_ip: 11 }\n", &["2:59 listeners[0].max_connections_per_ip: 11 is more than the listener's max_connections (10)"]),
        ("listeners:\n  - { name: a, address: 127.0.0.1:1 }\n  - { name: a, address: \"127.0.0.1:1\" }\n", &["3:7 listeners[1].name: listener name `a` is used twice", "3:16 listeners[1].address: 127.0.0.1:1 is listed twice"]),
        ("listeners:\n  - { name: a, address: \"no-such-host.invalid:80\" }\n", &["2:16 listeners[0].address: `no-such-host.invalid:80` is not an address like 127.0.0.1:8080 or a resolvable host:port"]),
        ("listeners:\n  - { name: a, address: 127.0.0.1 }\n", &["2:16 listeners[0].address: `127.0.0.1` is not an address like 127.0.0.1:8080 or a resolvable host:port"]),
        ("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls: { certificates: [] }\n", &["4:12 listeners[0].tls.certificates: at least one certificate is needed"]),
        ("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls:\n      certificates: [{ cert: /nonexistent/a.crt, key: /nonexistent/a.key }]\n", &["5:24 listeners[0].tls.certificates[0].cert: cannot read /nonexistent/a.crt: No such file or directory (os error 2)"]),
    ]);
}

#[test]
fn tls_listeners() {
    let files = Files::new("listeners");
    let (cert, key) = files.certificate("site", &["example.test", "*.example.test"]);
    let (_, other_key) = files.certificate("other", &["other.test"]);
    let ca = files.write("ca.pem", std::fs::read(&cert).unwrap());
    let garbage = files.write("garbage.pem", "not a certificate\n");
    let listener = |tls: &str| {
        format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls:\n      certificates: [{{ cert: {cert}, key: {key} }}]\n{tls}")
    };

    let model = model(&listener(""));
    let tls = model.listeners[0].tls.as_ref().unwrap();
    assert!(tls.http2);
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(tls.client_auth, ClientAuth::Off);
    assert_eq!(tls.certificates[0].server_names, None);
    let model = super::model(&listener(&format!(
        "      min_version: 1.3\n      http2: false\n      client_ca: {ca}\n"
    )));
    let tls = model.listeners[0].tls.as_ref().unwrap();
    assert_eq!(
        (tls.min_version, tls.http2, tls.client_auth),
        (TlsVersion::Tls13, false, ClientAuth::Required)
    );
    let model = super::model(&listener(&format!(
        "      client_ca: {ca}\n      client_auth: optional\n"
    )));
    assert_eq!(
        model.listeners[0].tls.as_ref().unwrap().client_auth,
        ClientAuth::Optional
    );

    let cases = [
        listener("      min_version: \"1.1\"\n"),
        listener("      client_auth: required\n"),
        listener(&format!("      client_ca: {ca}\n      client_auth: sometimes\n")),
        listener(&format!("      client_ca: {garbage}\n")),
        listener("    h2c: true\n"),
        format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls:\n      certificates:\n        - {{ server_names: [\"bad name\", \"*.ok.test\"], cert: {cert}, key: {key} }}\n"),
        format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls:\n      certificates:\n        - cert: {cert}\n          key: {other_key}\n"),
        format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls:\n      certificates:\n        - cert: {cert}\n          key: {garbage}\n"),
    ];
    let found: Vec<Vec<String>> = cases
        .iter()
        .map(|case| {
            problems(case)
                .into_iter()
                .map(|p| {
                    without_library_detail(&p.replace(&files.dir.display().to_string(), "DIR"))
                })
                .collect()
        })
        .collect();
    let expected: [&[&str]; 8] = [
        &["6:7 listeners[0].tls.min_version: `1.1` is not \"1.2\" or \"1.3\" (TLS 1.0 and 1.1 are never accepted)"],
        &["6:7 listeners[0].tls.client_auth: needs client_ca (the CA bundle client certificates are verified against)"],
        &["7:7 listeners[0].tls.client_auth: `sometimes` is not `required` or `optional`"],
        &["6:7 listeners[0].tls.client_ca: DIR/garbage.pem: holds no PEM certificate"],
        &["6:5 listeners[0].h2c: h2c is HTTP/2 without TLS; a TLS listener offers h2 by ALPN (tls.http2)"],
        &["6:28 listeners[0].tls.certificates[0].server_names[0]: `bad name` is not a host name (a leading `*.` is allowed)"],
        &["7:11 listeners[0].tls.certificates[0].key: DIR/other.key: this key does not belong to the certificate in DIR/site.crt"],
        &["7:11 listeners[0].tls.certificates[0].key: DIR/garbage.pem: not a PEM private key"],
    ];
    assert_eq!(found, expected);
}

/// OpenSSL's own reason (version-specific) after our message.
fn without_library_detail(problem: &str) -> String {
    match problem.find("not a PEM private key:") {
        Some(at) => problem[..at + "not a PEM private key".len()].to_string(),
        None => problem.to_string(),
    }
}
