//! Validation of `listeners`, including TLS: certificates and keys are loaded and matched now,
//! so a listener that passes `check` can serve.

use super::check::Checker;
use super::model::*;
use super::raw::*;
use crate::tls::certs;
use std::collections::HashSet;
use std::path::PathBuf;

/// Validates `listeners`: at least one, names and addresses unique.
pub(super) fn listener_specs(check: &mut Checker, raw: Vec<RawListener>) -> Vec<ListenerSpec> {
    if raw.is_empty() {
        check.fail("listeners", "at least one listener is needed");
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut specs = Vec::with_capacity(raw.len());
    for (index, listener) in raw.into_iter().enumerate() {
        let key = format!("listeners[{index}]");
        let Some(spec) = listener_spec(check, &key, listener, &mut names) else {
            continue;
        };
        if !addresses.insert(spec.address) {
            check.fail(
                format!("{key}.address"),
                format!("{} is listed twice", spec.address),
            );
        }
        specs.push(spec);
    }
    specs
}

fn listener_spec(
    check: &mut Checker,
    key: &str,
    raw: RawListener,
    names: &mut HashSet<String>,
) -> Option<ListenerSpec> {
    let RawListener {
        name,
        address,
        tls,
        h2c,
        max_connections,
        max_connections_per_ip,
    } = raw;
    for (field, value) in [
        ("max_connections", max_connections),
        ("max_connections_per_ip", max_connections_per_ip),
    ] {
        if value == Some(0) {
            check.fail(
                format!("{key}.{field}"),
                "must be at least 1 (omit it for no limit)",
            );
        }
    }
    if let (Some(total), Some(per_ip)) = (max_connections, max_connections_per_ip) {
        if per_ip > total {
            check.fail(
                format!("{key}.max_connections_per_ip"),
                format!("{per_ip} is more than the listener's max_connections ({total})"),
            );
        }
    }
    let tls = tls.and_then(|tls| listener_tls(check, &format!("{key}.tls"), tls));
    let h2c = h2c.unwrap_or(false);
    if h2c && tls.is_some() {
        check.fail(
            format!("{key}.h2c"),
            "h2c is HTTP/2 without TLS; a TLS listener offers h2 by ALPN (tls.http2)",
        );
    }
    if !names.insert(name.clone()) {
        check.fail(
            format!("{key}.name"),
            format!("listener name `{name}` is used twice"),
        );
    }
    let address = check.socket_addr(format!("{key}.address"), &address)?;
    Some(ListenerSpec {
        name,
        address,
        tls,
        h2c,
        max_connections,
        max_connections_per_ip,
    })
}

fn listener_tls(check: &mut Checker, key: &str, raw: RawListenerTls) -> Option<ListenerTls> {
    let RawListenerTls {
        certificates,
        http2,
        min_version,
        client_ca,
        client_auth,
    } = raw;
    let problems = check.problem_count();
    if certificates.is_empty() {
        check.fail(
            format!("{key}.certificates"),
            "at least one certificate is needed",
        );
    }
    let certificates = certificates
        .into_iter()
        .enumerate()
        .map(|(index, raw)| certificate(check, &format!("{key}.certificates[{index}]"), raw))
        .collect();
    let min_version = tls_version(check, key, min_version);
    let client_ca = client_ca.map(PathBuf::from);
    if let Some(path) = &client_ca {
        if let Err(error) = certs::load_ca(path) {
            check.fail(format!("{key}.client_ca"), error.to_string());
        }
    }
    let client_auth = client_auth_mode(check, key, client_auth.as_deref(), client_ca.is_some());
    (check.problem_count() == problems).then_some(ListenerTls {
        certificates,
        http2: http2.unwrap_or(true),
        min_version,
        client_ca,
        client_auth,
    })
}

/// One certificate and key, loaded to prove they parse and belong together.
fn certificate(check: &mut Checker, key: &str, raw: RawCertificate) -> CertificateSpec {
    let server_names = raw.server_names.map(|names| {
        names
            .iter()
            .enumerate()
            .filter_map(|(position, name)| {
                let valid = certs::server_name(name);
                if valid.is_none() {
                    check.fail(
                        format!("{key}.server_names[{position}]"),
                        format!("`{name}` is not a host name (a leading `*.` is allowed)"),
                    );
                }
                valid
            })
            .collect::<Vec<_>>()
    });
    let spec = CertificateSpec {
        cert: raw.cert.into(),
        key: raw.key.into(),
        server_names,
    };
    if let Err(error) = certs::Certificate::load(&spec) {
        let field = match &error {
            certs::CertError::Read { path, .. } | certs::CertError::Invalid { path, .. }
                if *path == spec.key =>
            {
                "key"
            }
            _ => "cert",
        };
        check.fail(format!("{key}.{field}"), error.to_string());
    }
    spec
}

fn tls_version(check: &mut Checker, key: &str, raw: Option<RawTlsVersion>) -> TlsVersion {
    let text = match raw {
        None => return TlsVersion::Tls12,
        Some(RawTlsVersion::Text(text)) => text,
        Some(RawTlsVersion::Number(number)) => format!("{number:.1}"),
    };
    match text.as_str() {
        "1.2" => TlsVersion::Tls12,
        "1.3" => TlsVersion::Tls13,
        _ => {
            check.fail(
                format!("{key}.min_version"),
                format!("`{text}` is not \"1.2\" or \"1.3\" (TLS 1.0 and 1.1 are never accepted)"),
            );
            TlsVersion::Tls12
        }
    }
}

/// Client certificates are required once a CA is given, unless `client_auth: optional`.
fn client_auth_mode(check: &mut Checker, key: &str, raw: Option<&str>, has_ca: bool) -> ClientAuth {
    match (raw, has_ca) {
        (None, false) => ClientAuth::Off,
        (None | Some("required"), true) => ClientAuth::Required,
        (Some("optional"), true) => ClientAuth::Optional,
        (Some("required" | "optional"), false) => {
            check.fail(
                format!("{key}.client_auth"),
                "needs client_ca (the CA bundle client certificates are verified against)",
            );
            ClientAuth::Off
        }
        (Some(other), _) => {
            check.fail(
                format!("{key}.client_auth"),
                format!("`{other}` is not `required` or `optional`"),
            );
            ClientAuth::Off
        }
    }
}
