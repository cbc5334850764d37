//! Builds the Pingora server from a validated model: the proxy service with its listeners,
//! the admin service and the background services (the proxy waits for the health checker).

use crate::admin::AdminApp;
use crate::auth::jwks::Refresher;
use crate::config::{ListenerSpec, Model, ServerSettings};
use crate::gateway::Gateway;
use crate::lifecycle;
use crate::listener::EdgeApp;
use crate::observability::{access_log, metrics};
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::tls::Terminator;
use crate::upstream::health::HealthChecker;
use crate::upstream::outlier::Sweeper;
use arc_swap::ArcSwap;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceHandle;
use std::sync::Arc;
use std::time::Duration;

/// How `edgegate run` was asked to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::BuildError),
    #[error("upgrade: {0}")]
    Handover(#[from] lifecycle::HandoverError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// What SIGHUP and SIGUSR1 act on.
struct Operator {
    snapshot: Arc<ArcSwap<Snapshot>>,
    reloader: Reloader,
    terminators: Vec<Arc<Terminator>>,
}

#[async_trait::async_trait]
impl lifecycle::SignalTarget for Operator {
    async fn reload(&self) {
        log::info!("SIGHUP: reloading the configuration");
        self.reloader.reload().await;
        for terminator in &self.terminators {
            match terminator.reload() {
                Ok(()) => log::info!("listener `{}`: certificates re-read", terminator.listener()),
                Err(error) => log::error!("{error}; the previous certificates stay in use"),
            }
        }
    }

    fn reopen_logs(&self) {
        match self.snapshot.load().access_log.reopen() {
            Ok(()) => log::info!("SIGUSR1: access log reopened"),
            Err(error) => log::error!("SIGUSR1: cannot reopen the access log: {error}"),
        }
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Pingora's HTTP proxy around our [`Gateway`], with bounded HTTP/2 from clients.
fn proxy_app(
    server: &Server,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    settings: &crate::config::ServerSettings,
) -> pingora_proxy::HttpProxy<Gateway> {
    let mut proxy =
        pingora_proxy::http_proxy(&server.configuration, Gateway::new(Arc::clone(snapshot)));
    let mut options = HttpServerOptions::default();
    // An idle HTTP/2 connection is closed like an idle HTTP/1 keep-alive one.
    options.h2_idle_timeout = Some(settings.keepalive_timeout);
    proxy.server_options = Some(options);
    let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(settings.max_request_header_size as u32)
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buffer_size(H2_SEND_BUFFER)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS);
    proxy.h2_options = Some(h2);
    proxy
}

/// Streams one HTTP/2 client may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Flow-control windows: what a client may send before the gateway reads (bounds buffered bodies).
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per stream for a slow client.
const H2_SEND_BUFFER: usize = 256 * 1024;
/// Streams reset by the client before being accepted (the "rapid reset" attack bound).
const H2_PENDING_RESETS: usize = 20;

/// A built server and the state it must write out when it stops.
pub struct Edgegate {
    server: Server,
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Edgegate {
    /// Serves until told to stop, then writes out the access log.
    pub fn run(self) {
        self.server.run(RunArgs::default());
        access_log::drain(&self.snapshot.load().access_log);
    }
}

/// Builds a ready-to-run server; [`Edgegate::run`] starts it.
pub fn build(model: Model, options: RunOptions) -> Result<Edgegate, StartError> {
    metrics::init();
    let settings = model.server.clone();
    let listeners = model.listeners.clone();
    let admin_address = model.admin_address;
    // Everything that can fail is built before the listeners are taken: `run -u` with a bad
    // configuration or key file exits here and the running instance never notices.
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(model)?));
    let terminators = listeners
        .iter()
        .filter_map(|listener| {
            let tls = listener.tls.as_ref()?;
            Some(Terminator::new(&listener.name, tls).map(Arc::new))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut server = pingora_server(&settings, &options)?;
    let prerequisites = add_background_services(&mut server, &snapshot, &terminators);
    let proxy = proxy_service(&server, &snapshot, &settings, &listeners, &terminators);
    let proxy_handle = server.add_service(proxy);
    // The proxy accepts once backends are probed and key sets fetched (or failed) once.
    for prerequisite in &prerequisites {
        proxy_handle.add_dependency(prerequisite);
    }
    server.add_service(admin_service(&snapshot, admin_address));
    Ok(Edgegate { server, snapshot })
}

/// The Pingora server, holding the listeners (handed over by the running instance on `run -u`).
fn pingora_server(settings: &ServerSettings, options: &RunOptions) -> Result<Server, StartError> {
    let conf = ServerConf {
        threads: settings.threads,
        daemon: options.daemon,
        pid_file: settings.pid_file.clone(),
        upgrade_sock: settings.upgrade_sock.clone(),
        grace_period_seconds: Some(whole_seconds(settings.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(settings.shutdown_timeout)),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let phases = server.watch_execution_phase();
    if options.upgrade {
        let pid = lifecycle::request_handover(&settings.pid_file)?;
        log::info!("asked edgegate (pid {pid}) to hand over its listeners");
    }
    // Receives the listeners from the old process when upgrading (before a daemon forks).
    server.bootstrap();
    if !options.daemon {
        // The daemonizer writes it in daemon mode; `run -u` finds the instance to replace here.
        if let Err(error) = lifecycle::write_pid_file(&settings.pid_file) {
            log::warn!("cannot write the pid file {}: {error}", settings.pid_file);
        }
    }
    server.add_service(background_service(
        "drain watcher",
        lifecycle::PhaseWatcher(std::sync::Mutex::new(Some(phases))),
    ));
    Ok(server)
}

/// Health checks, JWKS refreshes, ejection sweeps and operator signals; returns the services
/// the proxy waits for before it accepts.
fn add_background_services(
    server: &mut Server,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    terminators: &[Arc<Terminator>],
) -> [ServiceHandle; 3] {
    let reloader = Reloader::new(Arc::clone(snapshot));
    let live = Arc::clone(snapshot);
    let pools: crate::upstream::health::PoolSource = Arc::new(move || live.load().pools.clone());
    let health = server.add_service(background_service(
        "health checks",
        HealthChecker::new(Arc::clone(&pools), reloader.subscribe()),
    ));
    let live = Arc::clone(snapshot);
    let key_sets: crate::auth::jwks::KeySetSource =
        Arc::new(move || live.load().auth.remote_key_sets());
    let refresher = server.add_service(background_service(
        "JWKS refresher",
        Refresher::new(key_sets, reloader.subscribe()),
    ));
    server.add_service(background_service(
        "outlier ejection sweeper",
        Sweeper::new(pools),
    ));
    let signals = server.add_service(background_service(
        "operator signals",
        lifecycle::Signals(Box::new(Operator {
            snapshot: Arc::clone(snapshot),
            reloader,
            terminators: terminators.to_vec(),
        })),
    ));
    [health, refresher, signals]
}

fn proxy_service(
    server: &Server,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    settings: &ServerSettings,
    listeners: &[ListenerSpec],
    terminators: &[Arc<Terminator>],
) -> Service<EdgeApp> {
    let mut proxy = Service::new(
        "edgegate proxy".to_string(),
        EdgeApp::new(
            proxy_app(server, snapshot, settings),
            listeners,
            terminators,
            Arc::clone(snapshot),
        ),
    );
    for listener in listeners {
        // Pingora's default 64 KiB socket read buffer is zeroed, so resident, for every idle
        // client. HTTP/1 reads land in Pingora's own buffers (a socket buffer only adds a copy);
        // under TLS, `tls::stream` buffers only while bytes are pending. Writes are
        // gathered by `listener::coalesce`, which holds no buffer between responses.
        let endpoint = ListenerConfig::tcp(listener.address.to_string())
            .l4_buffer(L4BufferSettings::unbuffered());
        proxy.add_listener(endpoint);
    }
    proxy
}

fn admin_service(
    snapshot: &Arc<ArcSwap<Snapshot>>,
    address: std::net::SocketAddr,
) -> Service<HttpServer<AdminApp>> {
    let mut admin = Service::new(
        "edgegate admin".to_string(),
        HttpServer::new_app(AdminApp::new(Arc::clone(snapshot))),
    );
    admin.add_tcp(&address.to_string());
    // Operator traffic is light; one thread keeps it off the proxy's cores.
    admin.threads = Some(1);
    admin
}
