//! Rate limiting: the algorithms as pure state transitions (`algorithm`), the in-process store
//! (`store`), and the limiter that applies a route's policies to a request: every policy must
//! admit it, and a rejection gives back what the other policies had granted.

pub mod algorithm;
pub mod offenders;
pub mod quota;
pub mod redis;
pub mod store;
pub mod synced;

use crate::auth::Identity;
use crate::config::{KeyPart, PolicySpec, RateLimitSpec, RedisSpec, StoreSpec};
use algorithm::{decide, forget_after_ms, refund, Decision, Quota};
use http::{HeaderMap, HeaderValue};
use redis::{RedisStore, StoreUnavailable};
use std::net::IpAddr;
use std::sync::Arc;
use store::LocalStore;
use synced::{Ask, SyncedStore};

/// What a request is keyed by.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub route: usize,
    /// The route's name: shared stores key by names, which every gateway instance agrees on.
    pub route_name: &'a str,
    pub client_ip: Option<IpAddr>,
    pub identity: Option<&'a Identity>,
    pub headers: &'a HeaderMap,
}

/// The policy that the rate-limit headers describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub policy: usize,
    pub decision: Decision,
}

/// The policies (indexes into `Limiter::policies`) that limited a request; small, as it lives
/// in every request's context.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitedBy {
    /// The policy that refused it.
    pub enforced: Option<u16>,
    /// The first shadow policy over its limit.
    pub shadow: Option<u16>,
    /// The calendar quota that refused it (an index into the quotas).
    pub quota: Option<u16>,
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// False only when an enforcing policy rejected the request.
    pub allowed: bool,
    /// The rejecting policy, or the one closest to its limit.
    pub report: Option<Report>,
    /// Position (in the route's list) of a policy that would have rejected: shadow or enforcing.
    pub limited_slot: Option<usize>,
    /// The first shadow policy over its limit (an index into `Limiter::policies`).
    pub shadow_limited: Option<usize>,
}

enum Store {
    Local(LocalStore),
    Redis {
        store: Box<RedisStore>,
        allow_on_error: bool,
        /// Per policy, its local-first store (`sync`), shared by the policies of one interval.
        synced: Vec<Option<Arc<SyncedStore>>>,
    },
}

/// All policies and their store.
pub struct Limiter {
    pub policies: Vec<PolicySpec>,
    store: Store,
    /// A 128-bit keyed hash of the key parts: collisions are not a practical concern.
    hasher: crate::hashing::Keyed128,
    /// Per policy, the header values that depend only on its configuration.
    fixed_headers: Vec<Vec<FixedHeaders>>,
    /// Per policy, its decisions by outcome and the keys it limited most.
    watch: Vec<PolicyWatch>,
    /// Calendar quotas (`None`: none configured).
    pub quotas: Option<quota::Quotas>,
    /// What requests get while the quotas' Redis is unreachable: true = allowed.
    pub quota_allow_on_error: bool,
}

/// What a policy decided, kept for metrics and `/status`.
struct PolicyWatch {
    decisions: crate::observability::metrics::RateLimitDecisions,
    offenders: offenders::Offenders,
}

/// Keys tracked per policy for `/status`'s top offenders.
const OFFENDERS_TRACKED: usize = 32;

impl Limiter {
    /// A limiter for `spec` with an empty store (Redis is connected on first use).
    pub fn new(spec: &RateLimitSpec) -> Self {
        let quota_link = spec
            .redis
            .as_ref()
            .filter(|_| !spec.quotas.is_empty())
            .map(|redis| {
                (
                    Arc::new(crate::fleet::link::RedisLink::new(redis)),
                    redis.timeout,
                )
            });
        let store = match (&spec.store, &spec.redis) {
            (StoreSpec::Redis, Some(redis)) => Store::Redis {
                store: Box::new(RedisStore::new(redis)),
                allow_on_error: redis.allow_on_error,
                synced: synced_stores(redis, &spec.policies),
            },
            _ => Store::Local(LocalStore::new(spec.max_keys)),
        };
        Limiter {
            policies: spec.policies.clone(),
            store,
            hasher: crate::hashing::Keyed128::new(),
            fixed_headers: spec.policies.iter().map(FixedHeaders::for_policy).collect(),
            watch: spec
                .policies
                .iter()
                .map(|policy| PolicyWatch {
                    decisions: crate::observability::metrics::RateLimitDecisions::new(&policy.name),
                    offenders: offenders::Offenders::new(OFFENDERS_TRACKED),
                })
                .collect(),
            quotas: quota_link
                .map(|(link, timeout)| quota::Quotas::new(&spec.quotas, link, timeout)),
            quota_allow_on_error: spec.redis.as_ref().is_none_or(|r| r.allow_on_error),
        }
    }

