//! Aggregation routes: one JWT-protected request fans out to several real origins (each sees
//! its templated path, the caller's request id and forwarded claims), failures are listed
//! under `meta.failed`, required parts fail the whole answer, the answer is cached per caller,
//! rate limits count the request once, and concurrent callers each get their own answer.

use crate::auth::write;
use crate::cache::x_cache;
use crate::header_templates::{expires, token, SECRET};
use crate::support::{temp_dir, wait_until, Gateway, Origin, Response};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A gateway with the `main` HS256 provider (forwarding `sub` as `X-User-ID`), `upstreams`
/// and `routes` as given, and any `extra` top-level sections.
fn gateway(upstreams: &str, routes: &str, extra: &str) -> Gateway {
    let dir = temp_dir();
    let secret = write(&dir, "hs.secret", SECRET.as_bytes());
    Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n      main: {{ algorithms: [HS256], secret_file: {}, forward_claims: {{ sub: X-User-ID }} }}\n\
         {extra}upstreams:\n{upstreams}routes:\n{routes}",
        secret.display()
    ))
}

fn upstream(name: &str, origin: &Origin) -> String {
    format!(
        "  {name}: {{ targets: [{{ address: \"{}\" }}] }}\n",
        origin.addr
    )
}

/// The users, orders and notes services, and their `upstreams` entries.
fn three_services() -> (Origin, Origin, Origin, String) {
    let (users, orders, notes) = (
        Origin::start("users"),
        Origin::start("orders"),
        Origin::start("notes"),
    );
    let upstreams =
        upstream("users", &users) + &upstream("orders", &orders) + &upstream("notes", &notes);
    (users, orders, notes, upstreams)
}

fn bearer(sub: &str) -> String {
    token(json!({"sub": sub, "tenant": "acme corp", "exp": expires()}))
}

fn get(gw: &Gateway, target: &str, sub: &str) -> Response {
    gw.request("GET", target, &[("Authorization", &bearer(sub))], b"")
}

const DASHBOARD: &str = "  - name: dashboard\n\
    \x20   match: { path_template: \"/api/v1/users/{id}/dashboard\", methods: [GET] }\n\
    \x20   auth: { jwt: main }\n\
    \x20   aggregate:\n\
    \x20     timeout: 2s\n\
    \x20     parts:\n\
    \x20       profile: { upstream: users, path: \"/users/{claim.sub}/profile\", required: true }\n\
    \x20       orders: { upstream: orders, path: \"/orders?user={claim.sub}&limit={query.limit}\" }\n\
    \x20       notes: { upstream: notes, path: \"/notes/{path.id}\", headers: { X-Tenant: \"{claim.tenant}\" } }\n";

