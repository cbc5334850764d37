//! Rate limiting: the algorithms as pure state transitions (`algorithm`), the in-process store
//! (`store`), and the limiter that applies a route's policies to a request: every policy must
//! admit it, and a rejection gives back what the other policies had granted.

pub mod algorithm;
pub mod redis;
pub mod store;

use crate::auth::Identity;
use crate::config::{KeyPart, PolicySpec, RateLimitSpec, StoreSpec};
use algorithm::{decide, forget_after_ms, refund, Decision, Quota};
use http::{HeaderMap, HeaderValue};
use redis::{RedisStore, StoreUnavailable};
use std::net::IpAddr;
use store::LocalStore;

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

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// False only when an enforcing policy rejected the request.
    pub allowed: bool,
    /// The rejecting policy, or the one closest to its limit.
    pub report: Option<Report>,
    /// Position (in the route's list) of a policy that would have rejected: shadow or enforcing.
    pub limited_slot: Option<usize>,
}

enum Store {
    Local(LocalStore),
    Redis {
        store: Box<RedisStore>,
        allow_on_error: bool,
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
}

impl Limiter {
    /// A limiter for `spec` with an empty store (Redis is connected on first use).
    pub fn new(spec: &RateLimitSpec) -> Result<Self, String> {
        let store = match &spec.store {
            StoreSpec::Local => Store::Local(LocalStore::new(spec.max_keys)),
            StoreSpec::Redis {
                url,
                timeout,
                allow_on_error,
            } => Store::Redis {
                store: Box::new(RedisStore::new(url, *timeout)?),
                allow_on_error: *allow_on_error,
            },
        };
        Ok(Limiter {
            policies: spec.policies.clone(),
            store,
            hasher: crate::hashing::Keyed128::new(),
            fixed_headers: spec.policies.iter().map(FixedHeaders::for_policy).collect(),
        })
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
        for (slot, &index) in policies.iter().enumerate() {
            let Some(policy) = self.policies.get(index) else {
                continue;
            };
            let policy_quota = quota(policy, input.identity);
            let decision = self.apply(index, policy_quota, input, now, false).await?;
            let candidate = Report {
                policy: index,
                decision,
            };
            if !decision.allowed {
                limited_slot.get_or_insert(slot);
                if !policy.shadow {
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
                    });
                }
            } else if slot < 64 {
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
        })
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
            Store::Redis { store, .. } => {
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
            feed_parts(policy, input, write);
        })
    }
}

/// The key in a shared store: the same for every gateway instance (names, not indexes; a
/// SHA-256, so client-controlled parts can neither collide on purpose nor bloat the key).
fn shared_key(policy: &PolicySpec, input: &KeyInput<'_>) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    let mut write = |bytes: &[u8]| {
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    };
    write(policy.name.as_bytes());
    write(input.route_name.as_bytes());
    feed_parts(policy, input, &mut write);
    let hash = digest.finalize();
    let mut key = String::with_capacity(12 + 32);
    key.push_str("edgegate:rl:");
    crate::fastfmt::push_hex(&mut key, &hash[..16]);
    key
}