    /// The policies live in a shared store (Redis): deciding waits for a round trip.
    pub fn is_shared(&self) -> bool {
        matches!(self.store, Store::Redis { .. })
    }

    /// Applies the route's `policies` (indexes) to one request. Err only when the shared store
    /// is unreachable and `on_error: deny`.
    pub async fn check(
        &self,
        policies: &[usize],
        input: &KeyInput<'_>,
    ) -> Result<Outcome, StoreUnavailable> {
        match self.run(policies, input).await {
            Ok(outcome) => Ok(outcome),
            Err(_)
                if matches!(
                    self.store,
                    Store::Redis {
                        allow_on_error: true,
                        ..
                    }
                ) =>
            {
                Ok(Outcome {
                    allowed: true,
                    report: None,
                    limited_slot: None,
                    shadow_limited: None,
                })
            }
            Err(unavailable) => Err(unavailable),
        }
    }

    async fn run(
        &self,
        policies: &[usize],
        input: &KeyInput<'_>,
    ) -> Result<Outcome, StoreUnavailable> {
        let now = match &self.store {
            Store::Local(local) => local.now_ms(),
            Store::Redis { .. } => 0, // Redis uses its own clock
        };
        // Slots (positions in `policies`) admitted so far: refunded if a later policy rejects.
        // Config validation caps a route at 64 policies.
        let mut admitted: u64 = 0;
        let mut report: Option<Report> = None;
        let mut limited_slot = None;
        let mut shadow_limited = None;
        for (slot, &index) in policies.iter().enumerate() {
            let (Some(policy), Some(watch)) = (self.policies.get(index), self.watch.get(index))
            else {
                continue;
            };
            let policy_quota = quota(policy, input.identity);
            let decision = match self.apply(index, policy_quota, input, now, false).await {
                Ok(decision) => decision,
                Err(unavailable) => {
                    watch.decisions.store_error.inc();
                    return Err(unavailable);
                }
            };
            let candidate = Report {
                policy: index,
                decision,
            };
            if decision.allowed {
                watch.decisions.admitted.inc();
            } else {
                limited_slot.get_or_insert(slot);
                watch.offenders.record(self.key(index, policy, input), || {
                    describe_key(policy, input)
                });
                if policy.shadow {
                    watch.decisions.shadow_limited.inc();
                    shadow_limited.get_or_insert(index);
                } else {
                    watch.decisions.limited.inc();
                    let refunds = policies
                        .iter()
                        .enumerate()
                        .filter(|(slot, _)| admitted >> slot & 1 == 1);
                    for (_, &policy) in refunds {
                        let refund_quota = quota(&self.policies[policy], input.identity);
                        // Best effort: a failed refund only costs the client one request.
                        let _ = self.apply(policy, refund_quota, input, now, true).await;
                    }
                    return Ok(Outcome {
                        allowed: false,
                        report: Some(candidate),
                        limited_slot,
                        shadow_limited,
                    });
                }
            }
            if decision.allowed && slot < 64 {
                admitted |= 1 << slot;
            }
            if report.is_none_or(|current| closer_to_limit(&candidate.decision, &current.decision))
            {
                report = Some(candidate);
            }
        }
        Ok(Outcome {
            allowed: true,
            report,
            limited_slot,
            shadow_limited,
        })
    }

    /// The keys `policy` limited most (at most `n`), most first.
    pub fn top_offenders(&self, policy: usize, n: usize) -> Vec<offenders::Offender> {
        self.watch
            .get(policy)
            .map_or_else(Vec::new, |watch| watch.offenders.top(n))
    }

