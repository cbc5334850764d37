//! Validation of `routes`: what each route sends where, with which retries and header edits.
//! The policies a route names (auth, rate limits, cache) are resolved by their own sections.

use super::check::{is_label_safe, Checker, Names};
use super::model::*;
use super::raw::*;
use crate::templates::{HeaderTemplate, TemplateError};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const MAX_RETRY_ATTEMPTS: u32 = 5;

/// Headers whose meaning belongs to the connection or the framing; editing them breaks proxying.
const PROTECTED_HEADERS: [&str; 5] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// The validated sections a route may refer to by name.
pub(super) struct Sections<'a> {
    pub upstreams: Names<'a>,
    pub auth: &'a AuthSpec,
    pub rate_limits: &'a RateLimitSpec,
    pub cache: Option<&'a CacheSettings>,
    /// The top-level `tracing` section is there.
    pub tracing: bool,
}

/// Validates `routes`: at least one, names unique.
pub(super) fn route_specs(
    check: &mut Checker,
    raw: Vec<RawRoute>,
    sections: &Sections<'_>,
) -> Vec<RouteSpec> {
    let mut names = HashSet::new();
    let mut specs = Vec::with_capacity(raw.len());
    for (index, route) in raw.into_iter().enumerate() {
        let key = format!("routes[{index}]");
        if !names.insert(route.name.clone()) {
            check.fail(
                format!("{key}.name"),
                format!("route name `{}` is used twice", route.name),
            );
        }
        specs.extend(route_spec(check, &key, route, sections));
    }
    if specs.is_empty() && check.problem_count() == 0 {
        check.fail("routes", "at least one route is needed");
    }
    specs
}

fn route_spec(
    check: &mut Checker,
    key: &str,
    raw: RawRoute,
    sections: &Sections<'_>,
) -> Option<RouteSpec> {
    let RawRoute {
        name,
        matcher,
        upstream,
        split,
        strip_prefix,
        auth,
        rate_limits,
        cache,
        timeout,
        retries,
        max_body_size,
        request_headers,
        response_headers,
        cors,
        grpc,
        websocket,
        ip_allow,
        ip_deny,
        aggregate,
        compression,
        tracing,
    } = raw;
    if name.is_empty() || !is_label_safe(&name) {
        check.fail(
            format!("{key}.name"),
            "route names must be non-empty and use only letters, digits, `-`, `_` and `.`",
        );
    }
    let RoutePolicies {
        auth,
        rate_limits,
        quotas,
        cache,
    } = route_policies(check, key, auth, rate_limits, cache, sections);
    let cors = cors.and_then(|raw| super::cors::cors_policy(check, &format!("{key}.cors"), raw));
    let compression = compression.map(|raw| {
        super::compression::compression_policy(check, &format!("{key}.compression"), raw)
    });
    let trace_ratio =
        super::tracing::route_ratio(check, &format!("{key}.tracing"), tracing, sections.tracing);
    let matcher = super::matching::match_spec(check, &format!("{key}.match"), matcher);
    check_strip_prefix(check, key, strip_prefix.as_deref());
    let timeout = timeout.map(|text| {
        check.positive_duration(
            format!("{key}.timeout"),
            Some(&text),
            Duration::from_secs(1),
        )
    });
    let target = match aggregate {
        None => route_target(check, key, upstream, split, &sections.upstreams),
        Some(raw) => {
            let field = format!("{key}.aggregate");
            if upstream.is_some() || split.is_some() {
                check.fail(
                    field.clone(),
                    "an aggregation route has no `upstream` or `split`: each part names its own",
                );
            }
            if strip_prefix.is_some() {
                check.fail(
                    format!("{key}.strip_prefix"),
                    "an aggregation route forwards no path; each part gives its own",
                );
            }
            if grpc == Some(true) {
                check.fail(
                    format!("{key}.grpc"),
                    "an aggregation route answers JSON, not gRPC",
                );
            }
            let segments: Vec<String> = match matcher.as_ref().map(|m| &m.path) {
                Some(PathMatch::Template(template)) => {
                    template.names().map(str::to_string).collect()
                }
                _ => Vec::new(),
            };
            super::aggregate::aggregate_spec(
                check,
                &field,
                raw,
                &segments,
                timeout,
                &sections.upstreams,
            )
            .map(RouteTarget::Aggregate)
        }
    };
    let retries = retry_policy(check, &format!("{key}.retries"), retries);
    let max_body_size = check.size(
        format!("{key}.max_body_size"),
        max_body_size.as_deref(),
        10 << 20,
    );
    let request_headers = header_ops(
        check,
        &format!("{key}.request_headers"),
        request_headers,
        &name,
    );
    let response_headers = header_ops(
        check,
        &format!("{key}.response_headers"),
        response_headers,
        &name,
    );
    let ip_allow = check.cidrs(&format!("{key}.ip_allow"), &ip_allow);
    let ip_deny = check.cidrs(&format!("{key}.ip_deny"), &ip_deny);
    let websocket_idle_timeout = check.positive_duration(
        format!("{key}.websocket.idle_timeout"),
        websocket.and_then(|w| w.idle_timeout).as_deref(),
        DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
    );
    Some(RouteSpec {
        name,
        matcher: matcher?,
        target: target?,
        strip_prefix,
        timeout,
        retries,
        max_body_size,
        request_headers,
        response_headers,
        ip_allow,
        ip_deny,
        auth,
        rate_limits,
        quotas,
        cache,
        cors,
        compression,
        grpc: grpc.unwrap_or(false),
        websocket_idle_timeout,
        trace_ratio,
    })
}

