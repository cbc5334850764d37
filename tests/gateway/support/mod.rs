//! Test support: the real `edgegate` binary started on ephemeral ports and stopped on drop,
//! plus the origin servers and client of `origin.rs`.

pub mod ca;
mod origin;
pub mod otlp;
pub mod redis;
pub mod redis_fleet;

pub use origin::*;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// The real `edgegate` binary running a config; killed on drop.
pub struct Gateway {
    pub proxy: SocketAddr,
    /// Every proxy listener (the first is `proxy`).
    pub proxies: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    child: Child,
}

/// Sends `signal` (a name without `SIG`, e.g. "TERM") to the process `pid` (through the
/// syscall: the tests need no `kill` binary).
pub fn send_signal(pid: u32, signal: &str) {
    let signal: nix::sys::signal::Signal = format!("SIG{signal}")
        .parse()
        .unwrap_or_else(|_| panic!("no signal named {signal}"));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_edgegate")
}

impl Gateway {
    /// Starts edgegate with `body` (YAML without `listeners`, `admin`, `server`, `access_log`,
    /// which are filled in with ephemeral ports, two threads and a file access log).
    pub fn start(body: &str) -> Gateway {
        Self::start_with_server(body, "")
    }

    /// Like `start`, with extra `server:` keys (indented two spaces, one per line).
    pub fn start_with_server(body: &str, server_extra: &str) -> Gateway {
        Self::start_custom(body, server_extra, 1)
    }

    /// Like `start_with_server`, with `listener_count` proxy listeners.
    pub fn start_custom(body: &str, server_extra: &str, listener_count: usize) -> Gateway {
        Self::launch(body, server_extra, listener_count, &[])
    }

