//! Unit tests of the limiter: keys, policies, tiers, refunds, headers, the local store.

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
        sync_interval: None,
    }
}

fn limiter(policies: Vec<PolicySpec>) -> Limiter {
    Limiter::new(&RateLimitSpec {
        store: StoreSpec::Local,
        redis: None,
        max_keys: 10_000,
        policies,
        quotas: Vec::new(),
    })
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