/// What a route names in the policy sections, resolved.
struct RoutePolicies {
    auth: Option<RouteAuthSpec>,
    rate_limits: Vec<usize>,
    quotas: Vec<usize>,
    cache: Option<RouteCacheSpec>,
}

/// The policies a route names, resolved against their sections.
fn route_policies(
    check: &mut Checker,
    key: &str,
    auth: Option<RawRouteAuth>,
    rate_limits: Option<Vec<String>>,
    cache: Option<RawRouteCache>,
    sections: &Sections<'_>,
) -> RoutePolicies {
    let auth = super::auth::route_auth(check, &format!("{key}.auth"), auth, sections.auth);
    let (rate_limits, quotas) = super::ratelimit::route_policies(
        check,
        &format!("{key}.rate_limits"),
        rate_limits,
        sections.rate_limits,
    );
    let cache = super::cache::route_cache(check, &format!("{key}.cache"), cache, sections.cache);
    RoutePolicies {
        auth,
        rate_limits,
        quotas,
        cache,
    }
}

fn check_strip_prefix(check: &mut Checker, key: &str, prefix: Option<&str>) {
    if let Some(prefix) = prefix {
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            check.fail(
                format!("{key}.strip_prefix"),
                format!("`{prefix}` must start with / and not end with / (like /api/v1)"),
            );
        }
    }
}

/// `upstream: NAME` or a weighted `split`, exactly one of them.
fn route_target(
    check: &mut Checker,
    key: &str,
    upstream: Option<String>,
    split: Option<RawSplitForm>,
    upstreams: &Names<'_>,
) -> Option<RouteTarget> {
    match (upstream, split) {
        (Some(upstream), None) => {
            resolve_upstream(check, format!("{key}.upstream"), upstreams, &upstream)
                .map(RouteTarget::Upstream)
        }
        (None, Some(split)) => Some(RouteTarget::Split(split_spec(
            check,
            &format!("{key}.split"),
            split,
            upstreams,
        ))),
        (Some(_), Some(_)) => {
            check.fail(
                format!("{key}.split"),
                "give either `upstream` or `split`, not both",
            );
            None
        }
        (None, None) => {
            check.fail(key.to_string(), "needs `upstream`, `split` or `aggregate`");
            None
        }
    }
}

fn resolve_upstream(
    check: &mut Checker,
    field: String,
    upstreams: &Names<'_>,
    name: &str,
) -> Option<usize> {
    check.resolve(field, upstreams, name, |names| {
        format!("no upstream named `{name}` (defined: {})", names.listed())
    })
}

