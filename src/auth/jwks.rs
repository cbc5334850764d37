//! Remote JWK sets (`jwks_url`), fetched over HTTP(S) through Pingora's own connector: at start
//! and every `jwks_refresh` by a background service, and when a token names an unknown `kid`
//! (single-flight, at most once per 30 s). A failed fetch keeps the last good set; until a first
//! set arrives, requests needing it are answered 503.

use super::keys::KeySet;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use jsonwebtoken::Algorithm;
use log::{info, warn};
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// At most one refetch per this long for unknown `kid`s.
const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(30);
/// While no key set has ever loaded, retry at least this often.
const RETRY_UNTIL_LOADED: Duration = Duration::from_secs(1);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One provider's remote key set.
pub struct RemoteJwks {
    provider: String,
    url: http::Uri,
    refresh: Duration,
    /// The provider's algorithms: a fetched key is usable for these only.
    algorithms: Vec<Algorithm>,
    keys: ArcSwapOption<KeySet>,
    /// Bumped on every successful load.
    generation: AtomicU64,
    /// Serialises fetches (single flight).
    fetching: tokio::sync::Mutex<()>,
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    connector: Connector,
}

impl RemoteJwks {
    /// A key set for `provider` at `url`, not fetched yet.
    pub fn new(
        provider: &str,
        url: http::Uri,
        refresh: Duration,
        algorithms: Vec<Algorithm>,
    ) -> Self {
        RemoteJwks {
            provider: provider.to_string(),
            url,
            refresh,
            algorithms,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(()),
            last_unknown_kid_fetch: Mutex::new(None),
            connector: Connector::new(None),
        }
    }

    /// Counts successful loads; changes whenever the key set may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// The current keys (None until the first successful fetch).
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Fetches now and swaps the set in on success; the previous set stays on failure.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _flight = self.fetching.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<usize, String> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT * 2, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", FETCH_TIMEOUT * 2)),
        };
        match result {
            Ok(keys) => {
                let count = keys.len();
                self.keys.store(Some(Arc::new(keys)));
                self.generation.fetch_add(1, Relaxed);
                info!(
                    "JWT provider {}: loaded {count} key(s) from {}",
                    self.provider, self.url
                );
                Ok(count)
            }
            Err(error) => {
                warn!(
                    "JWT provider {}: cannot fetch {}: {error}; keeping the previous keys",
                    self.provider, self.url
                );
                Err(error)
            }
        }
    }

    /// For a token with an unknown `kid`: refetch unless one ran in the last 30 s; concurrent
    /// callers share one fetch. True when a newer key set is available afterwards.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let seen = self.generation.load(Relaxed);
        let _flight = self.fetching.lock().await;
        if self.generation.load(Relaxed) != seen {
            return true; // another request's refetch finished while this one waited
        }
        {
            let Ok(mut last) = self.last_unknown_kid_fetch.lock() else {
                return false;
            };
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFETCH_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.fetch_and_store().await.is_ok()
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let tls = self.url.scheme_str() == Some("https");
        let host = self.url.host().ok_or("the URL has no host")?.to_string();
        let port = self.url.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let target = self.url.path_and_query().map_or("/", |pq| pq.as_str());
        let addresses = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let mut last_error = format!("{host} resolved to no address");
        for address in addresses {
            let mut peer = HttpPeer::new(address, tls, host.clone());
            peer.options.connection_timeout = Some(FETCH_TIMEOUT);
            peer.options.total_connection_timeout = Some(FETCH_TIMEOUT);
            peer.options.read_timeout = Some(FETCH_TIMEOUT);
            peer.options.write_timeout = Some(FETCH_TIMEOUT);
            match self.get(&peer, &host, port, tls, target).await {
                Ok(body) => return parse(&self.provider, &body, &self.algorithms),
                Err(error) => last_error = format!("{address}: {error}"),
            }
        }
        Err(last_error)
    }

    async fn get(
        &self,
        peer: &HttpPeer,
        host: &str,
        port: u16,
        tls: bool,
        target: &str,
    ) -> Result<Vec<u8>, String> {
        let (mut session, _) = self
            .connector
            .get_http_session(peer)
            .await
            .map_err(|e| e.to_string())?;
        let mut request =
            RequestHeader::build("GET", target.as_bytes(), None).map_err(|e| e.to_string())?;
        let default_port = if tls { 443 } else { 80 };
        let host_header = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        request
            .insert_header(http::header::HOST, host_header)
            .map_err(|e| e.to_string())?;
        request
            .insert_header(http::header::ACCEPT, "application/json")
            .map_err(|e| e.to_string())?;
        request
            .insert_header(
                http::header::USER_AGENT,
                concat!("edgegate/", env!("CARGO_PKG_VERSION")),
            )
            .map_err(|e| e.to_string())?;
        session
            .write_request_header(Box::new(request))
            .await
            .map_err(|e| e.to_string())?;
        session
            .finish_request_body()
            .await
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        if status != 200 {
            return Err(format!("answered {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err("the key set is larger than 1 MiB".into());
            }
        }
        Ok(body)
    }
}

/// A fetched JWK set document: its usable keys (unusable ones are logged and counted), or why
/// it holds none.
pub fn parse(provider: &str, body: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
    let decoded = super::keys::from_jwk_set(body, algorithms, true)?;
    super::jwt::report_skipped(provider, &decoded.skipped);
    decoded.usable().map(|decoded| decoded.keys)
}

/// The remote key sets of the configuration in force (they change on reload).
pub type KeySetSource = Arc<dyn Fn() -> Vec<Arc<RemoteJwks>> + Send + Sync>;

/// Background service: fetch every remote key set at start, then every `jwks_refresh`
/// (every second until a first set has loaded); after a reload, the new configuration's sets.
pub struct Refresher {
    sets: KeySetSource,
    reloads: watch::Receiver<u64>,
}

impl Refresher {
    /// A refresher for the sets `sets` returns, again after each change of `reloads`.
    pub fn new(sets: KeySetSource, reloads: watch::Receiver<u64>) -> Self {
        Refresher { sets, reloads }
    }
}

/// Fetches every set once, concurrently (failures are logged by `refresh`).
pub async fn fetch_all(sets: &[Arc<RemoteJwks>]) {
    let mut first = tokio::task::JoinSet::new();
    for set in sets {
        let set = Arc::clone(set);
        first.spawn(async move { set.refresh().await });
    }
    while first.join_next().await.is_some() {}
}

async fn keep_fresh(set: Arc<RemoteJwks>, mut shutdown: ShutdownWatch) {
    loop {
        let wait = if set.keys().is_some() {
            set.refresh
        } else {
            RETRY_UNTIL_LOADED.min(set.refresh)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // A failure keeps the last good set and is logged by `refresh`.
        let _ = set.refresh().await;
    }
}

#[async_trait]
impl BackgroundService for Refresher {
    /// One fetch of every set before the proxy starts (it depends on this service), so a new or
    /// upgraded process verifies tokens from its first request when the key server is up.
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let sets = (self.sets)();
        fetch_all(&sets).await;
        ready.notify_ready();
        crate::lifecycle::run_each_until_shutdown(
            sets,
            || (self.sets)(),
            self.reloads.clone(),
            shutdown,
            |set, shutdown| keep_fresh(Arc::clone(set), shutdown),
        )
        .await;
    }
}