#[test]
fn one_request_fans_out_to_three_origins_with_templated_paths() {
    let (users, orders, notes, upstreams) = three_services();
    let gw = gateway(&upstreams, DASHBOARD, "");
    let response = gw.request(
        "GET",
        "/api/v1/users/7/dashboard?limit=5",
        &[
            ("Authorization", &bearer("al/ice")),
            ("X-Request-ID", "agg-1"),
            ("X-User-ID", "forged"),
            ("Cookie", "session=secret"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-request-id"), Some("agg-1"));
    let answer = response.json();
    let data = &answer["data"];
    // Each value is percent-encoded into its place: the `/` of the subject stays in its segment.
    assert_eq!(data["profile"]["target"], "/users/al%2Fice/profile");
    assert_eq!(data["orders"]["target"], "/orders?user=al%2Fice&limit=5");
    assert_eq!(data["notes"]["target"], "/notes/7");
    assert_eq!(data["notes"]["headers"]["x-tenant"], "acme corp");
    for part in ["profile", "orders", "notes"] {
        let seen = &data[part]["headers"];
        assert_eq!(seen["x-request-id"], "agg-1", "{part}: {seen}");
        assert_eq!(
            seen["x-user-id"], "al/ice",
            "{part}: the verified claim, not the client's copy"
        );
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{part}");
        assert_eq!(seen["x-forwarded-proto"], "http", "{part}");
        assert!(
            seen["x-forwarded-host"].as_str().is_some(),
            "{part}: {seen}"
        );
        assert_eq!(data[part]["method"], "GET");
        // The part speaks to its backend, and carries none of the caller's credentials.
        assert!(
            seen["host"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{seen}"
        );
        assert!(seen.get("authorization").is_none(), "{part}: {seen}");
        assert!(seen.get("cookie").is_none(), "{part}: {seen}");
    }
    assert_eq!(answer["meta"]["failed"], json!([]));
    assert!(answer["meta"]["duration_ms"].as_u64().is_some());
    // The answer lists the parts in configuration order.
    let text = response.text();
    assert!(text.find("\"profile\"") < text.find("\"orders\""));
    assert!(text.find("\"orders\"") < text.find("\"notes\""));

    // Without a token nothing reaches any origin.
    let hits = users.hits() + orders.hits() + notes.hits();
    let refused = gw.get("/api/v1/users/7/dashboard");
    assert_eq!(refused.status, 401);
    assert_eq!(users.hits() + orders.hits() + notes.hits(), hits);
    // A missing query value leaves that part out rather than asking for `limit=`.
    let without_limit = get(&gw, "/api/v1/users/7/dashboard", "bob").json();
    assert_eq!(without_limit["data"]["orders"], Value::Null);
    assert_eq!(
        without_limit["meta"]["failed"],
        json!([{"part": "orders", "reason": "unresolved {query.limit}"}])
    );
    let line = gw
        .access_log(4)
        .into_iter()
        .find(|line| line["request_id"] == "agg-1")
        .expect("the aggregated request is logged");
    assert_eq!(line["route"], "dashboard");
    let parts: Vec<(&str, &str, u64)> = line["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["part"].as_str().unwrap(),
                p["outcome"].as_str().unwrap(),
                p["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("profile", "ok", 200),
            ("orders", "ok", 200),
            ("notes", "ok", 200)
        ]
    );
}

#[test]
fn failed_parts_are_null_and_listed_and_the_answer_keeps_the_route_timeout() {
    let (ok, slow, broken, text, big) = (
        Origin::start("ok"),
        Origin::start("slow"),
        Origin::start("broken"),
        Origin::start("text"),
        Origin::start("big"),
    );
    slow.set(|b| b.delay = Duration::from_secs(4));
    broken.set(|b| b.status = 503);
    text.set(|b| b.body = Some("plain words, not JSON".into()));
    big.set(|b| b.body = Some(format!("\"{}\"", "x".repeat(4096))));
    let upstreams = upstream("ok", &ok)
        + &upstream("slow", &slow)
        + &upstream("broken", &broken)
        + &upstream("text", &text)
        + &upstream("big", &big);
    let gw = gateway(
        &upstreams,
        "  - name: agg\n\
         \x20   match: { path_exact: /agg }\n\
         \x20   aggregate:\n\
         \x20     timeout: 600ms\n\
         \x20     max_part_size: 1KiB\n\
         \x20     parts:\n\
         \x20       ok: { upstream: ok, path: /ok }\n\
         \x20       slow: { upstream: slow, path: /slow }\n\
         \x20       broken: { upstream: broken, path: /broken }\n\
         \x20       text: { upstream: text, path: /text }\n\
         \x20       big: { upstream: big, path: /big }\n",
        "",
    );
    let started = Instant::now();
    let response = gw.get("/agg");
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let answer = response.json();
    assert_eq!(answer["data"]["ok"]["origin"], "ok");
    assert_eq!(answer["data"]["slow"], Value::Null);
    assert_eq!(answer["data"]["broken"], Value::Null);
    assert_eq!(answer["data"]["text"], "plain words, not JSON");
    assert_eq!(answer["data"]["big"], Value::Null);
    assert_eq!(
        answer["meta"]["failed"],
        json!([
            {"part": "slow", "reason": "timeout"},
            {"part": "broken", "reason": "status 503"},
            {"part": "text", "reason": "not_json"},
            {"part": "big", "reason": "too_large"},
        ])
    );
    let series = |part: &str, outcome: &str| {
        format!("edgegate_aggregate_part_requests_total{{outcome=\"{outcome}\",part=\"{part}\",route=\"agg\"}}")
    };
    for (part, outcome) in [
        ("ok", "ok"),
        ("slow", "timeout"),
        ("broken", "status"),
        ("text", "not_json"),
        ("big", "too_large"),
    ] {
        assert_eq!(gw.metric(&series(part, outcome)), Some(1.0), "{part}");
    }
    assert_eq!(
        gw.metric("edgegate_aggregate_part_duration_seconds_count{part=\"slow\",route=\"agg\"}"),
        Some(1.0)
    );
}

#[test]
fn a_failed_required_part_fails_the_whole_answer() {
    let (users, _orders, _notes, upstreams) = three_services();
    let gw = gateway(&upstreams, DASHBOARD, "");
    users.set(|b| b.status = 503);
    let failed = gw.request(
        "GET",
        "/api/v1/users/7/dashboard?limit=1",
        &[
            ("Authorization", &bearer("alice")),
            ("X-Request-ID", "req-502"),
        ],
        b"",
    );
    assert_eq!(failed.status, 502, "{}", failed.text());
    let error = failed.json();
    assert_eq!(error["error"], "bad_gateway");
    assert_eq!(error["request_id"], "req-502");
    assert!(
        error["message"].as_str().unwrap().contains("`profile`"),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("status 503"),
        "{error}"
    );

    users.set(|b| {
        b.status = 200;
        b.delay = Duration::from_secs(4);
    });
    let started = Instant::now();
    let late = get(&gw, "/api/v1/users/7/dashboard?limit=1", "alice");
    assert_eq!(late.status, 504, "{}", late.text());
    assert_eq!(late.json()["error"], "gateway_timeout");
    assert!(started.elapsed() < Duration::from_millis(3800));
}

#[test]
fn parts_use_the_pools_retries_and_outlier_ejection() {
    let alive = Origin::start("alive");
    let dead_addr = Origin::start("dead").stop();
    let gw = gateway(
        &format!(
            "  pair:\n    targets: [{{ address: \"{dead_addr}\" }}, {{ address: \"{}\" }}]\n    selection: round_robin\n    \
             outlier_detection: {{ consecutive_gateway_failures: 1, base_ejection_time: 60s, max_ejection_percent: 50 }}\n\
             \x20 gone:\n    targets: [{{ address: \"{dead_addr}\" }}]\n",
            alive.addr
        ),
        "  - name: agg\n\
         \x20   match: { path_exact: /agg }\n\
         \x20   retries: { attempts: 1, on: [connect_failure] }\n\
         \x20   aggregate:\n\
         \x20     parts:\n\
         \x20       live: { upstream: pair, path: /live }\n\
         \x20       gone: { upstream: gone, path: /gone }\n",
        "",
    );
    for _ in 0..4 {
        let answer = gw.get("/agg").json();
        assert_eq!(answer["data"]["live"]["origin"], "alive", "{answer}");
        assert_eq!(
            answer["meta"]["failed"],
            json!([{"part": "gone", "reason": "connect_failure"}])
        );
    }
    let dead_label = format!("backend=\"{dead_addr}\"");
    let metrics = gw.metrics();
    let ejected = metrics
        .lines()
        .find(|l| {
            l.starts_with("edgegate_backend_ejected{")
                && l.contains(&dead_label)
                && l.contains("upstream=\"pair\"")
        })
        .unwrap_or_else(|| panic!("no ejection gauge for the dead backend:\n{metrics}"));
    assert!(ejected.ends_with(" 1"), "{ejected}");
    // Once ejected the dead backend is no longer tried: no retries are needed.
    let retries = |m: &str| {
        crate::support::metric_value(
            m,
            "edgegate_retries_total{reason=\"connect_failure\",route=\"agg\"}",
        )
        .unwrap_or(0.0)
    };
    let before = retries(&gw.metrics());
    assert!(
        before >= 1.0,
        "round robin sent a part to the dead backend once and retried it"
    );
    for _ in 0..4 {
        assert_eq!(gw.get("/agg").json()["data"]["live"]["origin"], "alive");
    }
    assert_eq!(retries(&gw.metrics()), before);
}

#[test]
fn the_answer_is_cached_per_caller_and_rate_limits_count_it_once() {
    let (users, orders, notes, upstreams) = three_services();
    let routes = DASHBOARD.replace(
        "    auth: { jwt: main }\n",
        "    auth: { jwt: main }\n    cache: { ttl: 60s }\n    rate_limits: [per_user]\n",
    );
    let gw = gateway(
        &upstreams,
        &routes,
        "cache: { max_size: 8MiB }\nrate_limits:\n  policies:\n    per_user: { algorithm: fixed_window, key: \"claim:sub\", limit: 3, window: 1m }\n",
    );
    let target = "/api/v1/users/7/dashboard?limit=2";
    let first = get(&gw, target, "alice");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    let second = get(&gw, target, "alice");
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.text(), first.text());
    assert_eq!(
        second.header("x-ratelimit-remaining"),
        Some("1"),
        "a hit counts once too"
    );
    assert_eq!((users.hits(), orders.hits(), notes.hits()), (1, 1, 1));

    // Bob's parts ask for other things: never Alice's answer.
    let bob = get(&gw, target, "bob");
    assert_eq!(x_cache(&bob), "MISS");
    assert_eq!(
        bob.json()["data"]["profile"]["target"],
        "/users/bob/profile"
    );
    assert_eq!((users.hits(), orders.hits(), notes.hits()), (2, 2, 2));

    // Alice's third request is her last; the fourth is refused before any part is sent.
    assert_eq!(get(&gw, target, "alice").status, 200);
    let limited = get(&gw, target, "alice");
    assert_eq!(limited.status, 429);
    assert_eq!((users.hits(), orders.hits(), notes.hits()), (2, 2, 2));

    // A partial answer is not stored.
    notes.set(|b| b.status = 500);
    let partial = get(&gw, "/api/v1/users/8/dashboard?limit=2", "carol");
    assert_eq!(partial.json()["meta"]["failed"][0]["part"], "notes");
    let again = get(&gw, "/api/v1/users/8/dashboard?limit=2", "carol");
    assert_eq!(x_cache(&again), "MISS");
}

#[test]
fn fifty_concurrent_callers_each_get_their_own_answer() {
    let (users, orders, notes, upstreams) = three_services();
    users.set(|b| b.delay = Duration::from_millis(20));
    let gw = gateway(&upstreams, DASHBOARD, "");
    let gw = &gw;
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..50)
            .map(|n| {
                scope.spawn(move || {
                    let answer = get(
                        gw,
                        &format!("/api/v1/users/{n}/dashboard?limit={n}"),
                        &format!("user-{n}"),
                    );
                    assert_eq!(answer.status, 200, "{}", answer.text());
                    let data = answer.json()["data"].clone();
                    assert_eq!(
                        data["profile"]["target"],
                        format!("/users/user-{n}/profile")
                    );
                    assert_eq!(
                        data["orders"]["target"],
                        format!("/orders?user=user-{n}&limit={n}")
                    );
                    assert_eq!(data["notes"]["target"], format!("/notes/{n}"));
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
    });
    assert!(wait_until(Duration::from_secs(5), || users.hits() == 50));
    assert_eq!((orders.hits(), notes.hits()), (50, 50));
    // Parts go over pooled keep-alive connections, as proxied requests do.
    let opened = users.connections();
    for n in 0..10 {
        assert_eq!(
            get(gw, &format!("/api/v1/users/{n}/dashboard?limit=1"), "again").status,
            200
        );
    }
    assert!(
        users.connections() <= opened + 1,
        "{} new connections",
        users.connections() - opened
    );
}

#[test]
fn a_pool_whose_backends_are_all_ejected_still_answers_its_part() {
    let (a, b) = (Origin::start("a"), Origin::start("b"));
    for origin in [&a, &b] {
        origin.set(|b| b.status = 500);
    }
    let gw = gateway(
        &format!(
            "  pair:\n    targets: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\n    \
             outlier_detection: {{ consecutive_5xx: 1, base_ejection_time: 60s, max_ejection_percent: 100 }}\n",
            a.addr, b.addr
        ),
        "  - { name: agg, match: { path_exact: /agg }, aggregate: { parts: { only: { upstream: pair, path: /only } } } }\n",
        "",
    );
    for origin in [&a, &b] {
        let ejected = format!(
            "edgegate_backend_ejected{{backend=\"{}\",upstream=\"pair\"}}",
            origin.addr
        );
        let done = wait_until(Duration::from_secs(5), || {
            let answer = gw.get("/agg").json();
            assert_eq!(
                answer["meta"]["failed"],
                json!([{"part": "only", "reason": "status 500"}])
            );
            gw.metric(&ejected) == Some(1.0)
        });
        assert!(done, "{ejected} never 1");
    }
    // Every backend ejected would leave the pool with none: they are used anyway (panic mode).
    for origin in [&a, &b] {
        origin.set(|b| b.status = 200);
    }
    let answer = gw.get("/agg").json();
    assert!(answer["data"]["only"]["origin"].is_string(), "{answer}");
    assert_eq!(answer["meta"]["failed"], json!([]));
    assert_eq!(
        gw.metric("edgegate_pool_panic{upstream=\"pair\"}"),
        Some(1.0)
    );
}