/// The arms of a split (the plain list form, or the mapping with `sticky` and `force`).
fn split_spec(
    check: &mut Checker,
    key: &str,
    raw: RawSplitForm,
    upstreams: &Names<'_>,
) -> SplitSpec {
    let (raw_arms, arms_key, sticky, force) = match raw {
        RawSplitForm::Arms(arms) => (arms, key.to_string(), None, None),
        RawSplitForm::Full(RawSplitSpec {
            sticky,
            force,
            arms,
        }) => (arms, format!("{key}.arms"), sticky, force),
    };
    let mut arms: Vec<SplitTarget> = Vec::with_capacity(raw_arms.len());
    for (index, RawSplit { upstream, weight }) in raw_arms.into_iter().enumerate() {
        let field = format!("{arms_key}[{index}].upstream");
        if let Some(found) = resolve_upstream(check, field.clone(), upstreams, &upstream) {
            if arms.iter().any(|arm| arm.upstream == found) {
                check.fail(
                    field,
                    format!("`{upstream}` is already an arm of this split"),
                );
            } else {
                arms.push(SplitTarget {
                    upstream: found,
                    weight,
                });
            }
        }
    }
    if arms.iter().map(|b| u64::from(b.weight)).sum::<u64>() == 0 {
        check.fail(arms_key, "the weights must add up to more than 0");
    }
    let sticky = sticky.and_then(|text| {
        let field = format!("{key}.sticky");
        match text.split_once(':') {
            None if text == "consumer" => Some(CallerKey::Consumer),
            None if text == "client_ip" => Some(CallerKey::ClientIp),
            Some(("header", name)) => check.header_name(field, name).map(CallerKey::Header),
            Some(("cookie", name)) if !name.is_empty() => Some(CallerKey::Cookie(name.into())),
            _ => {
                check.fail(
                    field,
                    format!(
                        "`{text}` is not one of: consumer, client_ip, cookie:NAME, header:NAME"
                    ),
                );
                None
            }
        }
    });
    let force = force.and_then(|RawForce { header, cookie }| {
        let field = format!("{key}.force");
        match (header, cookie) {
            (Some(name), None) => check
                .header_name(format!("{field}.header"), &name)
                .map(ForceSource::Header),
            (None, Some(name)) if !name.is_empty() => Some(ForceSource::Cookie(name)),
            _ => {
                check.fail(
                    field,
                    "needs exactly one of `header: NAME` or `cookie: NAME`",
                );
                None
            }
        }
    });
    SplitSpec {
        arms,
        sticky,
        force,
    }
}

fn retry_policy(check: &mut Checker, key: &str, raw: Option<RawRetries>) -> RetryPolicy {
    let Some(RawRetries {
        attempts,
        on,
        backoff,
    }) = raw
    else {
        return RetryPolicy {
            attempts: 1,
            on_connect_failure: true,
            on_gateway_error: false,
            on_5xx: false,
            on_reset: false,
            backoff: Duration::ZERO,
        };
    };
    let attempts = attempts.unwrap_or(1);
    if attempts > MAX_RETRY_ATTEMPTS {
        check.fail(
            format!("{key}.attempts"),
            format!("must be at most {MAX_RETRY_ATTEMPTS}"),
        );
    }
    let mut policy = RetryPolicy {
        attempts,
        on_connect_failure: false,
        on_gateway_error: false,
        on_5xx: false,
        on_reset: false,
        backoff: check.duration(format!("{key}.backoff"), backoff.as_deref(), Duration::ZERO),
    };
    for (index, condition) in on
        .unwrap_or_else(|| vec!["connect_failure".into()])
        .iter()
        .enumerate()
    {
        match condition.as_str() {
            "connect_failure" => policy.on_connect_failure = true,
            "gateway_error" => policy.on_gateway_error = true,
            "5xx" => policy.on_5xx = true,
            "reset" => policy.on_reset = true,
            other => check.fail(
                format!("{key}.on[{index}]"),
                format!("`{other}` is not one of: connect_failure, gateway_error, 5xx, reset"),
            ),
        }
    }
    policy
}

fn header_ops(check: &mut Checker, key: &str, raw: Option<RawHeaderOps>, route: &str) -> HeaderOps {
    let Some(RawHeaderOps { set, remove }) = raw else {
        return HeaderOps::default();
    };
    let mut ops = HeaderOps::default();
    let set: BTreeMap<String, String> = set;
    for (name, value) in &set {
        let field = format!("{key}.set.{name}");
        let parsed_value = match HeaderTemplate::parse(value, route) {
            Ok(template) => Some(template),
            Err(TemplateError::InvalidText) => {
                check.fail(
                    field.clone(),
                    format!("`{value}` is not a valid HTTP header value"),
                );
                None
            }
            Err(error) => {
                check.fail(field.clone(), error.to_string());
                None
            }
        };
        if let (Some(parsed_name), Some(parsed_value)) =
            (check.header_name(field.clone(), name), parsed_value)
        {
            if PROTECTED_HEADERS.contains(&parsed_name.as_str()) {
                check.fail(
                    field,
                    format!("`{name}` is managed by the proxy and cannot be set"),
                );
            } else {
                ops.set.push((parsed_name, parsed_value));
            }
        }
    }
    for (index, name) in remove.iter().enumerate() {
        let field = format!("{key}.remove[{index}]");
        if let Some(parsed) = check.header_name(field.clone(), name) {
            if PROTECTED_HEADERS.contains(&parsed.as_str()) {
                check.fail(
                    field,
                    format!("`{name}` is managed by the proxy and cannot be removed"),
                );
            } else {
                ops.remove.push(parsed);
            }
        }
    }
    ops
}
