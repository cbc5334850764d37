//! Validation of `rate_limits` and of route `rate_limits`.

use super::check::{Checker, Names};
use super::model::*;
use super::raw::*;
use crate::ratelimit::algorithm::Algorithm;
use std::collections::BTreeMap;
use std::time::Duration;

/// Validates the top-level `rate_limits` section.
pub(super) fn rate_limit_spec(check: &mut Checker, raw: Option<RawRateLimits>) -> RateLimitSpec {
    let Some(RawRateLimits {
        store,
        redis,
        max_keys,
        policies,
        quotas,
    }) = raw
    else {
        return RateLimitSpec::default();
    };
    let shared = check
        .choice(
            "rate_limits.store".into(),
            store.as_deref(),
            false,
            &[("local", false), ("redis", true)],
        )
        .unwrap_or(false);
    let redis = match redis {
        Some(raw) => redis_spec(check, raw),
        None => {
            if shared {
                check.fail(
                    "rate_limits",
                    "`store: redis` needs `redis: { url: redis://HOST:PORT/DB }`",
                );
            }
            None
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
    if !shared {
        for policy in specs.iter().filter(|p| p.sync_interval.is_some()) {
            check.fail(
                format!("rate_limits.policies.{}.sync", policy.name),
                "applies to `store: redis` (the local store is exact already)",
            );
        }
    }
    let quotas: Vec<QuotaSpec> = quotas
        .into_iter()
        .filter_map(|(name, quota)| quota_spec(check, &name, quota))
        .collect();
    if let Some(quota) = quotas.first() {
        if redis.is_none() && !check.is_invalid("rate_limits.redis") {
            check.fail(
                format!("rate_limits.quotas.{}", quota.name),
                "needs `rate_limits.redis`: quotas are counted in Redis",
            );
        }
    }
    for quota in &quotas {
        if specs.iter().any(|p| p.name == quota.name) {
            check.fail(
                format!("rate_limits.quotas.{}", quota.name),
                "a policy has this name too: a route's `rate_limits` names both",
            );
        }
    }
    RateLimitSpec {
        quotas,
        store: if shared && redis.is_some() {
            StoreSpec::Redis
        } else {
            StoreSpec::Local
        },
        redis,
        max_keys: max_keys as usize,
        policies: specs,
    }
}

/// `tiers: { NAME: LIMIT }` of a policy or quota at `key`: each limit at least 1.
fn tier_limits(
    check: &mut Checker,
    key: &str,
    raw: Option<BTreeMap<String, u64>>,
) -> Vec<(String, u64)> {
    let tiers: Vec<(String, u64)> = raw.unwrap_or_default().into_iter().collect();
    for (tier, limit) in &tiers {
        if *limit == 0 {
            check.fail(format!("{key}.tiers.{tier}"), "must be at least 1");
        }
    }
    tiers
}

/// One `rate_limits.quotas` entry.
fn quota_spec(check: &mut Checker, name: &str, raw: RawQuota) -> Option<QuotaSpec> {
    let key = format!("rate_limits.quotas.{name}");
    let before = check.problem_count();
    let per = check
        .choice(
            format!("{key}.per"),
            Some(&raw.per),
            QuotaPeriod::Day,
            &[("day", QuotaPeriod::Day), ("month", QuotaPeriod::Month)],
        )
        .unwrap_or(QuotaPeriod::Day);
    if raw.limit == 0 {
        check.fail(format!("{key}.limit"), "must be at least 1");
    }
    let key_parts = key_parts(check, &key, raw.key);
    if key_parts.contains(&KeyPart::Route) {
        check.fail(
            format!("{key}.key"),
            "a quota is shared by every route that lists it: `route` is not a quota key part",
        );
    }
    let tiers = tier_limits(check, &key, raw.tiers);
    let time_zone = raw.time_zone.unwrap_or_else(|| "UTC".to_string());
    if let Err(error) = jiff::tz::TimeZone::get(&time_zone) {
        check.fail(
            format!("{key}.time_zone"),
            format!("`{time_zone}` is not a time zone of the tz database (like UTC or Europe/Paris): {error}"),
        );
    }
    if check.refused_since(before, &key) {
        return None;
    }
    Some(QuotaSpec {
        name: name.to_string(),
        per,
        limit: raw.limit,
        key: key_parts,
        tiers,
        time_zone,
    })
}

/// `rate_limits.redis`: exactly one of `url`, `sentinel` and `cluster`, and the credentials.
fn redis_spec(check: &mut Checker, raw: RawRedis) -> Option<RedisSpec> {
    let RawRedis {
        url,
        timeout,
        on_error,
        sentinel,
        cluster,
        username,
        password_file,
        password_env,
        tls,
        ca_file,
    } = raw;
    let before = check.problem_count();
    let rediss = url.as_deref().is_some_and(|u| u.starts_with("rediss://"));
    if tls == Some(false) && rediss {
        check.fail(
            "rate_limits.redis.tls",
            "is false but the url is rediss:// (TLS)",
        );
    }
    let tls = (tls == Some(true) || rediss).then(|| RedisTls {
        ca_pem: ca_file.as_ref().and_then(|path| match std::fs::read(path) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                check.fail(
                    "rate_limits.redis.ca_file",
                    format!("{path} holds no PEM certificate"),
                );
                None
            }
            Err(error) => {
                check.fail(
                    "rate_limits.redis.ca_file",
                    format!("cannot read {path}: {error}"),
                );
                None
            }
        }),
    });
    if tls.is_none() && ca_file.is_some() {
        check.fail(
            "rate_limits.redis.ca_file",
            "only applies with `tls: true` (or a rediss:// url)",
        );
    }
    let topology = match (url, sentinel, cluster) {
        (Some(url), None, None) => {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                check.fail(
                    "rate_limits.redis.url",
                    format!("`{url}` is not a redis://HOST:PORT/DB (or rediss://) URL"),
                );
            } else if let Err(error) = redis::Client::open(url.as_str()) {
                check.fail("rate_limits.redis.url", format!("`{url}`: {error}"));
            }
            RedisTopology::Server { url }
        }
        (None, Some(sentinel), None) => {
            if sentinel.master_name.is_empty() {
                check.fail(
                    "rate_limits.redis.sentinel.master_name",
                    "must name the master the Sentinels watch",
                );
            }
            if !(0..=15).contains(&sentinel.db.unwrap_or(0)) {
                check.fail("rate_limits.redis.sentinel.db", "must be between 0 and 15");
            }
            RedisTopology::Sentinel {
                master_name: sentinel.master_name,
                addresses: host_ports(check, "rate_limits.redis.sentinel", sentinel.addresses),
                db: sentinel.db.unwrap_or(0),
            }
        }
        (None, None, Some(cluster)) => RedisTopology::Cluster {
            addresses: host_ports(check, "rate_limits.redis.cluster", cluster.addresses),
        },
        _ => {
            check.fail(
                "rate_limits.redis",
                "needs exactly one of `url: redis://HOST:PORT/DB`, `sentinel: { master_name, addresses }` and `cluster: { addresses }`",
            );
            check.mark_invalid("rate_limits.redis".into());
            return None;
        }
    };
    let password = match (password_file, password_env) {
        (Some(_), Some(_)) => {
            check.fail(
                "rate_limits.redis",
                "give one of `password_file` and `password_env`, not both",
            );
            None
        }
        (Some(path), None) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
            Err(error) => {
                check.fail(
                    "rate_limits.redis.password_file",
                    format!("cannot read {path}: {error}"),
                );
                None
            }
        },
        (None, Some(variable)) => match std::env::var(&variable) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => {
                check.fail(
                    "rate_limits.redis.password_env",
                    format!("environment variable {variable} is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if password.as_deref() == Some("") {
        check.fail("rate_limits.redis.password_file", "the file is empty");
    }
    if username.is_some() && password.is_none() {
        check.fail(
            "rate_limits.redis.username",
            "needs a password (`password_file` or `password_env`)",
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
    if check.refused_since(before, "rate_limits.redis") {
        return None;
    }
    Some(RedisSpec {
        topology,
        username,
        password: password.map(Secret),
        tls,
        timeout,
        allow_on_error,
    })
}

/// `addresses` of a Sentinel or Cluster section: a non-empty list of `host:port`.
fn host_ports(check: &mut Checker, key: &str, addresses: Vec<String>) -> Vec<String> {
    if addresses.is_empty() {
        check.fail(format!("{key}.addresses"), "list at least one host:port");
    }
    for (index, address) in addresses.iter().enumerate() {
        let port = address
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(port))) if !host.is_empty() && port > 0) {
            check.fail(
                format!("{key}.addresses[{index}]"),
                format!("`{address}` is not a host:port like 10.0.0.1:26379"),
            );
        }
    }
    addresses
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
        sync,
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
    let tiers = tier_limits(check, &key, tiers);
    let sync_interval = sync.and_then(|sync| {
        let field = format!("{key}.sync.interval");
        if !matches!(algorithm, Algorithm::FixedWindow | Algorithm::SlidingWindow) {
            check.fail(
                format!("{key}.sync"),
                "applies to fixed_window and sliding_window (buckets are decided in Redis per request)",
            );
            return None;
        }
        let interval =
            check.duration_at_least(field.clone(), Some(&sync.interval), Duration::ZERO, Duration::from_millis(10));
        if interval > Duration::from_secs(10) {
            check.fail(field, "must be at most 10s");
        }
        Some(interval)
    });
    if check.refused_since(before, &key) {
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
        sync_interval,
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
) -> (Vec<usize>, Vec<usize>) {
    let names = Names::of(&spec.policies, |p| p.name.as_str()).of_section("rate_limits.policies");
    let quota_names = Names::of(&spec.quotas, |q| q.name.as_str()).of_section("rate_limits.quotas");
    let mut policies = Vec::new();
    let mut quotas = Vec::new();
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
        let (found, list) = match (names.get(name), quota_names.get(name)) {
            (Some(policy), _) => (Some(policy), &mut policies),
            (None, Some(quota)) => (Some(quota), &mut quotas),
            (None, None) => (None, &mut policies),
        };
        match found {
            Some(index) if !list.contains(&index) => list.push(index),
            Some(_) => check.fail(
                format!("{key}[{position}]"),
                format!("`{name}` is listed twice"),
            ),
            None => {
                check.resolve(format!("{key}[{position}]"), &names, name, |_| {
                    format!("no policy named `{name}` under rate_limits.policies (or quota under rate_limits.quotas)")
                });
            }
        }
    }
    (policies, quotas)
}
