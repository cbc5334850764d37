//! Connection handling: listeners, upstream keepalive pooling, downstream keepalive timeout.

use crate::support::{read_response, Gateway, Origin};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn single_origin(origin: &Origin) -> String {
    format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - {{ name: all, upstream: app }}\n",
        origin.addr
    )
}

#[test]
fn every_listener_serves() {
    let origin = Origin::start("app");
    let gw = Gateway::start_custom(&single_origin(&origin), "", 2);
    for proxy in &gw.proxies {
        assert_eq!(
            crate::support::get(*proxy, "/").status,
            200,
            "listener {proxy}"
        );
    }
}

#[test]
fn upstream_connections_are_reused() {
    let origin = Origin::start("app");
    let gw = Gateway::start(&single_origin(&origin));
    for _ in 0..30 {
        assert_eq!(gw.get("/").status, 200);
    }
    assert_eq!(origin.hits(), 30);
    assert!(
        origin.connections() <= 4,
        "30 sequential requests opened {} upstream connections",
        origin.connections()
    );
}

#[test]
fn idle_downstream_keepalive_connections_are_closed_after_the_timeout() {
    let origin = Origin::start("app");
    let gw = Gateway::start_with_server(&single_origin(&origin), "  keepalive_timeout: 1s\n");
    let mut stream = TcpStream::connect(gw.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(&mut reader, false).unwrap().status,
            200,
            "keepalive reuse"
        );
    }
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = reader.read_to_end(&mut rest).is_ok();
    assert!(
        closed && rest.is_empty(),
        "expected a clean close, got {rest:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let origin = Origin::start("app");
    origin.set(|b| b.delay = Duration::from_millis(700));
    let mut gw = Gateway::start(&single_origin(&origin));
    let proxy = gw.proxy;
    let in_flight = std::thread::spawn(move || crate::support::get(proxy, "/").status);
    assert!(crate::support::wait_until(
        Duration::from_secs(5),
        || origin.hits() == 1
    ));
    gw.signal("TERM");
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "the in-flight request was cut"
    );
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("edgegate did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn daemon_mode_detaches_and_writes_the_pid_file() {
    let origin = Origin::start("app");
    let dir = crate::support::temp_dir();
    let proxy = format!("127.0.0.1:{}", crate::support::free_port());
    let admin = format!("127.0.0.1:{}", crate::support::free_port());
    let config = format!(
        "server:\n  threads: 1\n  pid_file: {dir}/edgegate.pid\n  upgrade_sock: {dir}/upgrade.sock\n  grace_period: 1s\n  shutdown_timeout: 1s\n\
         listeners: [{{ name: http, address: \"{proxy}\" }}]\nadmin: {{ address: \"{admin}\" }}\naccess_log: {{ format: off }}\n{}",
        single_origin(&origin),
        dir = dir.display()
    );
    let path = dir.join("edgegate.yaml");
    std::fs::write(&path, config).unwrap();
    let status = std::process::Command::new(crate::support::binary())
        .args(["run", "-d", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the launching process should exit 0 after detaching"
    );
    let pid_file = dir.join("edgegate.pid");
    let mut pid = String::new();
    assert!(crate::support::wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !pid.is_empty()
    }));
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Ok(pid) = self.0.parse() {
                crate::support::send_signal(pid, "TERM");
            }
        }
    }
    let daemon = Stop(pid.clone());
    let proxy: std::net::SocketAddr = proxy.parse().unwrap();
    assert!(crate::support::wait_until(Duration::from_secs(10), || {
        crate::support::try_request(proxy, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200)
    }));
    drop(daemon);
    assert!(
        crate::support::wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the daemon did not stop on SIGTERM"
    );
}
