//! Validation of `routes[].aggregate`: the parts, their upstreams and templates.

use super::check::{is_label_safe, Checker, Names};
use super::model::*;
use super::raw::*;
use crate::aggregate::template::PartTemplate;
use std::time::Duration;

/// `aggregate.timeout` when neither it nor the route's `timeout` is given.
pub const DEFAULT_AGGREGATE_TIMEOUT: Duration = Duration::from_secs(10);
/// `aggregate.max_part_size` when not given.
pub const DEFAULT_MAX_PART_SIZE: u64 = 1 << 20;

/// Validates `{key}` (`routes[N].aggregate`); `segments` are the names the route's
/// `match.path_template` captures, `route_timeout` the route's own `timeout`.
pub(super) fn aggregate_spec(
    check: &mut Checker,
    key: &str,
    raw: RawAggregate,
    segments: &[String],
    route_timeout: Option<Duration>,
    upstreams: &Names<'_>,
) -> Option<AggregateSpec> {
    let before = check.problem_count();
    let RawAggregate {
        timeout,
        max_part_size,
        parts,
    } = raw;
    let timeout = match timeout {
        Some(text) => check.positive_duration(
            format!("{key}.timeout"),
            Some(&text),
            DEFAULT_AGGREGATE_TIMEOUT,
        ),
        None => route_timeout.unwrap_or(DEFAULT_AGGREGATE_TIMEOUT),
    };
    let max_part_size = check.size(
        format!("{key}.max_part_size"),
        max_part_size.as_deref(),
        DEFAULT_MAX_PART_SIZE,
    );
    if max_part_size == 0 {
        check.fail(format!("{key}.max_part_size"), "must be more than 0");
    }
    if parts.0.is_empty() {
        check.fail(format!("{key}.parts"), "needs at least one part");
    }
    let mut specs: Vec<PartSpec> = Vec::with_capacity(parts.0.len());
    for (name, raw) in parts.0 {
        let field = format!("{key}.parts.{name}");
        if !is_label_safe(&name) {
            check.fail(
                field.clone(),
                "part names must be non-empty and use only letters, digits, `-`, `_` and `.`",
            );
        }
        if specs.iter().any(|spec| spec.name == name) {
            check.fail(field.clone(), format!("part `{name}` is given twice"));
        }
        if let Some(spec) = part_spec(check, &field, name, raw, segments, upstreams) {
            specs.push(spec);
        }
    }
    (check.problem_count() == before).then_some(AggregateSpec {
        timeout,
        max_part_size: usize::try_from(max_part_size).unwrap_or(usize::MAX),
        parts: specs,
    })
}

fn part_spec(
    check: &mut Checker,
    key: &str,
    name: String,
    raw: RawPart,
    segments: &[String],
    upstreams: &Names<'_>,
) -> Option<PartSpec> {
    let RawPart {
        upstream,
        path,
        method,
        headers,
        required,
        timeout,
    } = raw;
    let upstream = check.resolve(format!("{key}.upstream"), upstreams, &upstream, |names| {
        format!(
            "no upstream named `{upstream}` (defined: {})",
            names.listed()
        )
    });
    let names = || segments.iter().map(String::as_str);
    let path = match PartTemplate::parse(&path, names()) {
        Ok(template)
            if template.literal_start().starts_with('/')
                && http::uri::PathAndQuery::try_from(template.sample()).is_ok() =>
        {
            Some(template)
        }
        Ok(template) if template.literal_start().starts_with('/') => {
            check.fail(
                format!("{key}.path"),
                format!("`{path}` is not a valid request path (spaces and other characters outside a URI must be percent-encoded)"),
            );
            None
        }
        Ok(_) => {
            check.fail(format!("{key}.path"), format!("`{path}` must start with /"));
            None
        }
        Err(error) => {
            check.fail(format!("{key}.path"), error.to_string());
            None
        }
    };
    let method = match method.as_deref() {
        None => Some(http::Method::GET),
        Some(text) => match http::Method::from_bytes(text.as_bytes()) {
            Ok(method) if text.bytes().all(|b| b.is_ascii_uppercase()) => Some(method),
            _ => {
                check.fail(
                    format!("{key}.method"),
                    format!("`{text}` is not an upper-case HTTP method"),
                );
                None
            }
        },
    };
    let mut header_templates = Vec::with_capacity(headers.len());
    for (header, value) in &headers {
        let field = format!("{key}.headers.{header}");
        let parsed_name = check.header_name(field.clone(), header);
        if parsed_name.as_ref().is_some_and(|n| {
            matches!(
                n.as_str(),
                "connection" | "content-length" | "transfer-encoding" | "upgrade" | "te"
            )
        }) {
            check.fail(
                field.clone(),
                format!("`{header}` is managed by the proxy and cannot be set"),
            );
            continue;
        }
        if http::HeaderValue::from_str(&value.replace(['{', '}'], "")).is_err() {
            check.fail(
                field.clone(),
                format!("`{value}` is not a valid HTTP header value"),
            );
            continue;
        }
        match PartTemplate::parse(value, names()) {
            Ok(template) => {
                if let Some(parsed_name) = parsed_name {
                    header_templates.push((parsed_name, template));
                }
            }
            Err(error) => check.fail(field, error.to_string()),
        }
    }
    let timeout = timeout.map(|text| {
        check.positive_duration(
            format!("{key}.timeout"),
            Some(&text),
            Duration::from_secs(1),
        )
    });
    Some(PartSpec {
        name,
        upstream: upstream?,
        method: method?,
        path: path?,
        headers: header_templates,
        required: required.unwrap_or(false),
        timeout,
    })
}
