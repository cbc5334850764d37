//! Validation of `rate_limits` and of route `rate_limits`.

use super::model::*;
use super::raw::*;
use super::units::parse_duration;
use super::validate::Checker;
use crate::ratelimit::algorithm::Algorithm;
use std::collections::HashMap;
use std::time::Duration;

/// Validates the top-level `rate_limits` section.
pub(super) fn rate_limit_spec(check: &mut Checker, raw: Option<RawRateLimits>) -> RateLimitSpec {
    let Some(RawRateLimits {
        store,
        redis,
        max_keys,
        policies,
    }) = raw
    else {
        return RateLimitSpec::default();
    };
    let store = match store.as_deref().unwrap_or("local") {
        "local" => {
            if redis.is_some() {
                check.fail("rate_limits.redis", "only applies to `store: redis`");
            }
            StoreSpec::Local
        }
        "redis" => redis_store(check, redis),
        other => {
            check.fail(
                "rate_limits.store",
                format!("`{other}` is not one of: local, redis"),
            );
            StoreSpec::Local
        }
    };
    let max_keys = max_keys.unwrap_or(1_000_000);
    if !(1_000..=100_000_000).contains(&max_keys) {
        check.fail("rate_limits.max_keys", "must be between 1000 and 100000000");
    }
    let mut specs = Vec::with_capacity(policies.len());
    for (name, policy) in policies {
        if let Some(spec) = policy_spec(check, &name, policy) {
            specs.push(spec);
        }
    }
    RateLimitSpec {
        store,
        max_keys: max_keys as usize,
        policies: specs,
    }
}

fn redis_store(check: &mut Checker, raw: Option<RawRedis>) -> StoreSpec {
    let Some(RawRedis {
        url,
        timeout,
        on_error,
    }) = raw
    else {
        check.fail(
            "rate_limits",
            "`store: redis` needs `redis: { url: redis://HOST:PORT/DB }`",
        );
        return StoreSpec::Local;
    };
    if !url.starts_with("redis://") {
        check.fail(
            "rate_limits.redis.url",
            format!("`{url}` is not a redis://HOST:PORT/DB URL"),
        );
    }
    let timeout = match timeout.as_deref().map(parse_duration) {
        None => Duration::from_millis(20),
        Some(Ok(timeout)) if !timeout.is_zero() => timeout,
        Some(Ok(_)) => {
            check.fail("rate_limits.redis.timeout", "must be greater than zero");
            Duration::from_millis(20)
        }
        Some(Err(message)) => {
            check.fail("rate_limits.redis.timeout", message);
            Duration::from_millis(20)
        }
    };
    let allow_on_error = match on_error.as_deref().unwrap_or("allow") {
        "allow" => true,
        "deny" => false,
        other => {
            check.fail(
                "rate_limits.redis.on_error",
                format!("`{other}` is not one of: allow, deny"),
            );
            true
        }
    };
    StoreSpec::Redis {
        url,
        timeout,
        allow_on_error,
    }
}

fn policy_spec(check: &mut Checker, name: &str, raw: RawPolicy) -> Option<PolicySpec> {
    let key = format!("rate_limits.policies.{name}");
    let RawPolicy {
        algorithm,
        key: raw_key,
        limit,
        window,
        burst,
        tiers,
        shadow,
    } = raw;
    let before = check.problem_count();
    let algorithm = match algorithm.as_str() {
        "fixed_window" => Algorithm::FixedWindow,
        "sliding_window" => Algorithm::SlidingWindow,
        "token_bucket" => Algorithm::TokenBucket,
        "leaky_bucket" => Algorithm::LeakyBucket,
        other => {
            check.fail(
                format!("{key}.algorithm"),
                format!("`{other}` is not one of: fixed_window, sliding_window, token_bucket, leaky_bucket"),
            );
            Algorithm::FixedWindow
        }
    };
    let parts = match raw_key {
        RawPolicyKey::One(part) => vec![part],
        RawPolicyKey::Composite(parts) => parts,
    };
    if parts.is_empty() {
        check.fail(format!("{key}.key"), "name at least one key part");
    }
    let mut key_parts = Vec::with_capacity(parts.len());
    for part in &parts {
        let parsed = match part.split_once(':') {
            None => match part.as_str() {
                "global" => Some(KeyPart::Global),
                "client_ip" => Some(KeyPart::ClientIp),
                "consumer" => Some(KeyPart::Consumer),
                "route" => Some(KeyPart::Route),
                _ => None,
            },
            Some(("header", name)) => check
                .header_name(format!("{key}.key"), name)
                .map(KeyPart::Header),
            Some(("claim", name)) if !name.is_empty() => Some(KeyPart::Claim(name.to_string())),
            _ => None,
        };
        match parsed {
            Some(part) => key_parts.push(part),
            None => check.fail(
                format!("{key}.key"),
                format!("`{part}` is not one of: global, client_ip, consumer, route, header:NAME, claim:NAME"),
            ),
        }
    }
    if limit == 0 {
        check.fail(format!("{key}.limit"), "must be at least 1");
    }
    let window = match parse_duration(&window) {
        Ok(window) if window >= Duration::from_millis(100) => window,
        Ok(_) => {
            check.fail(format!("{key}.window"), "must be at least 100ms");
            Duration::from_secs(1)
        }
        Err(message) => {
            check.fail(format!("{key}.window"), message);
            Duration::from_secs(1)
        }
    };
    if let Some(burst) = burst {
        if !matches!(algorithm, Algorithm::TokenBucket | Algorithm::LeakyBucket) {
            check.fail(
                format!("{key}.burst"),
                "only applies to token_bucket and leaky_bucket",
            );
        } else if burst == 0 {
            check.fail(format!("{key}.burst"), "must be at least 1");
        }
    }
    let tiers: Vec<(String, u64)> = tiers.unwrap_or_default().into_iter().collect();
    for (tier, tier_limit) in &tiers {
        if *tier_limit == 0 {
            check.fail(format!("{key}.tiers.{tier}"), "must be at least 1");
        }
    }
    (check.problem_count() == before).then(|| PolicySpec {
        name: name.to_string(),
        algorithm,
        key: key_parts,
        limit,
        window,
        burst,
        tiers,
        shadow: shadow.unwrap_or(false),
    })
}

/// Most policies one route may list: the limiter tracks which ones admitted a request in a
/// 64-bit mask, to give their grant back when a later one refuses.
pub const MAX_ROUTE_POLICIES: usize = 64;

/// Resolves a route's `rate_limits` to policy indexes.
pub(super) fn route_policies(
    check: &mut Checker,
    key: &str,
    raw: Option<Vec<String>>,
    spec: &RateLimitSpec,
) -> Vec<usize> {
    let index: HashMap<&str, usize> = spec
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut policies = Vec::new();
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_ROUTE_POLICIES {
        check.fail(
            key.to_string(),
            format!(
                "{} policies listed; a route may list at most {MAX_ROUTE_POLICIES}",
                raw.len()
            ),
        );
    }
    for (position, name) in raw.iter().enumerate() {
        match index.get(name.as_str()) {
            Some(&policy) if !policies.contains(&policy) => policies.push(policy),
            Some(_) => check.fail(
                format!("{key}[{position}]"),
                format!("`{name}` is listed twice"),
            ),
            None => check.fail(
                format!("{key}[{position}]"),
                format!("no policy named `{name}` under rate_limits.policies"),
            ),
        }
    }
    policies
}
