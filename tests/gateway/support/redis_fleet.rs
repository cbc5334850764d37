//! Real Redis topologies for the fleet tests: a master with a replica watched by three
//! Sentinels, and a three-master Cluster made by `redis-cli --cluster create`.

use super::free_port;
use super::redis::RedisServer;
use super::wait_until;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One command to the server on `port`.
pub fn redis_command(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connection)
}

/// A free port can be taken by another test before a server binds it: up to three tries.
fn retried(mut start: impl FnMut() -> Option<RedisServer>) -> Option<RedisServer> {
    (0..3).find_map(|_| start())
}

fn text(value: &redis::Value) -> String {
    redis::from_redis_value::<String>(value.clone()).unwrap_or_default()
}

/// A master, its replica and three Sentinels (quorum 2) watching it as `edge`.
pub struct SentinelSet {
    pub master: Option<RedisServer>,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts the set and waits until every Sentinel knows the replica and the other two.
    pub fn start() -> SentinelSet {
        let master = retried(|| RedisServer::start_on(free_port())).expect("redis-server");
        let master_port = master.port.to_string();
        let replica = retried(|| {
            RedisServer::start_with(free_port(), &["--replicaof", "127.0.0.1", &master_port])
        })
        .expect("replica");
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| {
                retried(|| {
                    let port = free_port();
                    let dir = std::env::temp_dir()
                        .join(format!("edgegate-sentinel-{}-{port}", std::process::id()));
                    std::fs::create_dir_all(&dir).expect("sentinel dir");
                    let conf = dir.join("sentinel.conf");
                    std::fs::write(
                        &conf,
                        format!(
                            "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor edge 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds edge 1000\n\
                         sentinel failover-timeout edge 5000\n\
                         sentinel parallel-syncs edge 1\n",
                            dir.display(),
                            master.port
                        ),
                    )
                    .expect("sentinel.conf");
                    let child = Command::new("redis-server")
                        .arg(&conf)
                        .arg("--sentinel")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server --sentinel");
                    RedisServer::started(port, child)
                })
                .expect("sentinel up")
            })
            .collect();
        let set = SentinelSet {
            master: Some(master),
            replica,
            sentinels,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            set.sentinels.iter().all(|sentinel| {
                let known =
                    |what: &str| match redis_command(sentinel.port, &["SENTINEL", what, "edge"]) {
                        Ok(redis::Value::Array(items)) => items.len(),
                        _ => 0,
                    };
                known("replicas") == 1 && known("sentinels") == 2
            })
        });
        assert!(
            ready,
            "the Sentinels never found the replica and each other"
        );
        set
    }

    /// `host:port` of each Sentinel.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's port as the first Sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        let reply = redis_command(
            self.sentinels[0].port,
            &["SENTINEL", "get-master-addr-by-name", "edge"],
        )
        .ok()?;
        let (_, port): (String, String) = redis::from_redis_value(reply).ok()?;
        port.parse().ok()
    }

    /// Kills the master process (the Sentinels promote the replica).
    pub fn kill_master(&mut self) {
        if let Some(master) = self.master.take() {
            master.stop();
        }
    }
}

/// Three masters sharing the 16384 slots.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, joins them with `redis-cli --cluster create` and waits for `ok`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                retried(|| {
                    let port = free_port();
                    RedisServer::start_with(
                        port,
                        &[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            &format!("nodes-{port}.conf"),
                            "--cluster-node-timeout",
                            "3000",
                        ],
                    )
                })
                .expect("cluster node")
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.addresses())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (scripts/install-deps.sh test)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let ok = wait_until(Duration::from_secs(30), || {
            cluster.nodes.iter().all(|node| {
                redis_command(node.port, &["CLUSTER", "INFO"])
                    .map(|info| text(&info).contains("cluster_state:ok"))
                    .unwrap_or(false)
            })
        });
        assert!(ok, "the cluster never reached cluster_state:ok");
        cluster
    }

    /// `host:port` of each node.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// Every key stored, with the port of the node holding it.
    pub fn keys(&self) -> Vec<(u16, String)> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            if let Ok(reply) = redis_command(node.port, &["KEYS", "*"]) {
                let names: Vec<String> = redis::from_redis_value(reply).unwrap_or_default();
                keys.extend(names.into_iter().map(|name| (node.port, name)));
            }
        }
        keys
    }

    /// Moves `key`'s slot (and its keys) from the node on `from` to the node on `to`, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE, then the new owner
    /// announced to every node.
    pub fn move_slot_of(&self, key: &str, from: u16, to: u16) {
        let id = |port: u16| text(&redis_command(port, &["CLUSTER", "MYID"]).expect("MYID"));
        let slot: i64 = redis::from_redis_value(
            redis_command(from, &["CLUSTER", "KEYSLOT", key]).expect("KEYSLOT"),
        )
        .expect("slot");
        let slot = slot.to_string();
        let (from_id, to_id) = (id(from), id(to));
        redis_command(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
            .expect("IMPORTING");
        redis_command(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
            .expect("MIGRATING");
        let keys: Vec<String> = redis::from_redis_value(
            redis_command(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"])
                .expect("GETKEYSINSLOT"),
        )
        .expect("keys");
        if !keys.is_empty() {
            let to_port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            redis_command(from, &migrate).expect("MIGRATE");
        }
        for node in &self.nodes {
            redis_command(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
                .expect("SETSLOT NODE");
        }
    }
}
