//! `rate_limits` and route `rate_limits`.

use super::*;
use crate::config::{KeyPart, QuotaPeriod, QuotaSpec, RedisSpec, RedisTopology, Secret, StoreSpec};
use crate::ratelimit::algorithm::Algorithm;
use std::time::Duration;

fn policies(policies: &str) -> String {
    format!("rate_limits:\n  policies:\n{policies}")
}

#[test]
fn rate_limit_defaults_and_values() {
    let model = model(&format!(
        "{}routes:\n  - {{ name: r, upstream: app, rate_limits: [per_ip] }}\n",
        policies("    per_ip: { algorithm: token_bucket, key: [client_ip, \"header:X-Tenant\"], limit: 10, window: 1s, burst: 20, tiers: { gold: 100 } }\n")
    ));
    let spec = &model.rate_limits;
    assert_eq!(spec.store, StoreSpec::Local);
    assert_eq!(spec.max_keys, 1_000_000);
    let policy = &spec.policies[0];
    assert_eq!(policy.algorithm, Algorithm::TokenBucket);
    assert_eq!(
        policy.key,
        [
            KeyPart::ClientIp,
            KeyPart::Header(http::HeaderName::from_static("x-tenant"))
        ]
    );
    assert_eq!(
        (policy.limit, policy.window, policy.burst),
        (10, Duration::from_secs(1), Some(20))
    );
    assert_eq!(policy.tiers, [("gold".to_string(), 100)]);
    assert!(!policy.shadow);
    assert_eq!(model.routes[0].rate_limits, [0]);

    let redis = super::model(
        "rate_limits:\n  store: redis\n  redis: { url: \"redis://127.0.0.1:6379/0\" }\n",
    )
    .rate_limits;
    assert_eq!(redis.store, StoreSpec::Redis);
    assert_eq!(
        redis.redis,
        Some(RedisSpec {
            topology: RedisTopology::Server {
                url: "redis://127.0.0.1:6379/0".into()
            },
            username: None,
            password: None,
            tls: None,
            timeout: Duration::from_millis(20),
            allow_on_error: true,
        })
    );
}

