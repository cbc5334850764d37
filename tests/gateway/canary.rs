//! Canary splits: sticky callers (a header, a cookie, the consumer), arms forced by testers,
//! minimal movement when weights change on SIGHUP, per-arm metrics, the arm in the access log.

use crate::reload::reload;
use crate::support::{Gateway, Origin};
use std::collections::BTreeMap;

const CALLERS: usize = 400;

fn two_pools(v1: &Origin, v2: &Origin) -> String {
    format!(
        "upstreams:\n  v1: {{ targets: [{{ address: \"{}\" }}] }}\n  v2: {{ targets: [{{ address: \"{}\" }}] }}\n",
        v1.addr, v2.addr
    )
}

/// The origin that answered `headers`.
fn arm(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let response = gw.request("GET", "/", headers, b"");
    assert_eq!(response.status, 200, "{}", response.text());
    response.header("x-origin").unwrap_or("").to_string()
}

/// The arm of each of `CALLERS` callers, identified by `X-Device`.
fn placement(gw: &Gateway) -> Vec<String> {
    (0..CALLERS)
        .map(|caller| arm(gw, &[("X-Device", &format!("device-{caller}"))]))
        .collect()
}

#[test]
fn sticky_callers_stay_and_a_reweighting_moves_only_what_it_must() {
    let (v1, v2) = (Origin::start("v1"), Origin::start("v2"));
    let gw = Gateway::start(&format!(
        "{}routes:\n  - name: canary\n    split:\n      sticky: \"header:X-Device\"\n      arms:\n\
         \x20       - {{ upstream: v1, weight: 90 }}\n        - {{ upstream: v2, weight: 10 }}\n",
        two_pools(&v1, &v2)
    ));
    let before = placement(&gw);
    let on_v2 = before.iter().filter(|a| *a == "v2").count();
    // 10 % of 400 is 40; a binomial spread of about 6 either way.
    assert!((15..=70).contains(&on_v2), "{on_v2} of {CALLERS} on v2");
    assert_eq!(placement(&gw), before, "a caller keeps its arm");

    reload(
        &gw,
        |text| {
            text.replace("weight: 90", "weight: 80")
                .replace("weight: 10", "weight: 20")
        },
        "success",
        1.0,
    );
    let after = placement(&gw);
    let moved: Vec<(&String, &String)> =
        before.iter().zip(&after).filter(|(a, b)| a != b).collect();
    assert!(
        moved.iter().all(|(from, to)| *from == "v1" && *to == "v2"),
        "nobody leaves the grown arm: {moved:?}"
    );
    // 90/10 -> 80/20 must move a ninth of v1's callers: about 10 % of all.
    assert!((15..=70).contains(&moved.len()), "{} moved", moved.len());

    // A request without the caller key is placed by weight alone.
    let anonymous: BTreeMap<String, usize> = (0..50).fold(BTreeMap::new(), |mut counts, _| {
        *counts.entry(arm(&gw, &[])).or_default() += 1;
        counts
    });
    assert_eq!(anonymous.get("v2"), Some(&10), "{anonymous:?}");
}

#[test]
fn testers_force_an_arm_even_one_without_traffic() {
    let (v1, v2) = (Origin::start("v1"), Origin::start("v2"));
    let gw = Gateway::start(&format!(
        "{}routes:\n\
         \x20 - {{ name: header, match: {{ path_prefix: / }}, split: {{ force: {{ header: X-Canary }}, arms: [{{ upstream: v1, weight: 1 }}, {{ upstream: v2, weight: 0 }}] }} }}\n",
        two_pools(&v1, &v2)
    ));
    for _ in 0..5 {
        assert_eq!(arm(&gw, &[]), "v1");
        assert_eq!(arm(&gw, &[("X-Canary", "v2")]), "v2");
        // A name that is no arm of the split changes nothing.
        assert_eq!(arm(&gw, &[("X-Canary", "v3")]), "v1");
    }
    let lines = gw.access_log(15);
    let forced: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["arm_by"] == "forced")
        .collect();
    assert_eq!(forced.len(), 5, "{lines:?}");
    assert!(forced.iter().all(|line| line["arm"] == "v2"));
    assert!(lines
        .iter()
        .filter(|line| line["arm_by"] == "weighted")
        .all(|line| line["arm"] == "v1" && line["upstream"] == "v1"));
}