    /// Which store holds the policies' state: `local` or `redis`.
    pub fn store_name(&self) -> &'static str {
        match self.store {
            Store::Local(_) => "local",
            Store::Redis { .. } => "redis",
        }
    }

    /// Takes (or with `refund`, gives back) one request of `policy` for this request's key.
    async fn apply(
        &self,
        index: usize,
        quota: Quota,
        input: &KeyInput<'_>,
        now: u64,
        refund_it: bool,
    ) -> Result<Decision, StoreUnavailable> {
        let policy = &self.policies[index];
        let ttl = forget_after_ms(policy.algorithm, quota);
        match &self.store {
            Store::Local(local) => {
                let key = self.key(index, policy, input);
                Ok(local.update(key, now, ttl, |state| {
                    if refund_it {
                        *state = refund(policy.algorithm, *state);
                        return Decision {
                            allowed: true,
                            limit: quota.limit,
                            remaining: 0,
                            reset_secs: 0,
                            retry_after_secs: 0,
                        };
                    }
                    let (decision, next) = decide(policy.algorithm, quota, *state, now);
                    *state = next;
                    decision
                }))
            }
            Store::Redis { store, synced, .. } => {
                if let Some(synced) = synced.get(index).and_then(Option::as_ref) {
                    let ask = Ask {
                        key: self.key(index, policy, input),
                        base: &|| synced_base(policy, input),
                        limit: quota.limit,
                        window_ms: quota.window_ms,
                        sliding: policy.algorithm == algorithm::Algorithm::SlidingWindow,
                    };
                    return store.decide_synced(synced, &ask, refund_it).await;
                }
                let key = shared_key(policy, input);
                store
                    .apply(
                        &key,
                        policy.algorithm,
                        quota,
                        ttl + quota.window_ms,
                        refund_it,
                    )
                    .await
            }
        }
    }

    fn key(&self, index: usize, policy: &PolicySpec, input: &KeyInput<'_>) -> u128 {
        self.hasher.hash(|write| {
            write(&(index as u64).to_le_bytes());
            write(&(input.route as u64).to_le_bytes());
            feed_parts(&policy.key, input, write);
        })
    }
}

/// One local-first store per distinct sync interval, started now; a policy without `sync`
/// (or whose store could not start) is decided in Redis per request.
fn synced_stores(redis: &RedisSpec, policies: &[PolicySpec]) -> Vec<Option<Arc<SyncedStore>>> {
    let mut by_interval: Vec<(std::time::Duration, Arc<SyncedStore>)> = Vec::new();
    policies
        .iter()
        .map(|policy| {
            let interval = policy.sync_interval?;
            if let Some((_, store)) = by_interval.iter().find(|(i, _)| *i == interval) {
                return Some(Arc::clone(store));
            }
            match SyncedStore::start(redis, interval) {
                Ok(store) => {
                    by_interval.push((interval, Arc::clone(&store)));
                    Some(store)
                }
                Err(error) => {
                    log::error!(
                        "rate-limit policy {}: cannot start its sync thread ({error}); deciding it in Redis per request",
                        policy.name
                    );
                    None
                }
            }
        })
        .collect()
}

/// `edgegate:rls:{<hash>}`: a local-first key's counters, one hash tag for its windows.
fn synced_base(policy: &PolicySpec, input: &KeyInput<'_>) -> String {
    let hash = digest_hex(&policy.name, Some(input.route_name), &policy.key, input);
    format!("edgegate:rls:{{{hash}}}")
}

/// The key in a shared store: the same for every gateway instance (names, not indexes; a
/// SHA-256, so client-controlled parts can neither collide on purpose nor bloat the key).
fn shared_key(policy: &PolicySpec, input: &KeyInput<'_>) -> String {
    let mut key = String::with_capacity(12 + 32);
    key.push_str("edgegate:rl:");
    key.push_str(&digest_hex(
        &policy.name,
        Some(input.route_name),
        &policy.key,
        input,
    ));
    key
}

/// 32 hex digits of the SHA-256 of a name, a route (policies are per route; quotas are not)
/// and the key parts of this request.
fn digest_hex(name: &str, route: Option<&str>, parts: &[KeyPart], input: &KeyInput<'_>) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    let mut write = |bytes: &[u8]| {
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    };
    write(name.as_bytes());
    if let Some(route) = route {
        write(route.as_bytes());
    }
    feed_parts(parts, input, &mut write);
    let hash = digest.finalize();
    let mut hex = String::with_capacity(32);
    crate::fastfmt::push_hex(&mut hex, &hash[..16]);
    hex
}

