//! Selection across backends: smooth weighted round-robin, drained backends, consistent hashing,
//! least requests, canary splits.

use crate::support::{Gateway, Origin};
use std::collections::HashMap;

fn count_origins(
    gw: &Gateway,
    requests: usize,
    headers: &[(&str, &str)],
) -> (HashMap<String, usize>, Vec<String>) {
    let mut counts = HashMap::new();
    let mut order = Vec::new();
    for _ in 0..requests {
        let response = gw.request("GET", "/", headers, b"");
        assert_eq!(response.status, 200, "{}", response.text());
        let origin = response.header("x-origin").unwrap().to_string();
        *counts.entry(origin.clone()).or_insert(0) += 1;
        order.push(origin);
    }
    (counts, order)
}

#[test]
fn weighted_round_robin_splits_by_weight_and_interleaves() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let drained = Origin::start("drained");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: weighted_round_robin\n    targets:\n      - {{ address: \"{}\", weight: 3 }}\n      - {{ address: \"{}\", weight: 1 }}\n      - {{ address: \"{}\", weight: 0 }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        a.addr, b.addr, drained.addr
    ));
    let (counts, order) = count_origins(&gw, 400, &[]);
    let share = counts["a"] as f64 / 400.0;
    assert!(
        (0.70..=0.80).contains(&share),
        "a got {share} of traffic: {counts:?}"
    );
    assert_eq!(drained.hits(), 0, "weight 0 means drained");
    // Smooth: never two b's in a row, never four a's in a row.
    let joined = order.join("");
    assert!(
        !joined.contains("bb") && !joined.contains("aaaa"),
        "bunched: {joined}"
    );
}

#[test]
fn round_robin_alternates_ignoring_weights() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    targets:\n      - {{ address: \"{}\", weight: 5 }}\n      - {{ address: \"{}\" }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        a.addr, b.addr
    ));
    let (counts, _) = count_origins(&gw, 100, &[]);
    assert!((45..=55).contains(&counts["a"]), "{counts:?}");
}

#[test]
fn consistent_hash_on_a_header_is_sticky_and_spreads_keys() {
    let origins: Vec<Origin> = (0..3).map(|i| Origin::start(&format!("o{i}"))).collect();
    let targets: String = origins
        .iter()
        .map(|o| format!("      - {{ address: \"{}\" }}\n", o.addr))
        .collect();
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: consistent_hash\n    hash_key: header:x-user\n    targets:\n{targets}routes:\n  - {{ name: all, upstream: app }}\n"
    ));
    let mut seen_backends = std::collections::HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let (counts, _) = count_origins(&gw, 4, &[("X-User", &user)]);
        assert_eq!(counts.len(), 1, "{user} moved between backends: {counts:?}");
        seen_backends.extend(counts.into_keys());
    }
    assert_eq!(
        seen_backends.len(),
        3,
        "30 keys should reach all 3 backends"
    );
}

#[test]
fn least_requests_avoids_a_busy_backend() {
    let slow = Origin::start("slow");
    let fast = Origin::start("fast");
    slow.set(|b| b.delay = std::time::Duration::from_millis(1500));
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: least_requests\n    targets:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        slow.addr, fast.addr
    ));
    let proxy = gw.proxy;
    // Occupy the slow backend with one request in flight, then everything else must go to the fast one.
    let busy: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || crate::support::get(proxy, "/")))
        .collect();
    assert!(crate::support::wait_until(
        std::time::Duration::from_secs(5),
        || slow.hits() >= 1
    ));
    let (counts, _) = count_origins(&gw, 10, &[]);
    assert_eq!(counts.get("fast"), Some(&10), "{counts:?}");
    for request in busy {
        assert_eq!(request.join().unwrap().status, 200);
    }
}

#[test]
fn split_routes_send_a_weighted_share_to_each_pool() {
    let v1 = Origin::start("v1");
    let v2 = Origin::start("v2");
    let gw = Gateway::start(&format!(
        "upstreams:\n  v1: {{ targets: [{{ address: \"{}\" }}] }}\n  v2: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - name: canary\n    split:\n      - {{ upstream: v1, weight: 9 }}\n      - {{ upstream: v2, weight: 1 }}\n",
        v1.addr, v2.addr
    ));
    let (counts, _) = count_origins(&gw, 200, &[]);
    assert!((170..=190).contains(&counts["v1"]), "{counts:?}");
    assert!((10..=30).contains(&counts["v2"]), "{counts:?}");
}

#[test]
fn consistent_hash_on_a_jwt_claim_keeps_a_tenant_on_one_backend() {
    let origins: Vec<Origin> = (0..3).map(|i| Origin::start(&format!("o{i}"))).collect();
    let targets: String = origins
        .iter()
        .map(|o| format!("      - {{ address: \"{}\" }}\n", o.addr))
        .collect();
    let secret = "an-hmac-secret-that-is-long-enough-for-hs256";
    let dir = crate::support::temp_dir();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n      main: {{ algorithms: [HS256], secret_file: {} }}\n\
         upstreams:\n  app:\n    selection: consistent_hash\n    hash_key: claim:tenant\n    targets:\n{targets}\
         routes:\n  - {{ name: all, upstream: app, auth: {{ jwt: main }} }}\n",
        secret_file.display()
    ));
    let mut backends = std::collections::HashSet::new();
    for tenant in 0..30 {
        let token = edgegate::auth::mint::mint(&edgegate::auth::mint::MintRequest {
            algorithm: "HS256".into(),
            key: secret.as_bytes().to_vec(),
            subject: Some(format!("user-{tenant}")),
            claims: vec![format!("tenant=t{tenant}")],
            ttl: std::time::Duration::from_secs(600),
            ..Default::default()
        })
        .unwrap();
        let (counts, _) = count_origins(&gw, 3, &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(
            counts.len(),
            1,
            "tenant t{tenant} moved between backends: {counts:?}"
        );
        backends.extend(counts.into_keys());
    }
    assert_eq!(backends.len(), 3, "30 tenants should reach all 3 backends");
}
