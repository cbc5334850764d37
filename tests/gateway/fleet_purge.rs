//! Purges that reach every instance (`cache.purge_channel`): three gateways on one real
//! `redis-server`, a follower locked out by ACL while a purge is made (it catches up from the
//! log, nothing else is lost), and Redis losing its data (every cache is emptied, a purge made
//! meanwhile is sent when Redis is back).

use crate::cache::{purge, serve, x_cache};
use crate::support::redis::RedisServer;
use crate::support::{free_port, wait_until, Gateway, Origin};
use std::path::PathBuf;
use std::time::Duration;

const FOLLOWING: &str = "edgegate_cache_purge_channel_up";

fn redis_on(port: u16) -> RedisServer {
    RedisServer::start_on(port)
        .expect("redis-server must be installed (scripts/install-deps.sh test)")
}

/// A caching gateway following the purge channel on `redis_port`; `credentials` are extra
/// `rate_limits.redis` keys.
fn member(origin: &Origin, redis_port: u16, credentials: &str) -> Gateway {
    let gw = Gateway::start(&format!(
        "rate_limits:\n  redis: {{ url: \"redis://127.0.0.1:{redis_port}/0\"{credentials} }}\n\
         cache: {{ purge_channel: \"edgegate:purge\" }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: cached, upstream: app, cache: {{ ttl: 60s }} }}\n",
        origin.addr
    ));
    gw.wait_metric(FOLLOWING, 1.0);
    gw
}

fn event(gw: &Gateway, event: &str) -> f64 {
    gw.metric(&format!(
        "edgegate_cache_fleet_purges_total{{event=\"{event}\"}}"
    ))
    .unwrap_or(-1.0)
}

fn wait_event(gw: &Gateway, name: &str, count: f64) {
    gw.wait_metric(
        &format!("edgegate_cache_fleet_purges_total{{event=\"{name}\"}}"),
        count,
    );
}

/// Each of `paths` is stored on `gw` (a MISS, then a HIT).
fn warm(gw: &Gateway, paths: &[&str]) {
    for path in paths {
        gw.get(path);
        assert_eq!(x_cache(&gw.get(path)), "HIT", "{path} stored");
    }
}

fn redis_command(port: u16, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut connection = client.get_connection().expect("connects to redis");
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connection).expect("redis command")
}