/// Feeds a policy's (or quota's) key parts for this request to `write`.
fn feed_parts(
    parts: &[KeyPart],
    input: &KeyInput<'_>,
    mut write: &mut (impl FnMut(&[u8]) + ?Sized),
) {
    {
        for part in parts {
            match part {
                KeyPart::Global => write(b"g"),
                KeyPart::Route => write(b"r"),
                KeyPart::ClientIp => write_ip(&mut write, input.client_ip),
                KeyPart::Consumer => match input.identity.and_then(|i| i.consumer.as_deref()) {
                    Some(consumer) => {
                        write(b"c");
                        write(consumer.as_bytes());
                    }
                    // Anonymous requests are limited per client, never "unlimited because no key".
                    None => write_ip(&mut write, input.client_ip),
                },
                KeyPart::Header(name) => {
                    write(b"h");
                    write(input.headers.get(name).map_or(&b""[..], |v| v.as_bytes()));
                }
                KeyPart::Claim(claim) => {
                    write(b"m");
                    match input.identity.and_then(|i| i.claims.get(claim)) {
                        Some(serde_json::Value::String(text)) => write(text.as_bytes()),
                        Some(other) => write(other.to_string().as_bytes()),
                        None => write(b""),
                    }
                }
            }
        }
    }
}

