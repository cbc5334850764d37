//! Validation of `routes`: what each route sends where, with which retries and header edits.
//! The policies a route names (auth, rate limits, cache) are resolved by their own sections.

use super::check::{is_label_safe, Checker, Names};
use super::model::*;
use super::raw::*;
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
    } = raw;
    if name.is_empty() || !is_label_safe(&name) {
        check.fail(
            format!("{key}.name"),
            "route names must be non-empty and use only letters, digits, `-`, `_` and `.`",
        );
    }
    let (auth, rate_limits, cache) = route_policies(check, key, auth, rate_limits, cache, sections);
    let cors = cors.and_then(|raw| super::cors::cors_policy(check, &format!("{key}.cors"), raw));
    check.unsupported(
        format!("{key}.aggregate"),
        &aggregate,
        "aggregation routes are not implemented yet",
    );
    let matcher = super::matching::match_spec(check, &format!("{key}.match"), matcher);
    let target = route_target(check, key, upstream, split, &sections.upstreams);
    check_strip_prefix(check, key, strip_prefix.as_deref());
    let timeout = timeout.map(|text| {
        check.positive_duration(
            format!("{key}.timeout"),
            Some(&text),
            Duration::from_secs(1),
        )
    });
    let retries = retry_policy(check, &format!("{key}.retries"), retries);
    let max_body_size = check.size(
        format!("{key}.max_body_size"),
        max_body_size.as_deref(),
        10 << 20,
    );
    let request_headers = header_ops(check, &format!("{key}.request_headers"), request_headers);
    let response_headers = header_ops(check, &format!("{key}.response_headers"), response_headers);
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
        cache,
        cors,
        grpc: grpc.unwrap_or(false),
        websocket_idle_timeout,
    })
}

/// The policies a route names, resolved against their sections.
fn route_policies(
    check: &mut Checker,
    key: &str,
    auth: Option<RawRouteAuth>,
    rate_limits: Option<Vec<String>>,
    cache: Option<RawRouteCache>,
    sections: &Sections<'_>,
) -> (Option<RouteAuthSpec>, Vec<usize>, Option<RouteCacheSpec>) {
    let auth = super::auth::route_auth(check, &format!("{key}.auth"), auth, sections.auth);
    let rate_limits = super::ratelimit::route_policies(
        check,
        &format!("{key}.rate_limits"),
        rate_limits,
        sections.rate_limits,
    );
    let cache = super::cache::route_cache(check, &format!("{key}.cache"), cache, sections.cache);
    (auth, rate_limits, cache)
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
    split: Option<Vec<RawSplit>>,
    upstreams: &Names<'_>,
) -> Option<RouteTarget> {
    let resolve = |check: &mut Checker, field: String, name: &str| {
        check.resolve(field, upstreams, name, |names| {
            format!("no upstream named `{name}` (defined: {})", names.listed())
        })
    };
    match (upstream, split) {
        (Some(upstream), None) => {
            resolve(check, format!("{key}.upstream"), &upstream).map(RouteTarget::Upstream)
        }
        (None, Some(split)) => {
            let mut branches = Vec::with_capacity(split.len());
            for (index, RawSplit { upstream, weight }) in split.into_iter().enumerate() {
                let field = format!("{key}.split[{index}].upstream");
                if let Some(found) = resolve(check, field, &upstream) {
                    branches.push(SplitTarget {
                        upstream: found,
                        weight,
                    });
                }
            }
            if branches.iter().map(|b| u64::from(b.weight)).sum::<u64>() == 0 {
                check.fail(
                    format!("{key}.split"),
                    "the weights must add up to more than 0",
                );
            }
            Some(RouteTarget::Split(branches))
        }
        (Some(_), Some(_)) => {
            check.fail(
                format!("{key}.split"),
                "give either `upstream` or `split`, not both",
            );
            None
        }
        (None, None) => {
            check.fail(key.to_string(), "needs `upstream` or `split`");
            None
        }
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

fn header_ops(check: &mut Checker, key: &str, raw: Option<RawHeaderOps>) -> HeaderOps {
    let Some(RawHeaderOps { set, remove }) = raw else {
        return HeaderOps::default();
    };
    let mut ops = HeaderOps::default();
    let set: BTreeMap<String, String> = set;
    for (name, value) in &set {
        let field = format!("{key}.set.{name}");
        if let (Some(parsed_name), Some(parsed_value)) = (
            check.header_name(field.clone(), name),
            check.header_value(field.clone(), value),
        ) {
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
