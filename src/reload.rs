//! Configuration reload (SIGHUP): re-read the file, validate, build the next snapshot next to the
//! running one, ready what it adds (probe new backends, fetch new key sets), then swap it in.
//! Requests in flight finish on the snapshot they started with; a bad file changes nothing.

use crate::config::{self, Model};
use crate::observability::metrics;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::watch;

/// Swaps configurations in and tells the background services (health checks, key refresh,
/// ejection sweeps) to follow.
pub struct Reloader {
    snapshot: Arc<ArcSwap<Snapshot>>,
    generation: watch::Sender<u64>,
}

impl Reloader {
    /// A reloader for `snapshot`; [`Self::subscribe`] hands out change notifications.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Reloader {
            snapshot,
            generation: watch::channel(0).0,
        }
    }

    /// Notified after every successful reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reloads from the file the running configuration came from; logs and counts the result.
    pub async fn reload(&self) {
        let current = self.snapshot.load_full();
        let path = current.model.source.clone();
        let model = match config::load(&path) {
            Ok(model) => model,
            Err(error) => {
                log::error!("reload refused, the running configuration stays:\n{error}");
                metrics::config_reload(false);
                return;
            }
        };
        for setting in needs_restart(&current.model, &model) {
            log::warn!(
                "reload: `{setting}` changed; it takes effect only through `edgegate run -u` \
                 (the running value stays)"
            );
        }
        let successor = match Snapshot::build_after(model, Some(&current)) {
            Ok(successor) => successor,
            Err(error) => {
                log::error!(
                    "reload refused, the running configuration stays: {}: {error}",
                    path.display()
                );
                metrics::config_reload(false);
                return;
            }
        };
        crate::upstream::health::probe_new_backends(&successor.new_pools).await;
        crate::auth::jwks::fetch_all(&successor.new_key_sets).await;
        let hash = successor.snapshot.model.source_hash;
        self.snapshot.store(Arc::new(successor.snapshot));
        self.generation.send_modify(|generation| *generation += 1);
        metrics::config_reload(true);
        log::info!(
            "reloaded {} (config hash {hash:016x}; {} pool(s) rebuilt)",
            path.display(),
            successor.new_pools.len()
        );
    }
}

/// Settings a running process cannot change (they belong to its sockets and threads).
fn needs_restart(running: &Model, next: &Model) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.listeners != next.listeners {
        changed.push("listeners");
    }
    if running.admin_address != next.admin_address {
        changed.push("admin.address");
    }
    let lock_timeout = |m: &Model| m.cache.as_ref().map(|c| c.lock_timeout);
    if running.cache.is_some() && lock_timeout(running) != lock_timeout(next) {
        changed.push("cache.lock_timeout");
    }
    let (a, b) = (&running.server, &next.server);
    for (name, differs) in [
        ("server.threads", a.threads != b.threads),
        ("server.pid_file", a.pid_file != b.pid_file),
        ("server.upgrade_sock", a.upgrade_sock != b.upgrade_sock),
        ("server.grace_period", a.grace_period != b.grace_period),
        (
            "server.shutdown_timeout",
            a.shutdown_timeout != b.shutdown_timeout,
        ),
    ] {
        if differs {
            changed.push(name);
        }
    }
    changed
}