/// The key as `/status` shows it: `route=api client_ip=203.0.113.7`. Header values of headers
/// that usually carry secrets are shown by a fingerprint only.
fn describe_key(policy: &PolicySpec, input: &KeyInput<'_>) -> String {
    use std::fmt::Write;
    let mut text = format!("route={}", input.route_name);
    let ip = |text: &mut String, ip: Option<IpAddr>| match ip {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            let _ = write!(
                text,
                " client_ip={:x}:{:x}:{:x}:{:x}::/64",
                s[0], s[1], s[2], s[3]
            );
        }
        Some(ip) => {
            let _ = write!(text, " client_ip={ip}");
        }
        None => text.push_str(" client_ip=-"),
    };
    for part in &policy.key {
        match part {
            KeyPart::Global => text.push_str(" global"),
            KeyPart::Route => {}
            KeyPart::ClientIp => ip(&mut text, input.client_ip),
            KeyPart::Consumer => match input.identity.and_then(|i| i.consumer.as_deref()) {
                Some(consumer) => {
                    let _ = write!(text, " consumer={}", shown(consumer));
                }
                None => ip(&mut text, input.client_ip),
            },
            KeyPart::Header(name) => {
                let value = input.headers.get(name).map_or(&b""[..], |v| v.as_bytes());
                let value = String::from_utf8_lossy(value);
                if looks_secret(name.as_str()) {
                    use sha2::{Digest, Sha256};
                    let digest = Sha256::digest(value.as_bytes());
                    let mut hex = String::with_capacity(16);
                    crate::fastfmt::push_hex(&mut hex, &digest[..6]);
                    let _ = write!(text, " header:{name}=sha256:{hex}");
                } else {
                    let _ = write!(text, " header:{name}={}", shown(&value));
                }
            }
            KeyPart::Claim(claim) => {
                let value = match input.identity.and_then(|i| i.claims.get(claim)) {
                    Some(serde_json::Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let _ = write!(text, " claim:{claim}={}", shown(&value));
            }
        }
    }
    text
}

/// At most 64 characters of a client-chosen value.
fn shown(value: &str) -> &str {
    match value.char_indices().nth(64) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// Header names that usually carry credentials.
fn looks_secret(name: &str) -> bool {
    matches!(name, "authorization" | "proxy-authorization" | "cookie")
        || ["token", "secret", "key", "password", "session"]
            .iter()
            .any(|word| name.contains(word))
}

/// IPv4 as is; IPv6 by its /64 (one subscriber usually holds a whole /64).
fn write_ip(write: &mut impl FnMut(&[u8]), ip: Option<IpAddr>) {
    match ip {
        Some(IpAddr::V4(v4)) => {
            write(b"4");
            write(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            write(b"6");
            write(&v6.octets()[..8]);
        }
        None => write(b"-"),
    }
}

/// The policy's numbers for this consumer's tier.
fn quota(policy: &PolicySpec, identity: Option<&Identity>) -> Quota {
    let tier = identity.and_then(|i| i.tier.as_deref());
    let limit = tier
        .and_then(|tier| policy.tiers.iter().find(|(name, _)| name == tier))
        .map_or(policy.limit, |(_, limit)| *limit);
    Quota {
        limit,
        window_ms: policy.window.as_millis() as u64,
        burst: policy.burst.unwrap_or(limit),
    }
}

/// The most headers [`write_headers`] adds.
pub const MAX_HEADERS: usize = 6;

static X_RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
static RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// The rate-limit response headers for `report` (legacy `X-RateLimit-*` and the IETF pair).
pub fn headers(limiter: &Limiter, report: &Report) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut map = HeaderMap::with_capacity(MAX_HEADERS);
    write_headers(limiter, report, &mut map);
    map.into_iter()
        .filter_map(|(name, value)| Some((name?, value)))
        .collect()
}

/// `X-RateLimit-Limit` and `RateLimit-Policy` for one limit a policy can report.
struct FixedHeaders {
    limit: u64,
    limit_value: HeaderValue,
    policy_value: HeaderValue,
}

impl FixedHeaders {
    /// Built once for every limit the policy reports: its own and its tiers', as a count per
    /// window or as a bucket size.
    fn for_policy(policy: &PolicySpec) -> Vec<FixedHeaders> {
        let mut limits: Vec<u64> = std::iter::once(policy.limit)
            .chain(policy.tiers.iter().map(|(_, limit)| *limit))
            .flat_map(|limit| [limit, policy.burst.unwrap_or(limit).max(1)])
            .collect();
        limits.sort_unstable();
        limits.dedup();
        limits
            .into_iter()
            .filter_map(|limit| FixedHeaders::new(policy, limit))
            .collect()
    }

    fn new(policy: &PolicySpec, limit: u64) -> Option<FixedHeaders> {
        let window = policy.window.as_secs().max(1);
        let mut text = Vec::with_capacity(48 + policy.name.len());
        push_quoted(&mut text, &policy.name);
        text.extend_from_slice(b";q=");
        push_number(&mut text, limit);
        text.extend_from_slice(b";w=");
        push_number(&mut text, window);
        Some(FixedHeaders {
            limit,
            limit_value: HeaderValue::from(limit),
            // Policy names are validated at load; one that is still not a header value is left out.
            policy_value: HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()?,
        })
    }
}

/// Appends `n` and returns where it stands in `text`.
fn push_number(text: &mut Vec<u8>, n: u64) -> std::ops::Range<usize> {
    let start = text.len();
    crate::fastfmt::push_number(text, n);
    start..text.len()
}

fn push_quoted(text: &mut Vec<u8>, name: &str) {
    text.push(b'"');
    text.extend_from_slice(name.as_bytes());
    text.push(b'"');
}

/// Writes the rate-limit headers for `report` into `headers`. The limit and the policy come
/// pre-built; the rest are slices of one buffer built without `fmt`, each number written once.
pub fn write_headers(limiter: &Limiter, report: &Report, headers: &mut HeaderMap) {
    let Some(policy) = limiter.policies.get(report.policy) else {
        return;
    };
    let d = &report.decision;
    let built;
    let fixed = match limiter
        .fixed_headers
        .get(report.policy)
        .and_then(|all| all.iter().find(|fixed| fixed.limit == d.limit))
    {
        Some(fixed) => Some(fixed),
        None => {
            built = FixedHeaders::new(policy, d.limit);
            built.as_ref()
        }
    };
    // `"name";r=REMAINING;t=RESET`: the two legacy headers are slices of its numbers.
    let mut text = Vec::with_capacity(64 + policy.name.len());
    push_quoted(&mut text, &policy.name);
    text.extend_from_slice(b";r=");
    let remaining = push_number(&mut text, d.remaining);
    text.extend_from_slice(b";t=");
    let reset = push_number(&mut text, d.reset_secs);
    let state = 0..text.len();
    let retry_after = (!d.allowed).then(|| push_number(&mut text, d.retry_after_secs.max(1)));
    let text = bytes::Bytes::from(text);
    let slice =
        |range: std::ops::Range<usize>| HeaderValue::from_maybe_shared(text.slice(range)).ok();
    let mut put = |name: &http::HeaderName, value: Option<HeaderValue>| {
        if let Some(value) = value {
            let _ = headers.try_insert(name.clone(), value);
        }
    };
    put(&X_RATELIMIT_LIMIT, fixed.map(|f| f.limit_value.clone()));
    put(&X_RATELIMIT_REMAINING, slice(remaining));
    put(&X_RATELIMIT_RESET, slice(reset));
    put(&RATELIMIT_POLICY, fixed.map(|f| f.policy_value.clone()));
    put(&RATELIMIT, slice(state));
    if let Some(retry_after) = retry_after {
        put(&http::header::RETRY_AFTER, slice(retry_after));
    }
}

/// remaining/limit of `a` below that of `b` (compared without division).
fn closer_to_limit(a: &Decision, b: &Decision) -> bool {
    u128::from(a.remaining) * u128::from(b.limit.max(1))
        < u128::from(b.remaining) * u128::from(a.limit.max(1))
}

#[cfg(test)]
mod tests;
