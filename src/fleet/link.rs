//! One way to reach Redis whatever its topology: a server (a connection manager that reconnects
//! by itself), the master a set of Sentinels names (asked again after any failure, so a failover
//! is followed), or a Cluster (the client learns the slots and follows MOVED/ASK). Commands go
//! through [`RedisLink::connection`]; pub/sub through [`RedisLink::subscriber`].

use crate::config::{RedisSpec, RedisTopology};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, RedisFuture, TlsCertificates,
    TlsMode, Value,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A connection for commands, cheap to clone (each variant shares one multiplexed socket).
#[derive(Clone)]
pub enum Connection {
    Server(ConnectionManager),
    Master(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Master(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Master(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Master(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Why Redis could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(String);

/// For callers inside a `RedisResult`: no connection is an I/O error.
impl From<LinkError> for redis::RedisError {
    fn from(error: LinkError) -> Self {
        redis::RedisError::from((redis::ErrorKind::Io, "no connection", error.0))
    }
}

impl From<redis::RedisError> for LinkError {
    fn from(error: redis::RedisError) -> Self {
        LinkError(error.to_string())
    }
}

/// Redis as `rate_limits.redis` describes it; connects lazily, on first use.
pub struct RedisLink {
    spec: RedisSpec,
    /// The current command connection (`None`: not made yet, or dropped after a failure).
    current: parking_lot::Mutex<Option<Connection>>,
    /// A task is making a connection now.
    connecting: AtomicBool,
    /// When the last attempt failed, and why: callers fail fast for a moment after it.
    failure: parking_lot::Mutex<Option<(Instant, String)>>,
    /// Wakes the callers waiting for a connection.
    settled: Notify,
}

/// After a failed attempt, callers get its error without a new attempt for this long.
const RETRY_AFTER: Duration = Duration::from_millis(200);

impl RedisLink {
    /// A link for `spec` (validated at load); nothing is connected yet.
    pub fn new(spec: &RedisSpec) -> Self {
        RedisLink {
            spec: spec.clone(),
            current: parking_lot::Mutex::new(None),
            connecting: AtomicBool::new(false),
            failure: parking_lot::Mutex::new(None),
            settled: Notify::new(),
        }
    }

    fn connect_timeout(&self) -> Duration {
        self.spec.timeout.max(Duration::from_millis(250))
    }

    /// A connection for commands, made on first use and after [`RedisLink::failed`]. The
    /// connection is made by a task of its own, so a caller that gives up (its own timeout)
    /// does not abandon it, and one attempt serves every waiting caller.
    pub async fn connection(self: &Arc<Self>) -> Result<Connection, LinkError> {
        loop {
            let settled = self.settled.notified();
            if let Some(connection) = self.current.lock().clone() {
                return Ok(connection);
            }
            if let Some((at, why)) = self.failure.lock().as_ref() {
                if at.elapsed() < RETRY_AFTER {
                    return Err(LinkError(why.clone()));
                }
            }
            if !self.connecting.swap(true, Ordering::AcqRel) {
                let link = Arc::clone(self);
                tokio::spawn(async move {
                    let made = tokio::time::timeout(link.connect_timeout() * 4, link.connect())
                        .await
                        .unwrap_or_else(|_| {
                            Err(LinkError("no connection within the timeout".into()))
                        });
                    match made {
                        Ok(connection) => {
                            *link.current.lock() = Some(connection);
                            link.failure.lock().take();
                        }
                        Err(error) => *link.failure.lock() = Some((Instant::now(), error.0)),
                    }
                    link.connecting.store(false, Ordering::Release);
                    link.settled.notify_waiters();
                });
            }
            settled.await;
        }
    }

    /// A call on the current connection failed. A Sentinel master is asked for again next
    /// time (it may have failed over); a server's manager and a Cluster client reconnect by
    /// themselves.
    pub fn failed(&self) {
        if matches!(self.spec.topology, RedisTopology::Sentinel { .. }) {
            self.current.lock().take();
        }
    }

    async fn connect(&self) -> Result<Connection, LinkError> {
        match &self.spec.topology {
            RedisTopology::Server { url } => {
                let client = self.client(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout()))
                    .set_response_timeout(Some(self.spec.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Connection::Server(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTopology::Sentinel { .. } => {
                let client = self.sentinel_master().await?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout()))
                    .set_response_timeout(Some(self.spec.timeout));
                Ok(Connection::Master(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            RedisTopology::Cluster { addresses } => {
                let scheme = self.scheme();
                let mut builder = redis::cluster::ClusterClient::builder(
                    addresses.iter().map(|a| format!("{scheme}://{a}")),
                )
                .connection_timeout(self.connect_timeout())
                .response_timeout(self.spec.timeout)
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(200);
                if let Some(username) = &self.spec.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &self.spec.password {
                    builder = builder.password(&password.0);
                }
                if let Some(certificates) = self.certificates() {
                    builder = builder.tls(TlsMode::Secure).certs(certificates);
                }
                let client = builder.build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// `rediss` with TLS, else `redis`.
    fn scheme(&self) -> &'static str {
        if self.spec.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// The roots to verify Redis with (`None`: plain TCP; no `ca_file`: the system's roots).
    fn certificates(&self) -> Option<TlsCertificates> {
        self.spec.tls.as_ref().map(|tls| TlsCertificates {
            client_tls: None,
            root_cert: tls.ca_pem.clone(),
        })
    }

    /// A client for one server (`redis://` or `rediss://`), with the configured credentials
    /// and, with TLS, the configured roots.
    fn client(&self, address: &str) -> Result<redis::Client, LinkError> {
        let address = match (self.spec.tls.is_some(), address.strip_prefix("redis://")) {
            (true, Some(rest)) => format!("rediss://{rest}"),
            _ => address.to_string(),
        };
        let info = address.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.spec.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.spec.password {
            settings = settings.set_password(&password.0);
        }
        let info = info.set_redis_settings(settings);
        Ok(match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(info, certificates)?,
            None => redis::Client::open(info)?,
        })
    }

    /// The master the Sentinels name now.
    async fn sentinel_master(&self) -> Result<redis::Client, LinkError> {
        let RedisTopology::Sentinel {
            master_name,
            addresses,
            db,
        } = &self.spec.topology
        else {
            return Err(LinkError("not a Sentinel topology".into()));
        };
        let sentinels = addresses
            .iter()
            .filter_map(|address| {
                let (host, port) = address.rsplit_once(':')?;
                Some(ConnectionAddr::Tcp(host.to_string(), port.parse().ok()?))
            })
            .collect::<Vec<_>>();
        let mut builder =
            SentinelClientBuilder::new(sentinels, master_name.clone(), SentinelServerType::Master)?
                .set_client_to_redis_db(*db);
        if let Some(username) = &self.spec.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.spec.password {
            builder = builder.set_client_to_redis_password(&password.0);
        }
        if let Some(certificates) = self.certificates() {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(certificates);
        }
        let mut sentinel: SentinelClient = builder.build()?;
        Ok(sentinel.async_get_client().await?)
    }

    /// A pub/sub connection: to the server, to the Sentinels' master, or to the first Cluster
    /// node that answers (a Cluster carries every PUBLISH to every node).
    pub async fn subscriber(&self) -> Result<redis::aio::PubSub, LinkError> {
        let timeout = self.connect_timeout() * 4;
        let attempt = async {
            match &self.spec.topology {
                RedisTopology::Server { url } => {
                    Ok(self.client(url.as_str())?.get_async_pubsub().await?)
                }
                RedisTopology::Sentinel { .. } => {
                    Ok(self.sentinel_master().await?.get_async_pubsub().await?)
                }
                RedisTopology::Cluster { addresses } => {
                    let mut last = LinkError("no Cluster node listed".into());
                    for address in addresses {
                        match self.client(&format!("redis://{address}")) {
                            Ok(client) => match client.get_async_pubsub().await {
                                Ok(pubsub) => return Ok(pubsub),
                                Err(error) => last = error.into(),
                            },
                            Err(error) => last = error,
                        }
                    }
                    Err(last)
                }
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| LinkError("no pub/sub connection within the timeout".into()))?
    }
}
