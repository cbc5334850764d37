//! Failures become JSON errors: retries past dead backends, 504 on slow origins, the in-flight cap (`max_concurrent_requests`).

use crate::support::{free_port, Gateway, Origin};
use std::time::{Duration, Instant};

fn pool_with_dead_backend(live: &Origin, retries: &str) -> (Gateway, String) {
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    connect_timeout: 500ms\n    targets:\n      - {{ address: \"{dead}\" }}\n      - {{ address: \"{}\" }}\n\
         routes:\n  - {{ name: all, upstream: app{retries} }}\n",
        live.addr
    ));
    (gw, dead)
}

#[test]
fn idempotent_requests_are_retried_past_a_refusing_backend() {
    let live = Origin::start("live");
    let (gw, dead) = pool_with_dead_backend(
        &live,
        ", retries: { attempts: 2, on: [connect_failure], backoff: 10ms }",
    );
    for _ in 0..20 {
        let response = gw.get("/");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(live.hits(), 20);
    let retries = gw
        .metric("edgegate_retries_total{reason=\"connect_failure\",route=\"all\"}")
        .unwrap_or(0.0);
    let errors = gw.metric(&format!(
        "edgegate_upstream_requests_total{{backend=\"{dead}\",status=\"error\",upstream=\"app\"}}"
    ));
    assert!(retries >= 1.0, "the dead backend was never tried");
    assert_eq!(errors, Some(retries), "every failed connection was retried");
}

#[test]
fn a_post_is_retried_past_a_refusing_backend_with_its_body() {
    let live = Origin::start("live");
    let (gw, _) = pool_with_dead_backend(&live, "");
    for _ in 0..4 {
        let response = gw.request("POST", "/", &[], b"{\"order\":42}");
        assert_eq!(
            response.status, 200,
            "nothing was sent to the refusing backend"
        );
        assert_eq!(
            response.json()["body_bytes"],
            12,
            "the body was replayed intact"
        );
    }
}

#[test]
fn a_post_that_reached_a_backend_is_never_sent_twice() {
    let failing = Origin::start("failing");
    failing.set(|b| b.status = 503);
    let healthy = Origin::start("healthy");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    targets:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n\
         routes:\n  - {{ name: all, upstream: app, retries: {{ attempts: 2, on: [connect_failure, gateway_error, 5xx, reset] }} }}\n",
        failing.addr, healthy.addr
    ));
    for _ in 0..6 {
        assert_eq!(gw.get("/").status, 200, "GETs are retried past the 503");
    }
    let before = failing.hits();
    let statuses: Vec<u16> = (0..6)
        .map(|_| gw.request("POST", "/", &[], b"x").status)
        .collect();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!(refused >= 1, "{statuses:?}");
    assert_eq!(
        failing.hits() - before,
        refused,
        "each 503 POST reached the failing backend exactly once"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count() + refused,
        6,
        "{statuses:?}"
    );
}

#[test]
fn retries_zero_surfaces_the_connect_failure() {
    let live = Origin::start("live");
    let (gw, _) = pool_with_dead_backend(&live, ", retries: { attempts: 0 }");
    let statuses: Vec<u16> = (0..4).map(|_| gw.get("/").status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        2,
        "{statuses:?}"
    );
}

#[test]
fn a_slow_origin_gets_a_json_504() {
    let slow = Origin::start("slow");
    slow.set(|b| b.delay = Duration::from_secs(5));
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    read_timeout: 300ms\n    targets: [{{ address: \"{}\" }}]\n\
         routes:\n  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: app }}\n  \
         - {{ name: patient, match: {{ path_prefix: /patient }}, timeout: 5s, upstream: app }}\n",
        slow.addr
    ));
    let started = Instant::now();
    let response = gw.get("/slow");
    assert_eq!(response.status, 504);
    // Cut by the 300 ms read timeout, long before the origin's 5 s answer.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.json()["error"], "gateway_timeout");
    // Slower than the pool's read_timeout, within the route's timeout.
    slow.set(|b| b.delay = Duration::from_secs(1));
    assert_eq!(
        gw.get("/patient").status,
        200,
        "the route timeout overrides the pool's read_timeout"
    );
}

#[test]
fn the_in_flight_cap_refuses_excess_concurrency_at_once() {
    let slow = Origin::start("slow");
    slow.set(|b| b.delay = Duration::from_secs(4));
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    max_concurrent_requests: 2\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - {{ name: all, upstream: app }}\n",
        slow.addr
    ));
    let proxy = gw.proxy;
    let in_flight: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || crate::support::get(proxy, "/").status))
        .collect();
    assert!(crate::support::wait_until(Duration::from_secs(5), || slow
        .hits()
        >= 2));
    let started = Instant::now();
    let refused = gw.get("/");
    assert_eq!(refused.status, 503);
    // At once: long before the two requests in flight get their 4 s answers.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "not refused at once"
    );
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("too many requests in flight"));
    for request in in_flight {
        assert_eq!(request.join().unwrap(), 200);
    }
    assert_eq!(
        gw.metric("edgegate_circuit_open_total{upstream=\"app\"}"),
        Some(1.0)
    );
    assert_eq!(
        gw.get("/").status,
        200,
        "slots are released when requests finish"
    );
}

