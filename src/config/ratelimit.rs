//! Validation of `rate_limits` and of route `rate_limits`.

use super::check::{Checker, Names};
use super::model::*;
use super::raw::*;
use crate::ratelimit::algorithm::Algorithm;
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
    let shared = check.choice(
        "rate_limits.store".into(),
        store.as_deref(),
        false,
        &[("local", false), ("redis", true)],
    );
    let store = match shared {
        Some(true) => redis_store(check, redis),
        Some(false) => {
            if redis.is_some() {
                check.fail("rate_limits.redis", "only applies to `store: redis`");
            }
            StoreSpec::Local
        }
        None => StoreSpec::Local,
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
        sentinel,
        cluster,
        username,
        password_file,
        tls,
    }) = raw
    else {
        check.fail(
            "rate_limits",
            "`store: redis` needs `redis: { url: redis://HOST:PORT/DB }`",
        );
        return StoreSpec::Local;
    };
    let fleet = "Redis Sentinel, Cluster, AUTH and TLS come with the fleet work";
    for (key, value) in [
        ("sentinel", &sentinel),
        ("cluster", &cluster),
        ("username", &username),
        ("password_file", &password_file),
        ("tls", &tls),
    ] {
        check.unsupported(format!("rate_limits.redis.{key}"), value, fleet);
    }
    let Some(url) = url else {
        check.fail("rate_limits.redis", "needs `url: redis://HOST:PORT/DB`");
        return StoreSpec::Local;
    };
    if !url.starts_with("redis://") {
        check.fail(
            "rate_limits.redis.url",
            format!("`{url}` is not a redis://HOST:PORT/DB URL"),
        );
    }
    let timeout = check.positive_duration(
        "rate_limits.redis.timeout".into(),
        timeout.as_deref(),
        Duration::from_millis(20),
    );
    let allow_on_error = check
        .choice(
            "rate_limits.redis.on_error".into(),
            on_error.as_deref(),
            true,
            &[("allow", true), ("deny", false)],
        )
        .unwrap_or(true);
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
    let algorithm = check
        .choice(
            format!("{key}.algorithm"),
            Some(&algorithm),
            Algorithm::FixedWindow,
            &[
                ("fixed_window", Algorithm::FixedWindow),
                ("sliding_window", Algorithm::SlidingWindow),
                ("token_bucket", Algorithm::TokenBucket),
                ("leaky_bucket", Algorithm::LeakyBucket),
            ],
        )
        .unwrap_or(Algorithm::FixedWindow);
    let key_parts = key_parts(check, &key, raw_key);
    if limit == 0 {
        check.fail(format!("{key}.limit"), "must be at least 1");
    }
    let window = check.duration_at_least(
        format!("{key}.window"),
        Some(&window),
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
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
    if check.problem_count() != before {
        check.mark_invalid(key);
        return None;
    }
    Some(PolicySpec {
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

/// What a policy counts by: one part or a composite of several.
fn key_parts(check: &mut Checker, key: &str, raw: RawPolicyKey) -> Vec<KeyPart> {
    let parts = match raw {
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
            Some(("header", name)) => match check.header_name(format!("{key}.key"), name) {
                Some(name) => Some(KeyPart::Header(name)),
                // Reported as a bad header name; not a second time as an unknown part.
                None => continue,
            },
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
    key_parts
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
    let names = Names::of(&spec.policies, |p| p.name.as_str()).of_section("rate_limits.policies");
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
        match names.get(name) {
            Some(policy) if !policies.contains(&policy) => policies.push(policy),
            Some(_) => check.fail(
                format!("{key}[{position}]"),
                format!("`{name}` is listed twice"),
            ),
            None => {
                check.resolve(format!("{key}[{position}]"), &names, name, |_| {
                    format!("no policy named `{name}` under rate_limits.policies")
                });
            }
        }
    }
    policies
}
