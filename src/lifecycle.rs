//! The process's life around Pingora's: the pid file, asking a running instance to hand over
//! its listeners (`run -u`), draining keep-alive connections once the process is on its way out,
//! and the signals Pingora leaves to us (SIGHUP reload, SIGUSR1 log reopen).

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

static DRAINING: AtomicBool = AtomicBool::new(false);

/// The process is handing over to a new one or stopping: responses close their connections so
/// clients reconnect (to the new process) instead of reusing a connection about to go away.
pub fn draining() -> bool {
    DRAINING.load(Relaxed)
}

/// Why `run -u` could not ask the running instance to hand over.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot read the running instance's pid from {path}: {source}")]
    PidFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} does not hold a process id")]
    BadPid { path: String },
    #[error("process {pid} (from {path}) is not a running edgegate")]
    NotEdgegate { pid: i32, path: String },
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
}

/// Asks the instance whose pid is in `pid_file` to send its listeners over the upgrade socket
/// and drain (SIGQUIT). Called once this process has validated its configuration and built
/// everything it needs, so a new process that cannot start never stops the old one.
pub fn request_handover(pid_file: &str) -> Result<i32, HandoverError> {
    let text = std::fs::read_to_string(pid_file).map_err(|source| HandoverError::PidFile {
        path: pid_file.to_string(),
        source,
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| HandoverError::BadPid {
            path: pid_file.to_string(),
        })?;
    // A stale pid file may name an unrelated process by now: only signal an edgegate.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    if pid == std::process::id() as i32 || (comm.trim() != own.trim() && !comm.contains("edgegate"))
    {
        return Err(HandoverError::NotEdgegate {
            pid,
            path: pid_file.to_string(),
        });
    }
    kill(Pid::from_raw(pid), Signal::SIGQUIT)
        .map_err(|source| HandoverError::Signal { pid, source })?;
    Ok(pid)
}

/// Writes this process's id to `path` (daemon mode leaves it to Pingora's daemonizer).
pub fn write_pid_file(path: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Sets [`draining`] when Pingora starts a graceful upgrade or stop.
pub struct PhaseWatcher(pub Mutex<Option<broadcast::Receiver<ExecutionPhase>>>);

#[async_trait]
impl BackgroundService for PhaseWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.0.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        loop {
            tokio::select! {
                phase = phases.recv() => match phase {
                    Ok(ExecutionPhase::GracefulUpgradeTransferringFds)
                    | Ok(ExecutionPhase::GracefulUpgradeCloseTimeout)
                    | Ok(ExecutionPhase::GracefulTerminate) => {
                        if !DRAINING.swap(true, Relaxed) {
                            log::info!("draining: responses now close their connections");
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = shutdown.changed() => {
                    DRAINING.store(true, Relaxed);
                    break;
                }
            }
        }
    }
}

/// What the operator signals ask for.
#[async_trait]
pub trait SignalTarget: Send + Sync {
    /// SIGHUP: re-read the configuration and swap it in.
    async fn reload(&self);
    /// SIGUSR1: reopen the access-log file (after logrotate moved it).
    fn reopen_logs(&self);
}

/// Listens for SIGHUP and SIGUSR1 (Pingora handles QUIT, TERM and INT).
pub struct Signals(pub Box<dyn SignalTarget>);

#[async_trait]
impl BackgroundService for Signals {
    /// Ready once the handlers are installed: the proxy waits for it, so a SIGHUP sent as soon
    /// as the gateway answers reloads instead of killing the process (the default action).
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let (Ok(mut hangup), Ok(mut user1)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) else {
            log::error!("cannot listen for SIGHUP/SIGUSR1: reload and log reopening are off");
            ready.notify_ready();
            return;
        };
        ready.notify_ready();
        loop {
            tokio::select! {
                _ = hangup.recv() => self.0.reload().await,
                _ = user1.recv() => self.0.reopen_logs(),
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Runs `task` for each of `items`, and after every change of `reloads` stops them all and runs
/// it for what `current` returns then; returns at shutdown. Background services that follow the
/// configuration in force (health checks, key refresh) are built on this.
pub async fn run_each_until_shutdown<T, Task, Run>(
    mut items: Vec<T>,
    current: impl Fn() -> Vec<T>,
    mut reloads: tokio::sync::watch::Receiver<u64>,
    mut shutdown: ShutdownWatch,
    task: Task,
) where
    Task: Fn(&T, ShutdownWatch) -> Run,
    Run: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let mut tasks = tokio::task::JoinSet::new();
        for item in &items {
            tasks.spawn(task(item, shutdown.clone()));
        }
        tokio::select! {
            changed = reloads.changed() => {
                if changed.is_err() {
                    // No reload can come any more: these keep running until shutdown.
                    let _ = shutdown.changed().await;
                    return;
                }
                tasks.abort_all();
                items = current();
            }
            _ = shutdown.changed() => return,
        }
    }
}