#[test]
fn a_purge_on_one_instance_reaches_every_instance_by_url_prefix_and_tag() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    serve(&origin, "v1", &[("Cache-Tag", "red")]);
    let fleet: Vec<Gateway> = (0..3).map(|_| member(&origin, redis.port, "")).collect();
    let (a, b, c) = (&fleet[0], &fleet[1], &fleet[2]);
    for gw in &fleet {
        warm(gw, &["/p/x", "/p/y", "/q"]);
    }
    serve(&origin, "v1", &[("Cache-Tag", "blue")]);
    for gw in &fleet {
        warm(gw, &["/blue"]);
    }

    let answer = purge(a, r#"{"url": "http://test.local/p/x"}"#);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["purged"], 1);
    assert_eq!(answer.json()["fleet"], "published");
    for gw in [b, c] {
        wait_event(gw, "applied", 1.0);
    }
    for gw in &fleet {
        assert_eq!(x_cache(&gw.get("/p/x")), "MISS", "purged everywhere");
        assert_eq!(x_cache(&gw.get("/p/y")), "HIT", "the rest stays");
    }
    assert_eq!(
        event(a, "applied"),
        0.0,
        "its own purge is not applied twice"
    );
    assert_eq!(event(a, "published"), 1.0);

    assert_eq!(
        purge(b, r#"{"prefix": "http://test.local/p/"}"#).json()["fleet"],
        "published"
    );
    wait_event(a, "applied", 1.0);
    wait_event(c, "applied", 2.0);
    for gw in &fleet {
        assert_eq!(x_cache(&gw.get("/p/y")), "MISS");
        assert_eq!(x_cache(&gw.get("/q")), "HIT");
    }

    assert_eq!(
        purge(c, r#"{"tags": ["blue"]}"#).json()["fleet"],
        "published"
    );
    wait_event(a, "applied", 2.0);
    wait_event(b, "applied", 2.0);
    for gw in &fleet {
        assert_eq!(x_cache(&gw.get("/blue")), "MISS", "tagged blue");
        assert_eq!(x_cache(&gw.get("/q")), "HIT", "tagged red");
        assert_eq!(event(gw, "flushed"), 0.0, "nothing was missed");
    }
}

#[test]
fn an_instance_locked_out_while_a_purge_is_made_catches_up_from_the_log() {
    let redis = redis_on(free_port());
    let dir = std::env::temp_dir().join(format!("edgegate-fleet-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password_file: PathBuf = dir.join("follower.pass");
    std::fs::write(&password_file, "follower-secret\n").unwrap();
    redis_command(
        redis.port,
        &[
            "ACL",
            "SETUSER",
            "follower",
            "on",
            ">follower-secret",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let origin = Origin::start("app");
    serve(&origin, "v1", &[]);
    let a = member(&origin, redis.port, "");
    let b = member(
        &origin,
        redis.port,
        &format!(
            ", username: follower, password_file: \"{}\"",
            password_file.display()
        ),
    );
    for gw in [&a, &b] {
        warm(gw, &["/x", "/y"]);
    }

    // B is cut off and cannot come back until the purge is in the log.
    redis_command(redis.port, &["ACL", "SETUSER", "follower", "off"]);
    redis_command(redis.port, &["CLIENT", "KILL", "USER", "follower"]);
    b.wait_metric(FOLLOWING, 0.0);
    assert_eq!(
        purge(&a, r#"{"url": "http://test.local/x"}"#).json()["fleet"],
        "published"
    );
    assert_eq!(x_cache(&b.get("/x")), "HIT", "B has not heard of it yet");

    redis_command(redis.port, &["ACL", "SETUSER", "follower", "on"]);
    b.wait_metric(FOLLOWING, 1.0);
    wait_event(&b, "applied", 1.0);
    assert_eq!(x_cache(&b.get("/x")), "MISS", "caught up from the log");
    assert_eq!(x_cache(&b.get("/y")), "HIT", "and nothing else was dropped");
    assert_eq!(event(&b, "flushed"), 0.0);
    assert!(
        b.stderr().contains("Redis unreachable"),
        "the lockout is logged: {}",
        b.stderr()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn redis_losing_its_data_empties_every_cache_and_queued_purges_are_sent_when_it_returns() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    serve(&origin, "v1", &[]);
    let a = member(&origin, redis.port, "");
    let b = member(&origin, redis.port, "");
    for gw in [&a, &b] {
        warm(gw, &["/x", "/y"]);
    }

    let port = redis.stop();
    a.wait_metric(FOLLOWING, 0.0);
    let answer = purge(&a, r#"{"url": "http://test.local/x"}"#);
    assert_eq!(answer.status, 200, "a purge works locally without Redis");
    assert_eq!(answer.json()["purged"], 1);
    assert_eq!(answer.json()["fleet"], "queued");
    assert_eq!(event(&a, "queued"), 1.0);

    // Back without the purge log (no persistence): nobody can know what was missed.
    let redis = redis_on(port);
    for gw in [&a, &b] {
        gw.wait_metric(FOLLOWING, 1.0);
        wait_event(gw, "flushed", 1.0);
        assert_eq!(
            x_cache(&gw.get("/y")),
            "MISS",
            "the whole cache was emptied"
        );
    }
    wait_event(&a, "published", 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            redis_command(redis.port, &["GET", "{edgegate:purge}:seq"])
                == redis::Value::BulkString(b"1".to_vec())
        }),
        "the queued purge reached the new log"
    );
}
