//! Local-first shared limits (`sync: { interval }`): four gateways on one real `redis-server`
//! decide on their own and reconcile every 50 ms; under a load spread over all four, what they
//! admit together stays close to the limit, and the request path makes no Redis round trip
//! after each instance's first decision of a key.

use crate::support::redis::RedisServer;
use crate::support::{free_port, wait_until, Gateway, Load, Origin};
use std::time::{Duration, SystemTime};

fn redis_on(port: u16) -> RedisServer {
    RedisServer::start_on(port)
        .expect("redis-server must be installed (scripts/install-deps.sh test)")
}

fn member(origin: &Origin, redis_port: u16, policy: &str, on_error: &str) -> Gateway {
    Gateway::start(&format!(
        "rate_limits:\n  store: redis\n  redis: {{ url: \"redis://127.0.0.1:{redis_port}/0\", timeout: 300ms, on_error: {on_error} }}\n\
         \x20 policies:\n    fleet: {{ {policy}, sync: {{ interval: 50ms }} }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: api, upstream: app, rate_limits: [fleet] }}\n",
        origin.addr
    ))
}

/// Waits until at least `margin` is left before the current window of `window_secs` ends, so a
/// test's traffic stays in one window.
fn clear_of_a_window_boundary(window_secs: u64, margin: u64) {
    let into = |now: SystemTime| {
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            % window_secs
    };
    assert!(wait_until(Duration::from_secs(margin + 5), || {
        into(SystemTime::now()) + margin < window_secs
    }));
}

#[test]
fn four_instances_sharing_a_local_first_limit_admit_close_to_it_without_round_trips() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    let fleet: Vec<Gateway> = (0..4)
        .map(|_| {
            member(
                &origin,
                redis.port,
                "algorithm: fixed_window, key: global, limit: 1000, window: 1h",
                "deny",
            )
        })
        .collect();
    clear_of_a_window_boundary(3600, 60);
    // Every instance's first decision of the key is exact (a round trip); then all is local.
    for gw in &fleet {
        assert_eq!(gw.get("/").status, 200);
    }
    let loads: Vec<Load> = fleet
        .iter()
        .map(|gw| Load::start(gw.proxy, "/", 2))
        .collect();
    for load in &loads {
        load.wait_progress(1_500);
    }
    let counts: Vec<_> = loads.into_iter().map(Load::finish).collect();
    let admitted = 4 + counts.iter().map(|c| c.ok).sum::<u64>();
    let refused: u64 = counts.iter().map(|c| c.bad_status).sum();
    assert!(counts.iter().all(|c| c.io_errors == 0), "{counts:?}");
    assert!(
        refused > 3_000,
        "the load went well past the limit: {counts:?}"
    );
    // Leases keep the fleet at or under the limit (rounding leaves up to an instance's worth
    // unused); the bound is generous for a loaded CI machine, the measured figures are in the
    // benchmark.
    assert!(
        (950..=1_020).contains(&admitted),
        "admitted {admitted} of a 1000 limit: {counts:?}"
    );
    for gw in &fleet {
        let round_trips = gw
            .metric("edgegate_ratelimit_store_duration_seconds_count")
            .unwrap_or(0.0);
        assert!(
            round_trips <= 3.0,
            "decisions are local after the first: {round_trips} round trips"
        );
        assert_eq!(
            gw.metric(
                "edgegate_ratelimit_decisions_total{outcome=\"store_error\",policy=\"fleet\"}"
            ),
            Some(0.0)
        );
    }
    // Redis holds the fleet's count.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port)).unwrap();
    let mut connection = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("edgegate:rls:{*")
        .query(&mut connection)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let stored: u64 = redis::cmd("GET")
                .arg(&keys[0])
                .query(&mut connection)
                .unwrap_or(0);
            stored == admitted
        }),
        "every admission reaches Redis"
    );
}

#[test]
fn a_local_first_policy_follows_on_error_while_redis_is_down_and_resumes() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    let gw = member(
        &origin,
        redis.port,
        "algorithm: sliding_window, key: client_ip, limit: 3, window: 1h",
        "deny",
    );
    clear_of_a_window_boundary(3600, 60);
    let statuses: Vec<u16> = (0..4).map(|_| gw.get("/").status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "one instance: the whole limit"
    );

    let port = redis.stop();
    assert!(
        wait_until(Duration::from_secs(10), || gw.get("/").status == 503),
        "once its view is stale, on_error: deny applies"
    );
    let _redis = redis_on(port);
    assert!(
        wait_until(Duration::from_secs(10), || gw.get("/").status == 200),
        "a fresh Redis: limits resume from zero"
    );
    assert!(gw.stderr().contains("rate-limit sync"), "{}", gw.stderr());
}
