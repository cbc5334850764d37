//! Redis Sentinel and Redis Cluster behind the shared rate-limit store and the purge channel:
//! real `redis-server` processes (a master, a replica and three Sentinels; three Cluster
//! masters), the master killed mid-load, a slot migrated mid-load.

use crate::cache::{purge, serve, x_cache};
use crate::support::redis_fleet::{RedisCluster, SentinelSet};
use crate::support::{wait_until, Gateway, Origin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A gateway with a per-`x-key` fixed window of `limit` a minute in Redis (`on_error: deny`,
/// so any store failure shows as a 503) and a caching route following the purge channel.
fn gateway(redis: &str, origin: &Origin, limit: u32) -> Gateway {
    let gw = Gateway::start(&format!(
        "rate_limits:\n  store: redis\n  redis: {{ {redis}, timeout: 300ms, on_error: deny }}\n\
         \x20 policies:\n    per_key: {{ algorithm: fixed_window, key: \"header:x-key\", limit: {limit}, window: 1m }}\n\
         cache: {{ purge_channel: \"edgegate:purge\" }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: cached, match: {{ path_prefix: /cached }}, upstream: app, cache: {{ ttl: 60s }} }}\n\
         \x20 - {{ name: api, upstream: app, rate_limits: [per_key] }}\n",
        origin.addr
    ));
    gw.wait_metric("edgegate_cache_purge_channel_up", 1.0);
    gw
}

fn status(gw: &Gateway, key: &str) -> u16 {
    gw.request("GET", "/api", &[("x-key", key)], b"").status
}

fn list(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A purge on `from` reaches `to`.
fn purge_reaches(from: &Gateway, to: &Gateway, path: &str) {
    for gw in [from, to] {
        gw.get(path);
        assert_eq!(x_cache(&gw.get(path)), "HIT");
    }
    let answer = purge(from, &format!("{{\"url\": \"http://test.local{path}\"}}"));
    assert_eq!(answer.json()["fleet"], "published", "{}", answer.text());
    assert!(
        wait_until(Duration::from_secs(10), || x_cache(&to.get(path)) == "MISS"),
        "the purge never reached the other instance"
    );
}

#[test]
fn a_sentinel_failover_mid_load_denies_only_while_it_lasts_then_limits_and_purges_resume() {
    let mut set = SentinelSet::start();
    let origin = Origin::start("app");
    serve(&origin, "ok", &[]);
    let redis = format!(
        "sentinel: {{ master_name: edge, addresses: [{}] }}",
        list(&set.addresses())
    );
    let (a, b) = (gateway(&redis, &origin, 3), gateway(&redis, &origin, 3));
    let statuses: Vec<u16> = (0..4)
        .map(|i| status(if i % 2 == 0 { &a } else { &b }, "before"))
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "one limit through the master"
    );
    purge_reaches(&a, &b, "/cached/1");

    set.kill_master();
    let mut during = Vec::new();
    let promoted = wait_until(Duration::from_secs(60), || {
        let status = status(&a, &format!("during-{}", during.len()));
        during.push(status);
        status == 200 && set.master_port() == Some(set.replica.port)
    });
    assert!(
        promoted,
        "never answered through the new master: {during:?}"
    );
    assert!(
        during.contains(&503),
        "on_error: deny while no master answers: {during:?}"
    );
    assert!(during.iter().all(|s| *s == 503 || *s == 200), "{during:?}");

    let statuses: Vec<u16> = (0..4)
        .map(|i| status(if i % 2 == 0 { &b } else { &a }, "after"))
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "one limit through the new master"
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            b.metric("edgegate_cache_purge_channel_up") == Some(1.0)
                && a.metric("edgegate_cache_purge_channel_up") == Some(1.0)
        }),
        "both follow the purge channel on the new master"
    );
    purge_reaches(&b, &a, "/cached/2");
}

#[test]
fn cluster_limits_survive_a_slot_migration_mid_load_and_purges_cross_the_cluster() {
    let cluster = RedisCluster::start();
    let origin = Origin::start("app");
    serve(&origin, "ok", &[]);
    let redis = format!("cluster: {{ addresses: [{}] }}", list(&cluster.addresses()));
    let (a, b) = (gateway(&redis, &origin, 5), gateway(&redis, &origin, 5));
    let keys: Vec<String> = (0..12).map(|i| format!("client-{i}")).collect();
    for key in &keys {
        assert_eq!(status(&a, key), 200);
        assert_eq!(status(&b, key), 200);
    }
    let stored: Vec<(u16, String)> = cluster
        .keys()
        .into_iter()
        .filter(|(_, name)| name.starts_with("edgegate:rl:"))
        .collect();
    assert_eq!(
        stored.len(),
        keys.len(),
        "one decision key per client: {stored:?}"
    );
    let owners: std::collections::BTreeSet<u16> = stored.iter().map(|(port, _)| *port).collect();
    assert!(owners.len() > 1, "keys spread over the masters: {stored:?}");

    // Requests keep flowing (fresh keys) while a slot holding a client's count moves.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, addr) = (Arc::clone(&stop), a.proxy);
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) && statuses.len() < 10_000 {
                let key = format!("load-{}", statuses.len());
                statuses.push(
                    crate::support::request(addr, "GET", "/api", &[("x-key", &key)], b"").status,
                );
            }
            statuses
        })
    };
    let (from, moved) = stored[0].clone();
    let to = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|port| *port != from)
        .expect("another node");
    cluster.move_slot_of(&moved, from, to);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let during = load.join().expect("load thread");
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|s| *s == 200),
        "no store error while the slot moved: {:?}",
        during.iter().filter(|s| **s != 200).count()
    );
    assert!(
        cluster
            .keys()
            .iter()
            .any(|(port, name)| *port == to && *name == moved),
        "the key now lives on the new owner"
    );

    // Every count carried on, the moved one included: 2 used, 3 left, then limited.
    for key in &keys {
        let statuses: Vec<u16> = (0..4)
            .map(|i| status(if i % 2 == 0 { &a } else { &b }, key))
            .collect();
        assert_eq!(statuses, [200, 200, 200, 429], "{key}");
    }
    purge_reaches(&a, &b, "/cached/1");
}
