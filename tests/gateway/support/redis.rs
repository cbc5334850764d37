//! A real `redis-server` child process on a loopback port, killed on drop. Used by the black-box
//! tests and by `benches/ratelimit.rs` (which includes this file).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one on `port` (no persistence); None when `redis-server` is not installed or does
    /// not come up within 10 s.
    pub fn start_on(port: u16) -> Option<RedisServer> {
        Self::start_with(port, &[])
    }

    /// Like `start_on`, with extra `redis-server` arguments (e.g. `--replicaof`).
    pub fn start_with(port: u16, extra: &[&str]) -> Option<RedisServer> {
        let dir =
            std::env::temp_dir().join(format!("edgegate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Self::started(port, child)
    }

    /// Waits (up to 10 s) for `child` to listen on `port`.
    pub fn started(port: u16, child: Child) -> Option<RedisServer> {
        let mut server = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || server.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// Stops it (new connections are refused) and returns its port.
    pub fn stop(mut self) -> u16 {
        self.kill();
        self.port
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
