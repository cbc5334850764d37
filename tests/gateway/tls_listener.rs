//! TLS from clients: SNI, versions, ALPN, resumption, client certificates, certificate rotation,
//! `check` on certificates (HTTP/2 from clients is in `client_h2.rs`). The certificates come from
//! a test CA made with the openssl crate; the clients are OpenSSL (the crate, and the
//! `openssl s_client` CLI).

use crate::support::ca::{Ca, Issued};
use crate::support::{free_port, read_response, temp_dir, wait_until, Gateway, Origin, Response};
use openssl::hash::MessageDigest;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A gateway with one TLS listener (`tls_yaml` is the body of its `tls:` mapping) routing
/// everything to `origin`; `sections` (YAML, e.g. routes) replaces the catch-all route when
/// given; `server_extra` adds `server:` keys.
pub(crate) fn tls_gateway(
    origin: &Origin,
    tls_yaml: &str,
    sections: Option<&str>,
    server_extra: &str,
) -> Gateway {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sections = sections.map_or_else(
        || "routes:\n  - { name: all, upstream: app }\n".to_string(),
        str::to_string,
    );
    Gateway::start_with_listener_and_server(
        &format!(
            "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n{sections}",
            origin.addr
        ),
        server_extra,
        address,
        &format!("tls: {{ {tls_yaml} }}"),
    )
}

/// A client trusting `ca`, with optional tweaks to its settings.
pub(crate) fn connector(
    ca: &Ca,
    tweak: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder),
) -> SslConnector {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder.cert_store_mut().add_cert(ca.cert.clone()).unwrap();
    tweak(&mut builder);
    builder.build()
}

/// A TLS connection to `addr` sending `sni` (none when `None`).
pub(crate) fn connect(
    connector: &SslConnector,
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<SslStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut config = connector.configure().unwrap();
    if sni.is_none() {
        config.set_use_server_name_indication(false);
        config.set_verify_hostname(false);
    }
    config
        .connect(sni.unwrap_or("unnamed"), tcp)
        .map_err(|e| e.to_string())
}

/// The DNS names of the certificate the server presented.
fn served_names(stream: &SslStream<TcpStream>) -> Vec<String> {
    let cert = stream.ssl().peer_certificate().unwrap();
    cert.subject_alt_names()
        .unwrap()
        .iter()
        .filter_map(|n| n.dnsname().map(str::to_string))
        .collect()
}

/// One HTTP/1.1 request over an open TLS connection (kept alive).
fn exchange(
    stream: &mut SslStream<TcpStream>,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    read_response(&mut BufReader::new(stream), false)
}

/// What most tests start from: a test CA, one certificate for `api.test` written in a fresh
/// directory (returned as the YAML that lists it), and an origin.
pub(crate) fn setup() -> (PathBuf, Ca, String, Origin) {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let cert = ca.server(&["api.test"]).write(&dir, "api");
    (dir, ca, cert, Origin::start("app"))
}

fn failures(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "edgegate_tls_handshake_failures_total{{listener=\"capped\",reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

fn wait_failure(gw: &Gateway, reason: &str) {
    let seen = wait_until(Duration::from_secs(10), || failures(gw, reason) >= 1.0);
    assert!(
        seen,
        "no `{reason}` handshake failure counted:\n{}",
        gw.metrics()
    );
}

#[test]
fn sni_picks_the_certificate_and_clients_without_a_known_name_get_the_first() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let default = ca.server(&["default.test"]).write(&dir, "default");
    let exact = ca.server(&["api.example.com"]).write(&dir, "api");
    let wildcard = ca.server(&["*.example.com"]).write(&dir, "wildcard");
    let named = ca.server(&["elsewhere.test"]);
    let named = named.write(&dir, "named");
    let origin = Origin::start("app");
    let gw = tls_gateway(
        &origin,
        &format!(
            "certificates: [{default}, {wildcard}, {exact}, {}]",
            named.replace(
                " }",
                ", server_names: [\"*.named.test\", \"elsewhere.test\"] }"
            )
        ),
        None,
        "",
    );
    // Only which certificate is served matters here: names it does not cover are not verified.
    let relaxed = connector(&ca, |b| b.set_verify(SslVerifyMode::NONE));
    for (sni, expected) in [
        (Some("api.example.com"), "api.example.com"),
        (Some("WWW.Example.com"), "*.example.com"),
        (Some("x.named.test"), "elsewhere.test"),
        (Some("a.b.example.com"), "default.test"),
        (Some("unknown.test"), "default.test"),
        (None, "default.test"),
    ] {
        let stream = connect(&relaxed, gw.proxy, sni).unwrap();
        assert_eq!(served_names(&stream), [expected], "SNI {sni:?}");
    }

    let client = connector(&ca, |_| {});
    let mut stream = connect(&client, gw.proxy, Some("api.example.com")).unwrap();
    let origin_date = "Sun, 06 Nov 1994 08:49:37 GMT";
    origin.set(|b| b.headers = vec![("Date".into(), origin_date.into())]);
    let response = exchange(&mut stream, "api.example.com", "/over-tls", &[]).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("date"),
        Some(origin_date),
        "the origin's Date over TLS too"
    );
    let seen = response.json();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    let log = gw.access_log(1);
    let line = log.last().unwrap();
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert!(
        line["tls"].as_str().unwrap().starts_with("TLSv1."),
        "{line}"
    );
}