    /// Like `start`, with extra environment variables for the process.
    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(body, "", 1, env)
    }

    /// Like `start`, with one listener on `address` whose extra keys are `listener_extra`
    /// (YAML flow-mapping entries, e.g. `max_connections: 4`).
    pub fn start_with_listener(body: &str, address: SocketAddr, listener_extra: &str) -> Gateway {
        Self::start_with_listener_and_server(body, "", address, listener_extra)
    }

    /// Like `start`, plus a second listener on `address` with `listener_extra` keys (named `extra`).
    pub fn start_with_second_listener(
        body: &str,
        address: SocketAddr,
        listener_extra: &str,
    ) -> Gateway {
        let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listeners = format!(
            "  - {{ name: http0, address: \"{plain}\" }}\n  - {{ name: extra, address: \"{address}\", {listener_extra} }}\n"
        );
        Self::launch_with(body, "", vec![plain, address], listeners, &[])
    }

    /// Like `start_with_listener`, with extra `server:` keys as in `start_with_server`.
    pub fn start_with_listener_and_server(
        body: &str,
        server_extra: &str,
        address: SocketAddr,
        listener_extra: &str,
    ) -> Gateway {
        let listeners =
            format!("  - {{ name: capped, address: \"{address}\", {listener_extra} }}\n");
        Self::launch_with(body, server_extra, vec![address], listeners, &[])
    }

    fn launch(
        body: &str,
        server_extra: &str,
        listener_count: usize,
        env: &[(&str, &str)],
    ) -> Gateway {
        let proxies: Vec<SocketAddr> = (0..listener_count)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let listeners: String = proxies
            .iter()
            .enumerate()
            .map(|(i, address)| format!("  - {{ name: http{i}, address: \"{address}\" }}\n"))
            .collect();
        Self::launch_with(body, server_extra, proxies, listeners, env)
    }

    /// Like `start`, with the access log on stdout and stdout a pipe that is never read.
    pub fn start_with_unread_stdout_log(body: &str) -> Gateway {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listeners = format!("  - {{ name: http0, address: \"{proxy}\" }}\n");
        Self::launch_full(body, "", vec![proxy], listeners, &[], true)
    }

    fn launch_with(
        body: &str,
        server_extra: &str,
        proxies: Vec<SocketAddr>,
        listeners: String,
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::launch_full(body, server_extra, proxies, listeners, env, false)
    }

    fn launch_full(
        body: &str,
        server_extra: &str,
        proxies: Vec<SocketAddr>,
        listeners: String,
        env: &[(&str, &str)],
        log_to_unread_stdout: bool,
    ) -> Gateway {
        let dir = temp_dir();
        let proxy = proxies[0];
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // `server_extra` may override the short drain defaults.
        let drain: String = ["grace_period: 1s", "shutdown_timeout: 1s"]
            .iter()
            .filter(|line| !server_extra.contains(line.split(':').next().unwrap_or("")))
            .map(|line| format!("  {line}\n"))
            .collect();
        let config = format!(
            "server:\n  threads: 2\n  pid_file: {dir}/edgegate.pid\n  upgrade_sock: {dir}/upgrade.sock\n{drain}{server_extra}\
             listeners:\n{listeners}\
             admin: {{ address: \"{admin}\" }}\n\
             access_log: {{ format: json, path: {log} }}\n{body}",
            dir = dir.display(),
            log = if log_to_unread_stdout {
                "stdout".to_string()
            } else {
                format!("{}/access.log", dir.display())
            }
        );
        let config_path = dir.join("edgegate.yaml");
        std::fs::write(&config_path, config).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(binary())
            .args(["run", "-c"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("EDGEGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            // The pipe's reading end stays in `child.stdout`, open and never read.
            .stdout(if log_to_unread_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut gateway = Gateway {
            proxy,
            proxies,
            admin,
            dir,
            child,
        };
        gateway.wait_ready();
        gateway
    }

    fn wait_ready(&mut self) {
        let up = wait_until(Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("edgegate exited with {status}:\n{}", self.stderr());
            }
            try_request(self.admin, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200)
                && self.proxies.iter().all(|p| TcpStream::connect(p).is_ok())
        });
        assert!(up, "edgegate did not start:\n{}", self.stderr());
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// `edgegate run -u` with `config` (default: the running one) and its stderr in `log_name`;
    /// the new process, not yet waited for.
    pub fn spawn_upgrade(&self, config: Option<&Path>, log_name: &str) -> Child {
        let default = self.dir.join("edgegate.yaml");
        let stderr = std::fs::File::create(self.dir.join(log_name)).unwrap();
        Command::new(binary())
            .args(["run", "-u", "-c"])
            .arg(config.unwrap_or(&default))
            .env(
                "RUST_LOG",
                std::env::var("EDGEGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// Replaces the running process with a new one through `run -u`: returns once the old one
    /// has exited (with its status) and the new one serves.
    pub fn upgrade(&mut self, log_name: &str) -> std::process::ExitStatus {
        let next = self.spawn_upgrade(None, log_name);
        let old_status = self
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the old process did not exit:\n{}", self.stderr()));
        self.child = next;
        let log = self.dir.join(log_name);
        let serving = wait_until(Duration::from_secs(10), || {
            try_request(self.admin, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(
            serving,
            "the new process does not serve:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        old_status
    }

    /// The process id of the running instance.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// What the process logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Access-log lines as JSON (waits for the periodic flush).
    pub fn access_log(&self, at_least: usize) -> Vec<serde_json::Value> {
        let path = self.dir.join("access.log");
        let mut lines = Vec::new();
        wait_until(Duration::from_secs(5), || {
            lines = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}"))
                })
                .collect();
            lines.len() >= at_least
        });
        lines
    }

    /// GET through the proxy.
    pub fn get(&self, target: &str) -> Response {
        get(self.proxy, target)
    }

    /// Any request through the proxy.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.proxy, method, target, headers, body)
    }

    /// GET on the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        get(self.admin, path)
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").text()
    }

    /// The value of the metric line that starts with `series` (name and labels).
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }
}

impl Gateway {
    /// Polls `/metrics` until `series` has `value` (metrics written in the logging phase land
    /// just after the client has its response); returns the whole text of the last scrape.
    pub fn wait_metric(&self, series: &str, value: f64) -> String {
        let mut text = String::new();
        let found = wait_until(Duration::from_secs(5), || {
            text = self.metrics();
            metric_value(&text, series) == Some(value)
        });
        assert!(found, "{series} never reached {value}:\n{text}");
        text
    }
}

/// Keep-alive clients sending GETs as fast as they are answered, reconnecting whenever a
/// response says `Connection: close`; every failure is counted.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Responses received so far, whatever their status.
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    workers: Vec<thread::JoinHandle<LoadCounts>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadCounts {
    pub ok: u64,
    /// Answers other than 200.
    pub bad_status: u64,
    /// Connect, write or read failures (a dropped or reset connection).
    pub io_errors: u64,
    pub reconnects: u64,
}

impl Load {
    /// Starts `connections` clients against `addr` requesting `target`.
    pub fn start(addr: SocketAddr, target: &str, connections: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let workers = (0..connections)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                let answered = std::sync::Arc::clone(&answered);
                let request = format!("GET {target} HTTP/1.1\r\nHost: test.local\r\n\r\n");
                thread::spawn(move || client_loop(addr, &request, &stop, &answered))
            })
            .collect();
        Load {
            stop,
            answered,
            workers,
        }
    }

    /// Waits (up to 30 s) until the clients got `more` answers after this call: the load has
    /// really been running, however slow the machine.
    pub fn wait_progress(&self, more: u64) {
        let answered = || self.answered.load(std::sync::atomic::Ordering::SeqCst);
        let target = answered() + more;
        assert!(
            wait_until(Duration::from_secs(30), || answered() >= target),
            "the load made no progress: {} of {target} answers",
            answered()
        );
    }

    /// Stops the clients and adds up their counts.
    pub fn finish(self) -> LoadCounts {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = LoadCounts::default();
        for worker in self.workers {
            let counts = worker.join().unwrap();
            total.ok += counts.ok;
            total.bad_status += counts.bad_status;
            total.io_errors += counts.io_errors;
            total.reconnects += counts.reconnects;
        }
        total
    }
}

fn client_loop(
    addr: SocketAddr,
    request: &str,
    stop: &std::sync::atomic::AtomicBool,
    answered: &std::sync::atomic::AtomicU64,
) -> LoadCounts {
    use std::io::{BufReader, Write};
    let mut counts = LoadCounts::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let reader = match connection.as_mut() {
            Some(reader) => reader,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = stream.set_nodelay(true);
                    counts.reconnects += 1;
                    connection.insert(BufReader::new(stream))
                }
                Err(_) => {
                    counts.io_errors += 1;
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = reader.get_mut().write_all(request.as_bytes());
        match sent.and_then(|()| read_response(reader, false)) {
            Ok(response) => {
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if response.status == 200 {
                    counts.ok += 1;
                } else {
                    counts.bad_status += 1;
                }
                if response
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    connection = None;
                }
            }
            Err(_) => {
                counts.io_errors += 1;
                connection = None;
            }
        }
    }
    counts
}

/// Finds `series` (e.g. `edgegate_backend_healthy{upstream="a",backend="b"}`) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `edgegate check -c path`, returning (success, stdout, stderr).
pub fn check(path: &Path) -> (bool, String, String) {
    let output = Command::new(binary())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a raw exchange on one connection produced.
#[derive(Debug)]
pub struct Exchange {
    pub responses: Vec<Response>,
    /// The gateway closed the connection (rather than leaving it open for more).
    pub closed: bool,
}

/// Writes `bytes` as they are on one connection and reads responses until the gateway closes
/// it or stays silent for `quiet`.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> Exchange {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(quiet)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut reader = BufReader::new(stream);
    let mut responses = Vec::new();
    loop {
        match reader.fill_buf() {
            Ok([]) => {
                return Exchange {
                    responses,
                    closed: true,
                }
            }
            Ok(_) => match read_response(&mut reader, false) {
                Ok(response) => responses.push(response),
                Err(_) => {
                    return Exchange {
                        responses,
                        closed: true,
                    }
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Exchange {
                    responses,
                    closed: false,
                }
            }
            Err(_) => {
                return Exchange {
                    responses,
                    closed: true,
                }
            }
        }
    }
}