#[test]
fn redis_topologies_and_credentials() {
    let dir = std::env::temp_dir().join(format!("edgegate-redis-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pass = dir.join("redis.pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    let text = format!(
        "rate_limits:\n  store: redis\n  redis:\n    sentinel: {{ master_name: edge, addresses: [\"10.0.0.1:26379\", \"sentinel.local:26380\"], db: 2 }}\n    username: edgegate\n    password_file: {}\n    timeout: 50ms\n    on_error: deny\n",
        pass.display()
    );
    let spec = super::model(&text).rate_limits.redis.unwrap();
    assert_eq!(
        spec.topology,
        RedisTopology::Sentinel {
            master_name: "edge".into(),
            addresses: vec!["10.0.0.1:26379".into(), "sentinel.local:26380".into()],
            db: 2
        }
    );
    assert_eq!(spec.username.as_deref(), Some("edgegate"));
    assert_eq!(spec.password, Some(Secret("s3cret".into())));
    assert_eq!(format!("{:?}", spec.password), "Some(Secret(..))");
    assert_eq!(
        (spec.timeout, spec.allow_on_error),
        (Duration::from_millis(50), false)
    );

    let cluster = super::model(
        "rate_limits:\n  store: redis\n  redis: { cluster: { addresses: [\"a:7000\", \"b:7001\"] } }\n",
    );
    assert_eq!(
        cluster.rate_limits.redis.unwrap().topology,
        RedisTopology::Cluster {
            addresses: vec!["a:7000".into(), "b:7001".into()]
        }
    );

    let synced = super::model(
        "rate_limits:\n  store: redis\n  redis: { url: \"redis://127.0.0.1/\" }\n  policies:\n    p: { algorithm: sliding_window, key: global, limit: 1, window: 1s, sync: { interval: 50ms } }\n",
    );
    assert_eq!(
        synced.rate_limits.policies[0].sync_interval,
        Some(Duration::from_millis(50))
    );

    let quotas = super::model(
        "rate_limits:\n  redis: { url: \"redis://127.0.0.1/\" }\n  quotas:\n    monthly: { per: month, limit: 1000, key: [consumer, \"header:x-tenant\"], tiers: { gold: 5000 }, time_zone: Europe/Paris }\nroutes:\n  - { name: r, upstream: app, rate_limits: [monthly] }\n",
    );
    assert_eq!(
        quotas.rate_limits.quotas,
        [QuotaSpec {
            name: "monthly".into(),
            per: QuotaPeriod::Month,
            limit: 1000,
            key: vec![
                KeyPart::Consumer,
                KeyPart::Header(http::HeaderName::from_static("x-tenant"))
            ],
            tiers: vec![("gold".into(), 5000)],
            time_zone: "Europe/Paris".into(),
        }]
    );
    assert_eq!(
        (
            quotas.routes[0].rate_limits.len(),
            quotas.routes[0].quotas.clone()
        ),
        (0, vec![0])
    );

    // The purge channel alone may use Redis beside the local store.
    let purge_only = super::model(
        "rate_limits:\n  redis: { url: \"redis://127.0.0.1/\" }\ncache:\n  purge_channel: edgegate:purge\n",
    );
    assert_eq!(purge_only.rate_limits.store, StoreSpec::Local);
    assert!(purge_only.rate_limits.redis.is_some());
    assert_eq!(
        purge_only.cache.unwrap().purge_channel.as_deref(),
        Some("edgegate:purge")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rate_limit_problems() {
    expect_problems(&[
        ("rate_limits:\n  store: memcached\n", &["2:3 rate_limits.store: `memcached` is not one of: local, redis"]),
        ("rate_limits:\n  redis: { url: \"redis://127.0.0.1/\" }\n", &["2:3 rate_limits.redis: is used by `store: redis`, `rate_limits.quotas` and `cache.purge_channel`, and none is set"]),
        ("rate_limits:\n  store: redis\n  redis: { url: \"rediss://127.0.0.1/\", tls: false, ca_file: /etc/hostname }\n", &["3:40 rate_limits.redis.tls: is false but the url is rediss:// (TLS)", "3:52 rate_limits.redis.ca_file: /etc/hostname holds no PEM certificate"]),
        ("rate_limits:\n  store: redis\n  redis: { url: \"redis://a/\", cluster: { addresses: [\"b:1\"] } }\n", &["3:3 rate_limits.redis: needs exactly one of `url: redis://HOST:PORT/DB`, `sentinel: { master_name, addresses }` and `cluster: { addresses }`"]),
        ("rate_limits:\n  store: redis\n  redis: { sentinel: { master_name: \"\", addresses: [\"x\", \"y:0\"], db: 99 } }\n", &["3:24 rate_limits.redis.sentinel.master_name: must name the master the Sentinels watch", "3:66 rate_limits.redis.sentinel.db: must be between 0 and 15", "3:53 rate_limits.redis.sentinel.addresses[0]: `x` is not a host:port like 10.0.0.1:26379", "3:58 rate_limits.redis.sentinel.addresses[1]: `y:0` is not a host:port like 10.0.0.1:26379"]),
        ("rate_limits:\n  store: redis\n  redis: { cluster: { addresses: [] }, username: u, password_env: EDGEGATE_NO_SUCH_VARIABLE, tls: true, ca_file: /no/such/ca.pem }\n", &["3:105 rate_limits.redis.ca_file: cannot read /no/such/ca.pem: No such file or directory (os error 2)", "3:23 rate_limits.redis.cluster.addresses: list at least one host:port", "3:53 rate_limits.redis.password_env: environment variable EDGEGATE_NO_SUCH_VARIABLE is not set", "3:40 rate_limits.redis.username: needs a password (`password_file` or `password_env`)"]),
        ("rate_limits:\n  store: redis\n", &["1:1 rate_limits: `store: redis` needs `redis: { url: redis://HOST:PORT/DB }`"]),
        ("rate_limits:\n  store: redis\n  redis: { url: \"http://127.0.0.1/\", timeout: 0, on_error: retry }\n", &["3:12 rate_limits.redis.url: `http://127.0.0.1/` is not a redis://HOST:PORT/DB (or rediss://) URL", "3:38 rate_limits.redis.timeout: must be greater than zero", "3:50 rate_limits.redis.on_error: `retry` is not one of: allow, deny"]),
        ("rate_limits:\n  store: redis\n  redis: { url: \"redis://127.0.0.1/\", ca_file: /etc/hostname }\n", &["3:39 rate_limits.redis.ca_file: only applies with `tls: true` (or a rediss:// url)"]),
        ("rate_limits:\n  max_keys: 10\n", &["2:3 rate_limits.max_keys: must be between 1000 and 100000000"]),
        ("rate_limits:\n  quotas:\n    q: { per: week, limit: 0, key: route, time_zone: Mars/Olympus }\n", &["3:10 rate_limits.quotas.q.per: `week` is not one of: day, month", "3:21 rate_limits.quotas.q.limit: must be at least 1", "3:31 rate_limits.quotas.q.key: a quota is shared by every route that lists it: `route` is not a quota key part", "3:43 rate_limits.quotas.q.time_zone: `Mars/Olympus` is not a time zone of the tz database (like UTC or Europe/Paris): failed to find time zone `Mars/Olympus` in time zone database"]),
        ("rate_limits:\n  policies:\n    q: { algorithm: fixed_window, key: global, limit: 1, window: 1s }\n  quotas:\n    q: { per: day, limit: 1, key: consumer }\n", &["5:5 rate_limits.quotas.q: needs `rate_limits.redis`: quotas are counted in Redis", "5:5 rate_limits.quotas.q: a policy has this name too: a route's `rate_limits` names both"]),
        ("rate_limits:\n  policies:\n    p: { algorithm: fixed_window, key: global, limit: 1, window: 1s, sync: { interval: 50ms } }\n", &["3:70 rate_limits.policies.p.sync: applies to `store: redis` (the local store is exact already)"]),
        ("rate_limits:\n  store: redis\n  redis: { url: \"redis://127.0.0.1/\" }\n  policies:\n    p: { algorithm: token_bucket, key: global, limit: 1, window: 1s, sync: { interval: 50ms } }\n    q: { algorithm: fixed_window, key: global, limit: 1, window: 1s, sync: { interval: 5ms } }\n    r: { algorithm: fixed_window, key: global, limit: 1, window: 1s, sync: { interval: 1m } }\n", &["5:70 rate_limits.policies.p.sync: applies to fixed_window and sliding_window (buckets are decided in Redis per request)", "6:78 rate_limits.policies.q.sync.interval: must be at least 10ms", "7:78 rate_limits.policies.r.sync.interval: must be at most 10s"]),
        ("rate_limits:\n  policies:\n    p: { algorithm: gcra, key: [], limit: 0, window: 10ms }\n", &["3:10 rate_limits.policies.p.algorithm: `gcra` is not one of: fixed_window, sliding_window, token_bucket, leaky_bucket", "3:27 rate_limits.policies.p.key: name at least one key part", "3:36 rate_limits.policies.p.limit: must be at least 1", "3:46 rate_limits.policies.p.window: must be at least 100ms"]),
        ("rate_limits:\n  policies:\n    p: { algorithm: fixed_window, key: \"cookie:x\", limit: 1, window: 1 minute, burst: 5 }\n", &["3:35 rate_limits.policies.p.key: `cookie:x` is not one of: global, client_ip, consumer, route, header:NAME, claim:NAME", "3:62 rate_limits.policies.p.window: duration `1 minute` has unknown unit ` minute` (use ms, s, m, h or d)", "3:80 rate_limits.policies.p.burst: only applies to token_bucket and leaky_bucket"]),
        ("rate_limits:\n  policies:\n    p: { algorithm: leaky_bucket, key: \"header:bad name\", limit: 1, window: 1s, burst: 0, tiers: { free: 0 } }\n", &["3:35 rate_limits.policies.p.key: `bad name` is not a valid HTTP header name", "3:81 rate_limits.policies.p.burst: must be at least 1", "3:100 rate_limits.policies.p.tiers.free: must be at least 1"]),
        ("rate_limits:\n  policies:\n    p: { algorithm: fixed_window, key: global, limit: 1, window: 1s }\nroutes:\n  - { name: r, upstream: app, rate_limits: [p, p, q] }\n", &["5:48 routes[0].rate_limits[1]: `p` is listed twice", "5:51 routes[0].rate_limits[2]: no policy named `q` under rate_limits.policies (or quota under rate_limits.quotas)"]),
    ]);
}

#[test]
fn a_route_lists_at_most_64_policies() {
    let mut text = String::from("rate_limits:\n  policies:\n");
    for index in 0..65 {
        text.push_str(&format!(
            "    p{index}: {{ algorithm: fixed_window, key: global, limit: 1, window: 1s }}\n"
        ));
    }
    let names: Vec<String> = (0..65).map(|index| format!("p{index}")).collect();
    text.push_str(&format!(
        "routes:\n  - {{ name: r, upstream: app, rate_limits: [{}] }}\n",
        names.join(", ")
    ));
    assert_eq!(
        problems(&text),
        ["69:31 routes[0].rate_limits: 65 policies listed; a route may list at most 64"]
    );
}