#[test]
fn a_cookie_keeps_and_forces_the_arm_and_consumers_are_sticky() {
    let (v1, v2) = (Origin::start("v1"), Origin::start("v2"));
    let consumers: String = (0..40)
        .map(|i| {
            format!(
                "      - {{ consumer: c{i}, sha256: {} }}\n",
                edgegate::auth::api_key::hash_key_hex(&format!("key-{i}"))
            )
        })
        .collect();
    let gw = Gateway::start(&format!(
        "auth:\n  api_keys:\n    keys:\n{consumers}{}routes:\n\
         \x20 - {{ name: keys, match: {{ path_prefix: /keys }}, auth: {{ api_key: true }}, split: {{ sticky: consumer, arms: [{{ upstream: v1, weight: 1 }}, {{ upstream: v2, weight: 1 }}] }} }}\n\
         \x20 - {{ name: cookie, split: {{ sticky: \"cookie:session\", force: {{ cookie: canary }}, arms: [{{ upstream: v1, weight: 1 }}, {{ upstream: v2, weight: 1 }}] }} }}\n",
        two_pools(&v1, &v2)
    ));
    let mut per_arm: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40 {
        let key = format!("key-{i}");
        let first = gw.request("GET", "/keys", &[("X-API-Key", &key)], b"");
        let origin = first.header("x-origin").unwrap().to_string();
        for _ in 0..2 {
            let again = gw.request("GET", "/keys", &[("X-API-Key", &key)], b"");
            assert_eq!(
                again.header("x-origin"),
                Some(origin.as_str()),
                "consumer c{i}"
            );
        }
        *per_arm.entry(origin).or_default() += 1;
    }
    assert!(
        per_arm.len() == 2 && per_arm.values().all(|&n| n >= 5),
        "{per_arm:?}"
    );

    let mut seen = std::collections::BTreeSet::new();
    for session in 0..30 {
        let cookie = format!("theme=dark; session=s{session}");
        let first = arm(&gw, &[("Cookie", &cookie)]);
        assert_eq!(arm(&gw, &[("Cookie", &cookie)]), first);
        seen.insert(first);
        // The forcing cookie wins over the session's arm.
        let forced = format!("{cookie}; canary=v2");
        assert_eq!(arm(&gw, &[("Cookie", &forced)]), "v2");
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn each_arm_has_its_own_requests_errors_and_latency() {
    let (v1, v2) = (Origin::start("v1"), Origin::start("v2"));
    v2.set(|b| b.status = 500);
    let gw = Gateway::start(&format!(
        "{}routes:\n  - {{ name: canary, split: {{ force: {{ header: X-Canary }}, arms: [{{ upstream: v1, weight: 1 }}, {{ upstream: v2, weight: 1 }}] }} }}\n",
        two_pools(&v1, &v2)
    ));
    for _ in 0..3 {
        gw.request("GET", "/", &[("X-Canary", "v1")], b"");
    }
    for _ in 0..2 {
        let response = gw.request("GET", "/", &[("X-Canary", "v2")], b"");
        assert_eq!(response.status, 500);
    }
    let series = |name: &str| gw.metric(name).unwrap_or(0.0);
    gw.wait_metric(
        "edgegate_split_requests_total{arm=\"v2\",route=\"canary\",status=\"5xx\"}",
        2.0,
    );
    assert_eq!(
        series("edgegate_split_requests_total{arm=\"v1\",route=\"canary\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        series("edgegate_split_requests_total{arm=\"v1\",route=\"canary\",status=\"5xx\"}"),
        0.0
    );
    assert_eq!(
        series("edgegate_split_request_duration_seconds_count{arm=\"v1\",route=\"canary\"}"),
        3.0
    );
    assert_eq!(
        series("edgegate_split_request_duration_seconds_count{arm=\"v2\",route=\"canary\"}"),
        2.0
    );
}