#[test]
fn a_request_on_a_dying_keepalive_pool_reaches_the_backend_at_most_twice() {
    let origin = Origin::start("app");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: all, upstream: app, retries: {{ attempts: 0 }} }}\n",
        origin.addr
    ));
    // Eight concurrent slow requests leave eight idle keep-alive connections in the pool.
    origin.set(|b| b.delay = Duration::from_millis(300));
    let proxy = gw.proxy;
    let warm: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || crate::support::get(proxy, "/warm").status))
        .collect();
    for request in warm {
        assert_eq!(request.join().unwrap(), 200);
    }
    assert!(origin.connections() >= 8);
    // Every connection now takes the request and closes without answering.
    origin.set(|b| {
        b.delay = Duration::ZERO;
        b.hang_up = true;
    });
    let before = origin.hits();
    let response = gw.get("/once");
    assert_eq!(response.status, 502, "{}", response.text());
    // Once on a pooled connection, once more on a new one; never once per idle connection.
    assert_eq!(origin.hits() - before, 2);
}

#[test]
fn a_route_timeout_bounds_the_whole_exchange_even_for_a_trickling_backend() {
    let trickling = Origin::start("trickling");
    // ~100 body bytes at 50 ms each: 5 s, while every single read is quick.
    trickling.set(|b| {
        b.body = Some("x".repeat(100));
        b.trickle = Some(Duration::from_millis(50));
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ read_timeout: 2s, targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: all, upstream: app, timeout: 1s }}\n",
        trickling.addr
    ));
    let started = Instant::now();
    let outcome = crate::support::try_request(gw.proxy, "GET", "/", &[], b"");
    let elapsed = started.elapsed();
    // The header was sent, so the body is cut: the connection closes short of the body.
    match outcome {
        Ok(response) => assert!(response.body.len() < 100, "got the whole body"),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}"),
    }
    assert!(elapsed < Duration::from_secs(4), "cut after {elapsed:?}");
}

#[test]
fn a_route_timeout_cuts_a_backend_that_trickles_its_response_head() {
    let trickling = Origin::start("trickling");
    // The whole response, head first, at one byte per 50 ms: the head alone takes ~7 s.
    trickling.set(|b| {
        b.trickle = Some(Duration::from_millis(50));
        b.trickle_head = true;
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ read_timeout: 2s, targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: all, upstream: app, timeout: 1s }}\n",
        trickling.addr
    ));
    let started = Instant::now();
    let response = gw.get("/");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.json()["error"], "gateway_timeout");
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
    let failures = gw.metric(&format!(
        "edgegate_upstream_requests_total{{backend=\"{}\",status=\"error\",upstream=\"app\"}}",
        trickling.addr
    ));
    assert_eq!(failures, Some(1.0), "counted as a failure of the backend");
}

#[test]
fn retries_share_the_route_timeout() {
    let first = Origin::start("first");
    let second = Origin::start("second");
    for origin in [&first, &second] {
        origin.set(|b| b.delay = Duration::from_secs(3));
    }
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    targets: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\n\
         routes:\n  - {{ name: all, upstream: app, timeout: 1s, retries: {{ attempts: 2, on: [gateway_error] }} }}\n",
        first.addr, second.addr
    ));
    let response = gw.get("/");
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.json()["error"], "gateway_timeout");
    // The first attempt used the whole second; no retry was started after it.
    assert_eq!(first.hits() + second.hits(), 1);
}