#[test]
fn old_protocol_versions_are_refused_and_counted_and_min_version_is_honoured() {
    let (_, ca, cert, origin) = setup();
    let gw = tls_gateway(&origin, &format!("certificates: [{cert}]"), None, "");
    let tls11 = connector(&ca, |b| {
        // The client's own policy must not be what refuses TLS 1.1.
        b.set_cipher_list("DEFAULT@SECLEVEL=0").unwrap();
        b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
        b.set_max_proto_version(Some(SslVersion::TLS1_1)).unwrap();
    });
    assert!(connect(&tls11, gw.proxy, Some("api.test")).is_err());
    wait_failure(&gw, "protocol_version");
    let tls12 = connector(&ca, |b| {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    });
    let stream = connect(&tls12, gw.proxy, Some("api.test")).unwrap();
    assert_eq!(stream.ssl().version_str(), "TLSv1.2");
    let modern = connect(&connector(&ca, |_| {}), gw.proxy, Some("api.test")).unwrap();
    assert_eq!(modern.ssl().version_str(), "TLSv1.3");

    let strict = tls_gateway(
        &origin,
        &format!("certificates: [{cert}], min_version: 1.3"),
        None,
        "",
    );
    assert!(connect(&tls12, strict.proxy, Some("api.test")).is_err());
    wait_failure(&strict, "protocol_version");

    // Plain HTTP on the TLS port is not TLS.
    let mut plain = TcpStream::connect(gw.proxy).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .unwrap();
    wait_failure(&gw, "not_tls");
}

#[test]
fn only_aead_suites_with_forward_secrecy_are_offered() {
    let (_, ca, cert, origin) = setup();
    let gw = tls_gateway(&origin, &format!("certificates: [{cert}]"), None, "");
    let tls12 = |suites: &'static str| {
        connector(&ca, move |b| {
            b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
            b.set_cipher_list(suites).unwrap();
        })
    };
    // CBC, and RSA key exchange without forward secrecy: refused.
    let cbc = tls12("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-GCM-SHA256");
    assert!(connect(&cbc, gw.proxy, Some("api.test")).is_err());
    wait_failure(&gw, "no_shared_cipher");
    for suite in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ] {
        let stream = connect(&tls12(suite), gw.proxy, Some("api.test")).unwrap();
        assert_eq!(stream.ssl().current_cipher().unwrap().name(), suite);
    }
    // TLS 1.3: AES-CCM is not among ours.
    let ccm = connector(&ca, |b| {
        b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
        b.set_ciphersuites("TLS_AES_128_CCM_SHA256").unwrap();
    });
    let before = failures(&gw, "no_shared_cipher");
    assert!(connect(&ccm, gw.proxy, Some("api.test")).is_err());
    assert!(
        wait_until(Duration::from_secs(10), || failures(
            &gw,
            "no_shared_cipher"
        ) > before),
        "{}",
        gw.metrics()
    );
}

