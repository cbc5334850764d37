//! Validation of a route's `cors` section into a [`CorsPolicy`].

use super::check::Checker;
use super::raw::RawCors;
use crate::cors::{CorsPolicy, OriginRule};
use http::HeaderValue;
use std::time::Duration;

/// Methods a preflight allows when `allow_methods` is not given: the CORS-safelisted ones.
const DEFAULT_METHODS: &str = "GET, HEAD, POST";
/// Browsers cap the preflight cache themselves (Chromium: 2 h); a day is generous.
const MAX_AGE_LIMIT: Duration = Duration::from_secs(86_400);

/// The route's CORS policy, or `None` after reporting what is wrong.
pub(super) fn cors_policy(check: &mut Checker, key: &str, raw: RawCors) -> Option<CorsPolicy> {
    let credentials = raw.allow_credentials.unwrap_or(false);
    let before = check.problem_count();
    if raw.allow_origins.is_empty() {
        check.fail(
            format!("{key}.allow_origins"),
            "list at least one origin (`*` for any)",
        );
    }
    let mut origins = Vec::with_capacity(raw.allow_origins.len());
    for (index, text) in raw.allow_origins.iter().enumerate() {
        let entry = format!("{key}.allow_origins[{index}]");
        match OriginRule::parse(text) {
            Ok(OriginRule::Any) if credentials => check.fail(
                entry,
                "`*` cannot be combined with `allow_credentials: true` (browsers refuse it); \
                 list the origins, or `*.domain` patterns",
            ),
            Ok(rule) => origins.push(rule),
            Err(message) => check.fail(entry, message),
        }
    }
    let allow_methods = match &raw.allow_methods {
        None => Some(HeaderValue::from_static(DEFAULT_METHODS)),
        Some(methods) => {
            let names = checked_list(
                check,
                &format!("{key}.allow_methods"),
                methods,
                credentials,
                |m| {
                    http::Method::from_bytes(m.as_bytes())
                        .map(|method| method.as_str().to_string())
                        .map_err(|_| format!("`{m}` is not an HTTP method"))
                },
            );
            joined(check, &format!("{key}.allow_methods"), names)
        }
    };
    let allow_headers = header_list(
        check,
        &format!("{key}.allow_headers"),
        &raw.allow_headers,
        credentials,
    );
    let expose_headers = header_list(
        check,
        &format!("{key}.expose_headers"),
        &raw.expose_headers,
        credentials,
    );
    let max_age = raw.max_age.as_deref().map(|text| {
        let age = check.duration(format!("{key}.max_age"), Some(text), Duration::ZERO);
        if age > MAX_AGE_LIMIT {
            check.fail(
                format!("{key}.max_age"),
                "at most 24h (browsers cap it lower anyway)",
            );
        }
        HeaderValue::from(age.as_secs())
    });
    if check.problem_count() > before {
        return None;
    }
    Some(CorsPolicy {
        origins,
        allow_methods: allow_methods?,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials: credentials,
        reject_unknown_origins: raw.reject_unknown_origins.unwrap_or(false),
    })
}

/// Header names as one comma-separated value (`None` for an empty list).
fn header_list(
    check: &mut Checker,
    key: &str,
    names: &[String],
    credentials: bool,
) -> Option<HeaderValue> {
    if names.is_empty() {
        return None;
    }
    let names = checked_list(check, key, names, credentials, |name| {
        http::HeaderName::from_bytes(name.as_bytes())
            .map(|_| name.to_string())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))
    });
    joined(check, key, names)
}

/// Each item checked; `*` only alone and only without credentials (with credentials, the Fetch
/// standard reads it as a literal name).
fn checked_list(
    check: &mut Checker,
    key: &str,
    items: &[String],
    credentials: bool,
    parse: impl Fn(&str) -> Result<String, String>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let entry = format!("{key}[{index}]");
        if item == "*" {
            if credentials {
                check.fail(
                    entry,
                    "`*` means any only without `allow_credentials: true`; list the names",
                );
            } else if items.len() > 1 {
                check.fail(entry, "`*` already means any: list it alone");
            } else {
                out.push("*".to_string());
            }
            continue;
        }
        match parse(item) {
            Ok(text) => out.push(text),
            Err(message) => check.fail(entry, message),
        }
    }
    out
}

fn joined(check: &mut Checker, key: &str, items: Vec<String>) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    match HeaderValue::from_str(&items.join(", ")) {
        Ok(value) => Some(value),
        Err(_) => {
            check.fail(key.to_string(), "not a valid header value");
            None
        }
    }
}
