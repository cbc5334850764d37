//! Validation of a route's `match`: host patterns, one path rule, methods and headers.

use super::check::Checker;
use super::model::*;
use super::raw::*;
use http::Method;
use std::collections::BTreeMap;

/// Validates `routes[N].match`; `None` when any part of it is invalid.
pub(super) fn match_spec(check: &mut Checker, key: &str, raw: RawMatch) -> Option<MatchSpec> {
    let RawMatch {
        hosts,
        path_prefix,
        path_exact,
        path_regex,
        path_template,
        methods,
        headers,
    } = raw;
    let before = check.problem_count();
    let hosts = host_patterns(check, key, &hosts);
    let path = match path_template {
        None => path_match(check, key, path_prefix, path_exact, path_regex),
        Some(template) if path_prefix.is_none() && path_exact.is_none() && path_regex.is_none() => {
            match crate::routing::template::PathTemplate::parse(&template) {
                Ok(template) => PathMatch::Template(template),
                Err(error) => {
                    check.fail(
                        format!("{key}.path_template"),
                        format!("`{template}`: {error}"),
                    );
                    PathMatch::Any
                }
            }
        }
        Some(_) => {
            check.fail(
                key.to_string(),
                "use only one of path_prefix, path_exact, path_regex, path_template",
            );
            PathMatch::Any
        }
    };
    let methods = method_list(check, key, &methods);
    let headers = header_list(check, key, &headers);
    (check.problem_count() == before).then_some(MatchSpec {
        hosts,
        path,
        methods,
        headers,
    })
}

fn host_patterns(check: &mut Checker, key: &str, hosts: &[String]) -> Vec<HostPattern> {
    let mut patterns = Vec::with_capacity(hosts.len());
    for (index, host) in hosts.iter().enumerate() {
        let host = host.to_ascii_lowercase();
        if let Some(suffix) = host.strip_prefix("*.") {
            if is_host_name(suffix) {
                patterns.push(HostPattern::Suffix(format!(".{suffix}")));
                continue;
            }
        } else if is_host_name(&host) {
            patterns.push(HostPattern::Exact(host));
            continue;
        }
        check.fail(
            format!("{key}.hosts[{index}]"),
            format!("`{host}` is not a host name or `*.suffix` (no port, no other wildcards)"),
        );
    }
    patterns
}

/// Dot-separated labels of letters, digits and `-`.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn path_match(
    check: &mut Checker,
    key: &str,
    prefix: Option<String>,
    exact: Option<String>,
    regex: Option<String>,
) -> PathMatch {
    match (prefix, exact, regex) {
        (None, None, None) => PathMatch::Any,
        (Some(prefix), None, None) => {
            if !prefix.starts_with('/') {
                check.fail(
                    format!("{key}.path_prefix"),
                    format!("`{prefix}` must start with /"),
                );
            }
            if prefix == "/" {
                PathMatch::Any
            } else {
                PathMatch::Prefix(prefix.trim_end_matches('/').to_string())
            }
        }
        (None, Some(exact), None) => {
            if !exact.starts_with('/') {
                check.fail(
                    format!("{key}.path_exact"),
                    format!("`{exact}` must start with /"),
                );
            }
            PathMatch::Exact(exact)
        }
        (None, None, Some(pattern)) => match regex::Regex::new(&pattern) {
            Ok(regex) => PathMatch::Regex(regex),
            Err(error) => {
                check.fail(
                    format!("{key}.path_regex"),
                    format!("invalid regex: {error}"),
                );
                PathMatch::Any
            }
        },
        _ => {
            check.fail(
                key.to_string(),
                "use only one of path_prefix, path_exact, path_regex, path_template",
            );
            PathMatch::Any
        }
    }
}

fn method_list(check: &mut Checker, key: &str, methods: &[String]) -> Vec<Method> {
    let mut list = Vec::with_capacity(methods.len());
    for (index, method) in methods.iter().enumerate() {
        match Method::from_bytes(method.as_bytes()) {
            Ok(parsed) if method.bytes().all(|b| b.is_ascii_uppercase()) => list.push(parsed),
            _ => check.fail(
                format!("{key}.methods[{index}]"),
                format!("`{method}` is not an upper-case HTTP method like GET"),
            ),
        }
    }
    list
}

fn header_list(
    check: &mut Checker,
    key: &str,
    headers: &BTreeMap<String, String>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut list = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let field = format!("{key}.headers.{name}");
        let parsed_name = check.header_name(field.clone(), name);
        let parsed_value = check.header_value(field, value);
        if let (Some(name), Some(value)) = (parsed_name, parsed_value) {
            list.push((name, value));
        }
    }
    list
}