#[test]
fn alpn_offers_h2_then_http11_and_h2_can_be_switched_off() {
    let (_, ca, cert, origin) = setup();
    let both = tls_gateway(&origin, &format!("certificates: [{cert}]"), None, "");
    let h1_only = tls_gateway(
        &origin,
        &format!("certificates: [{cert}], http2: false"),
        None,
        "",
    );
    let offering =
        |protocols: &'static [u8]| connector(&ca, move |b| b.set_alpn_protos(protocols).unwrap());
    let h2_h1 = offering(b"\x02h2\x08http/1.1");
    let h1 = offering(b"\x08http/1.1");
    let alpn = |gw: &Gateway, client: &SslConnector| {
        let stream = connect(client, gw.proxy, Some("api.test")).unwrap();
        stream
            .ssl()
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    };
    assert_eq!(alpn(&both, &h2_h1).as_deref(), Some("h2"));
    assert_eq!(alpn(&both, &h1).as_deref(), Some("http/1.1"));
    assert_eq!(alpn(&h1_only, &h2_h1).as_deref(), Some("http/1.1"));

    // A client offering only what the listener does not speak is refused (RFC 7301)...
    let h2_only = offering(b"\x02h2");
    assert!(connect(&h2_only, h1_only.proxy, Some("api.test")).is_err());
    wait_failure(&h1_only, "no_application_protocol");
    // ...and one offering no ALPN at all is served HTTP/1.1.
    let mut silent = connect(&connector(&ca, |_| {}), h1_only.proxy, Some("api.test")).unwrap();
    assert_eq!(silent.ssl().selected_alpn_protocol(), None);
    let response = exchange(&mut silent, "api.test", "/", &[]).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

/// `openssl s_client` saving or reusing a session; its report of the handshake.
fn s_client(addr: SocketAddr, ca: &Path, session: &Path, save: bool, extra: &[&str]) -> String {
    let mut command = std::process::Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "api.test",
        ])
        .arg("-CAfile")
        .arg(ca)
        .arg(if save { "-sess_out" } else { "-sess_in" })
        .arg(session)
        .args(["-ign_eof"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .expect("the `openssl` command (scripts/install-deps.sh test installs it)");
    // A request lets TLS 1.3 session tickets arrive before the connection closes.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn sessions_resume_over_tls_13_and_tls_12() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let ca_file = ca.write(&dir, "ca");
    let cert = ca.server(&["api.test"]).write(&dir, "api");
    let origin = Origin::start("app");
    let gw = tls_gateway(&origin, &format!("certificates: [{cert}]"), None, "");
    for (version, flag) in [("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")] {
        let session = dir.join(format!("{version}.session"));
        let first = s_client(gw.proxy, &ca_file, &session, true, &[flag]);
        assert!(first.contains(&format!("New, {version}")), "{first}");
        assert!(first.contains("HTTP/1.1 200"), "{first}");
        let second = s_client(gw.proxy, &ca_file, &session, false, &[flag]);
        assert!(second.contains(&format!("Reused, {version}")), "{second}");
    }
    let resumed = gw
        .metric("edgegate_tls_handshakes_total{listener=\"capped\",resumed=\"true\"}")
        .unwrap_or(0.0);
    assert!(resumed >= 2.0, "{}", gw.metrics());
}

#[test]
fn a_resumed_session_keeps_the_client_certificate_it_was_made_with() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let ca_file = ca.write(&dir, "ca");
    let clients = Ca::new("Clients CA");
    let clients_file = clients.write(&dir, "clients");
    let cert = ca.server(&["api.test"]).write(&dir, "api");
    clients
        .issue(&[("CN", "alice")], &["alice.example"], &[], 30)
        .write(&dir, "alice");
    let (alice_cert, alice_key) = (dir.join("alice.pem"), dir.join("alice.key"));
    let origin = Origin::start("app");
    let gw = tls_gateway(
        &origin,
        &format!(
            "certificates: [{cert}], client_ca: \"{}\", client_auth: required",
            clients_file.display()
        ),
        None,
        "",
    );
    let identity = [
        "-cert",
        alice_cert.to_str().unwrap(),
        "-key",
        alice_key.to_str().unwrap(),
    ];
    for (version, flag) in [("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")] {
        let session = dir.join(format!("{version}.session"));
        let args = [&identity[..], &[flag]].concat();
        let first = s_client(gw.proxy, &ca_file, &session, true, &args);
        assert!(first.contains(&format!("New, {version}")), "{first}");
        assert!(
            first.contains(r#""x-client-cert-subject":"CN=alice""#),
            "{first}"
        );
        // The resumed connection presents no certificate: the identity comes from the session.
        let second = s_client(gw.proxy, &ca_file, &session, false, &[flag]);
        assert!(second.contains(&format!("Reused, {version}")), "{second}");
        assert!(
            second.contains(r#""x-client-cert-subject":"CN=alice""#),
            "{second}"
        );
        assert!(
            second.contains(r#""x-client-cert-san":"DNS:alice.example""#),
            "{second}"
        );
    }
}

#[test]
fn required_client_certificates_are_verified_and_forwarded_and_spoofs_are_removed() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let clients = Ca::new("Clients CA");
    let clients_file = clients.write(&dir, "clients");
    let cert = ca.server(&["api.test"]).write(&dir, "api");
    let alice = clients.issue(
        &[("O", "Example, Inc."), ("CN", "alice")],
        &["alice.example"],
        &["spiffe://example/alice"],
        30,
    );
    let stranger = Ca::new("Other CA").issue(&[("CN", "mallory")], &[], &[], 30);
    let origin = Origin::start("app");
    let gw = tls_gateway(
        &origin,
        &format!(
            "certificates: [{cert}], client_ca: \"{}\"",
            clients_file.display()
        ),
        None,
        "",
    );

    let with_cert = |issued: &Issued| {
        let (cert, key) = (issued.cert.clone(), issued.key.clone());
        connector(&ca, move |b| {
            b.set_certificate(&cert).unwrap();
            b.set_private_key(&key).unwrap();
        })
    };
    let mut stream = connect(&with_cert(&alice), gw.proxy, Some("api.test")).unwrap();
    let response = exchange(
        &mut stream,
        "api.test",
        "/who",
        &[("X-Client-Cert-Subject", "CN=admin")],
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let headers = &response.json()["headers"];
    assert_eq!(
        headers["x-client-cert-subject"],
        "CN=alice,O=Example\\, Inc."
    );
    assert_eq!(
        headers["x-client-cert-san"],
        "DNS:alice.example, URI:spiffe://example/alice"
    );
    let fingerprint: String = alice
        .cert
        .digest(MessageDigest::sha256())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(headers["x-client-cert-fingerprint"], fingerprint.as_str());

    // No certificate: TLS 1.3 clients learn it at their first read.
    let anonymous = connector(&ca, |_| {});
    let refused = connect(&anonymous, gw.proxy, Some("api.test"))
        .and_then(|mut s| exchange(&mut s, "api.test", "/", &[]).map_err(|e| e.to_string()));
    assert!(refused.is_err(), "{:?}", refused.map(|r| r.status));
    wait_failure(&gw, "client_certificate_missing");

    let refused = connect(&with_cert(&stranger), gw.proxy, Some("api.test"))
        .and_then(|mut s| exchange(&mut s, "api.test", "/", &[]).map_err(|e| e.to_string()));
    assert!(refused.is_err(), "{:?}", refused.map(|r| r.status));
    wait_failure(&gw, "client_certificate_invalid");
    assert_eq!(origin.hits(), 1, "only alice reached the backend");
}

#[test]
fn optional_client_certificates_serve_anonymous_clients_without_identity_headers() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let clients = Ca::new("Clients CA");
    let clients_file = clients.write(&dir, "clients");
    let cert = ca.server(&["api.test"]).write(&dir, "api");
    let bob = clients.issue(&[("CN", "bob")], &[], &[], 30);
    let origin = Origin::start("app");
    let gw = tls_gateway(
        &origin,
        &format!(
            "certificates: [{cert}], client_ca: \"{}\", client_auth: optional",
            clients_file.display()
        ),
        None,
        "",
    );
    let mut anonymous = connect(&connector(&ca, |_| {}), gw.proxy, Some("api.test")).unwrap();
    let spoofs = [
        ("X-Client-Cert-Subject", "CN=admin"),
        ("X-Client-Cert-SAN", "DNS:admin"),
        ("X-Client-Cert-Fingerprint", "00"),
    ];
    let response = exchange(&mut anonymous, "api.test", "/", &spoofs).unwrap();
    assert_eq!(response.status, 200);
    let headers = response.json()["headers"].clone();
    for (name, _) in spoofs {
        assert!(
            headers.get(name.to_ascii_lowercase()).is_none(),
            "{headers}"
        );
    }

    let (cert, key) = (bob.cert.clone(), bob.key.clone());
    let client = connector(&ca, move |b| {
        b.set_certificate(&cert).unwrap();
        b.set_private_key(&key).unwrap();
    });
    let mut stream = connect(&client, gw.proxy, Some("api.test")).unwrap();
    let response = exchange(&mut stream, "api.test", "/", &spoofs).unwrap();
    let headers = &response.json()["headers"];
    assert_eq!(headers["x-client-cert-subject"], "CN=bob");
    assert!(headers.get("x-client-cert-san").is_none(), "{headers}");
}

#[test]
fn certificates_rotate_on_sighup_and_open_connections_keep_going() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let first = ca.server(&["api.test"]);
    let cert = first.write(&dir, "api");
    let origin = Origin::start("app");
    let gw = tls_gateway(&origin, &format!("certificates: [{cert}]"), None, "");
    let client = connector(&ca, |_| {});
    let serial = |stream: &SslStream<TcpStream>| {
        stream
            .ssl()
            .peer_certificate()
            .unwrap()
            .serial_number()
            .to_bn()
            .unwrap()
            .to_string()
    };
    let mut open = connect(&client, gw.proxy, Some("api.test")).unwrap();
    assert_eq!(
        exchange(&mut open, "api.test", "/", &[]).unwrap().status,
        200
    );
    let old_serial = serial(&open);

    let second = ca.server(&["api.test"]);
    second.write(&dir, "api");
    gw.signal("HUP");
    let new_serial = second.cert.serial_number().to_bn().unwrap().to_string();
    let rotated = wait_until(Duration::from_secs(10), || {
        serial(&connect(&client, gw.proxy, Some("api.test")).unwrap()) == new_serial
    });
    assert!(rotated, "new handshakes still get serial {old_serial}");
    let again = exchange(&mut open, "api.test", "/still-open", &[]).unwrap();
    assert_eq!(again.status, 200, "the open connection keeps working");
    assert_eq!(serial(&open), old_serial);

    // A broken file keeps the certificate in force and says which file and why.
    std::fs::write(dir.join("api.key"), "not a key").unwrap();
    gw.signal("HUP");
    let logged = wait_until(Duration::from_secs(10), || {
        gw.stderr().contains("api.key") && gw.stderr().contains("previous certificates")
    });
    assert!(logged, "{}", gw.stderr());
    assert_eq!(
        serial(&connect(&client, gw.proxy, Some("api.test")).unwrap()),
        new_serial
    );
    let expiry = gw
        .metrics()
        .lines()
        .find(|l| l.starts_with("edgegate_tls_certificate_expiry_seconds{"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(expiry.contains("name=\"api.test\""), "{expiry}");
}

#[test]
fn check_lists_certificates_with_expiry_and_refuses_expired_or_mismatched_ones() {
    let dir = temp_dir();
    let ca = Ca::new("Test CA");
    let soon = ca
        .issue(&[("CN", "soon.test")], &["soon.test"], &[], 5)
        .write(&dir, "soon");
    let later = ca.server(&["later.test"]).write(&dir, "later");
    let expired = ca
        .issue(&[("CN", "old.test")], &["old.test"], &[], -1)
        .write(&dir, "old");
    let other = ca.server(&["other.test"]);
    other.write(&dir, "other");
    let write_config = |certificates: &str| {
        let path = dir.join(format!("check-{}.yaml", free_port()));
        std::fs::write(
            &path,
            format!(
                "listeners:\n  - name: https\n    address: 127.0.0.1:8443\n    tls:\n      certificates: {certificates}\n\
                 upstreams:\n  app: {{ targets: [{{ address: 127.0.0.1:9 }}] }}\n\
                 routes:\n  - {{ name: all, upstream: app }}\n"
            ),
        )
        .unwrap();
        path
    };
    let (ok, stdout, stderr) = crate::support::check(&write_config(&format!("[{later}, {soon}]")));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("https://127.0.0.1:8443"), "{stdout}");
    assert!(stdout.contains("later.test"), "{stdout}");
    assert!(
        stdout.contains("expires") && stdout.contains("days)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("soon.pem expires in 4 days")
            || stderr.contains("soon.pem expires in 5 days"),
        "{stderr}"
    );
    assert!(!stderr.contains("later.pem expires"), "{stderr}");

    let (ok, _, stderr) = crate::support::check(&write_config(&format!("[{expired}]")));
    assert!(!ok);
    assert!(
        stderr.contains(".yaml:5:") && stderr.contains("listeners[0].tls.certificates[0].cert"),
        "{stderr}"
    );
    assert!(stderr.contains("expired"), "{stderr}");

    let mismatched = format!(
        "[{{ cert: \"{}\", key: \"{}\" }}]",
        dir.join("later.pem").display(),
        dir.join("other.key").display()
    );
    let (ok, _, stderr) = crate::support::check(&write_config(&mismatched));
    assert!(!ok);
    assert!(
        stderr.contains("certificates[0].key") && stderr.contains("does not belong"),
        "{stderr}"
    );
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_cut_at_the_header_deadline() {
    let (_, _, cert, origin) = setup();
    let gw = tls_gateway(
        &origin,
        &format!("certificates: [{cert}]"),
        None,
        "  header_read_timeout: 1s\n",
    );
    let mut idle = TcpStream::connect(gw.proxy).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = std::io::Read::read(&mut idle, &mut byte);
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    wait_failure(&gw, "timeout");
}