/// Feeds the policy's key parts for this request to `write`.
fn feed_parts(
    policy: &PolicySpec,
    input: &KeyInput<'_>,
    mut write: &mut (impl FnMut(&[u8]) + ?Sized),
) {
    {
        for part in &policy.key {
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
mod tests {
    use super::*;
    use crate::ratelimit::algorithm::Algorithm;
    use std::time::Duration;

    fn policy(name: &str, limit: u64, key: Vec<KeyPart>, shadow: bool) -> PolicySpec {
        PolicySpec {
            name: name.into(),
            algorithm: Algorithm::FixedWindow,
            key,
            limit,
            window: Duration::from_secs(60),
            burst: None,
            tiers: vec![("gold".into(), 5)],
            shadow,
        }
    }

    fn limiter(policies: Vec<PolicySpec>) -> Limiter {
        Limiter::new(&RateLimitSpec {
            store: StoreSpec::Local,
            max_keys: 10_000,
            policies,
        })
        .unwrap()
    }

    /// The local store never awaits, so a current-thread runtime drives it to completion.
    fn check(limiter: &Limiter, policies: &[usize], input: &KeyInput<'_>) -> Outcome {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(limiter.check(policies, input))
            .unwrap()
    }

    fn input<'a>(ip: &str, identity: Option<&'a Identity>, headers: &'a HeaderMap) -> KeyInput<'a> {
        KeyInput {
            route: 0,
            route_name: "r",
            client_ip: ip.parse().ok(),
            identity,
            headers,
        }
    }

    #[test]
    fn a_rejection_refunds_the_other_policies() {
        let headers = HeaderMap::new();
        let l = limiter(vec![
            policy("wide", 3, vec![KeyPart::Global], false),
            policy("narrow", 1, vec![KeyPart::ClientIp], false),
        ]);
        let a = input("10.0.0.1", None, &headers);
        assert!(check(&l, &[0, 1], &a).allowed);
        let rejected = check(&l, &[0, 1], &a);
        assert!(!rejected.allowed);
        assert_eq!(rejected.report.map(|r| r.policy), Some(1));
        // The global policy did not pay for the rejected request: two more clients fit.
        assert!(check(&l, &[0, 1], &input("10.0.0.2", None, &headers)).allowed);
        assert!(check(&l, &[0, 1], &input("10.0.0.3", None, &headers)).allowed);
        assert!(!check(&l, &[0, 1], &input("10.0.0.4", None, &headers)).allowed);
    }

    #[test]
    fn a_rejection_refunds_every_admitting_policy_however_many() {
        let headers = HeaderMap::new();
        // Twelve global policies of 2, then one per-IP policy of 1.
        let mut policies: Vec<PolicySpec> = (0..12)
            .map(|i| policy(&format!("wide{i}"), 2, vec![KeyPart::Global], false))
            .collect();
        policies.push(policy("narrow", 1, vec![KeyPart::ClientIp], false));
        let l = limiter(policies);
        let route: Vec<usize> = (0..13).collect();
        let a = input("10.0.0.1", None, &headers);
        assert!(check(&l, &route, &a).allowed);
        for _ in 0..5 {
            assert!(!check(&l, &route, &a).allowed);
        }
        // Had any global policy paid for a rejected request, the second client would not fit.
        assert!(check(&l, &route, &input("10.0.0.2", None, &headers)).allowed);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64_and_anonymous_consumers_by_ip() {
        let headers = HeaderMap::new();
        let l = limiter(vec![policy("p", 1, vec![KeyPart::Consumer], false)]);
        assert!(check(&l, &[0], &input("2001:db8:1:2::1", None, &headers)).allowed);
        assert!(
            !check(&l, &[0], &input("2001:db8:1:2::ffff", None, &headers)).allowed,
            "same /64"
        );
        assert!(
            check(&l, &[0], &input("2001:db8:1:3::1", None, &headers)).allowed,
            "another /64"
        );
    }

    #[test]
    fn tiers_set_the_limit_and_shadow_never_rejects() {
        let headers = HeaderMap::new();
        let gold = Identity {
            consumer: Some("acme".into()),
            tier: Some("gold".into()),
            ..Identity::default()
        };
        let l = limiter(vec![
            policy("per_consumer", 1, vec![KeyPart::Consumer], false),
            policy("shadow", 1, vec![KeyPart::Global], true),
        ]);
        let request = input("10.0.0.1", Some(&gold), &headers);
        for _ in 0..5 {
            let outcome = check(&l, &[0, 1], &request);
            assert!(outcome.allowed, "gold gets 5");
        }
        let outcome = check(&l, &[0, 1], &request);
        assert!(!outcome.allowed);
        let shadow_only = check(&l, &[1], &request);
        assert!(shadow_only.allowed, "shadow counts but never rejects");
        assert_eq!(shadow_only.limited_slot, Some(0));
        assert_eq!(shadow_only.report.map(|r| r.decision.remaining), Some(0));
    }

    #[test]
    fn composite_keys_keep_their_parts_apart() {
        let l = limiter(vec![policy(
            "tenant_ip",
            1,
            vec![
                KeyPart::ClientIp,
                KeyPart::Header(http::HeaderName::from_static("x-tenant")),
            ],
            false,
        )]);
        let mut a = HeaderMap::new();
        a.insert("x-tenant", "a".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("x-tenant", "b".parse().unwrap());
        assert!(check(&l, &[0], &input("10.0.0.1", None, &a)).allowed);
        assert!(
            check(&l, &[0], &input("10.0.0.1", None, &b)).allowed,
            "other tenant, same IP"
        );
        assert!(
            check(&l, &[0], &input("10.0.0.2", None, &a)).allowed,
            "same tenant, other IP"
        );
        assert!(!check(&l, &[0], &input("10.0.0.1", None, &a)).allowed);
    }

    #[test]
    fn headers_carry_the_decision_and_retry_after_only_when_refused() {
        let l = limiter(vec![policy("per_ip", 10, vec![KeyPart::ClientIp], false)]);
        let report = |allowed: bool| Report {
            policy: 0,
            decision: Decision {
                allowed,
                limit: 10,
                remaining: if allowed { 7 } else { 0 },
                reset_secs: 42,
                retry_after_secs: if allowed { 0 } else { 5 },
            },
        };
        let value = |headers: &[(http::HeaderName, http::HeaderValue)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        let allowed = headers(&l, &report(true));
        assert_eq!(value(&allowed, "x-ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(
            value(&allowed, "x-ratelimit-remaining").as_deref(),
            Some("7")
        );
        assert_eq!(value(&allowed, "x-ratelimit-reset").as_deref(), Some("42"));
        assert_eq!(
            value(&allowed, "ratelimit-policy").as_deref(),
            Some("\"per_ip\";q=10;w=60")
        );
        assert_eq!(
            value(&allowed, "ratelimit").as_deref(),
            Some("\"per_ip\";r=7;t=42")
        );
        assert_eq!(value(&allowed, "retry-after"), None);
        assert_eq!(allowed.len(), 5);

        let refused = headers(&l, &report(false));
        assert_eq!(value(&refused, "retry-after").as_deref(), Some("5"));
        assert_eq!(
            value(&refused, "ratelimit").as_deref(),
            Some("\"per_ip\";r=0;t=42")
        );
        assert_eq!(refused.len(), MAX_HEADERS);

        // A limit nothing was pre-built for (another tier, a bucket size) is built on the spot.
        let mut other = report(true);
        other.decision.limit = 77;
        let other = headers(&l, &other);
        assert_eq!(value(&other, "x-ratelimit-limit").as_deref(), Some("77"));
        assert_eq!(
            value(&other, "ratelimit-policy").as_deref(),
            Some("\"per_ip\";q=77;w=60")
        );
    }

    #[test]
    fn fixed_values_cover_every_tier_and_bucket_size() {
        let mut spec = policy("p", 10, vec![KeyPart::ClientIp], false);
        spec.burst = Some(25);
        spec.tiers = vec![("gold".into(), 100)];
        let limits: Vec<u64> = FixedHeaders::for_policy(&spec)
            .iter()
            .map(|fixed| fixed.limit)
            .collect();
        assert_eq!(limits, [10, 25, 100]);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn composite() -> PolicySpec {
            policy(
                "p",
                10,
                vec![
                    KeyPart::Header(http::HeaderName::from_static("x-a")),
                    KeyPart::Header(http::HeaderName::from_static("x-b")),
                    KeyPart::Consumer,
                    KeyPart::Claim("team".into()),
                    KeyPart::ClientIp,
                ],
                false,
            )
        }

        /// Header values as a client may send them (visible ASCII and spaces).
        fn header_value() -> impl Strategy<Value = String> {
            "[ -~]{0,12}"
        }

        fn claim() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                ".{0,8}".prop_map(serde_json::Value::from),
                prop::collection::vec(".{0,3}", 0..3).prop_map(serde_json::Value::from),
            ]
        }

        type Parts = (
            String,
            String,
            Option<String>,
            Option<serde_json::Value>,
            Option<std::net::IpAddr>,
        );

        fn parts() -> impl Strategy<Value = Parts> {
            (
                header_value(),
                header_value(),
                prop::option::of(".{0,8}"),
                prop::option::of(claim()),
                prop::option::of(any::<std::net::IpAddr>()),
            )
        }

        /// The local and the shared key of `parts`.
        fn keys(limiter: &Limiter, policy: &PolicySpec, parts: &Parts) -> (u128, String) {
            let (a, b, consumer, team, ip) = parts;
            let mut headers = HeaderMap::new();
            headers.insert("x-a", a.parse().unwrap());
            headers.insert("x-b", b.parse().unwrap());
            let mut claims = serde_json::Map::new();
            if let Some(team) = team {
                claims.insert("team".into(), team.clone());
            }
            let identity = Identity {
                consumer: consumer.clone(),
                claims,
                ..Identity::default()
            };
            let input = KeyInput {
                route: 0,
                route_name: "r",
                client_ip: *ip,
                identity: Some(&identity),
                headers: &headers,
            };
            (limiter.key(0, policy, &input), shared_key(policy, &input))
        }

        proptest! {
            #[test]
            fn fuzz_rate_limit_keys_are_stable_and_keep_composite_parts_apart(
                first in parts(),
                second in parts(),
            ) {
                let policy = composite();
                let limiter = limiter(vec![policy.clone()]);
                let (local, shared) = keys(&limiter, &policy, &first);
                prop_assert_eq!(keys(&limiter, &policy, &first), (local, shared.clone()));
                prop_assert!(shared.starts_with("edgegate:rl:") && shared.len() == 12 + 32, "{}", shared);
                // The parts that decide the key: an anonymous identity falls back to the IP, and
                // a missing claim is the empty string.
                let deciding = |p: &Parts| {
                    let team = match &p.3 {
                        Some(serde_json::Value::String(text)) => text.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    let ip = p.4.map(|ip| match ip {
                        std::net::IpAddr::V6(v6) => (6, v6.segments()[..4].to_vec()),
                        std::net::IpAddr::V4(v4) => (4, v4.octets().iter().map(|&o| u16::from(o)).collect()),
                    });
                    (p.0.clone(), p.1.clone(), p.2.clone(), team, ip)
                };
                if deciding(&first) != deciding(&second) {
                    let (other_local, other_shared) = keys(&limiter, &policy, &second);
                    prop_assert_ne!(local, other_local);
                    prop_assert_ne!(shared, other_shared);
                }
            }
        }
    }
}
