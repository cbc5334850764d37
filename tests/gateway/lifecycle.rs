//! The process lifecycle under load: zero-downtime upgrades (`run -u`), a failed handover that
//! leaves the old process serving, graceful stop, log reopening, daemon mode.

use crate::support::{binary, free_port, wait_until, Gateway, Load, Origin};
use std::process::Command;
use std::time::Duration;

fn gateway(origin: &Origin) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        origin.addr
    ))
}

#[test]
fn three_upgrades_in_a_row_under_load_fail_no_request() {
    let origin = Origin::start("app");
    let mut gw = gateway(&origin);
    let load = Load::start(gw.proxy, "/", 16);
    load.wait_progress(400);
    let mut pids = vec![gw.pid()];
    for round in 0..3 {
        let old_status = gw.upgrade(&format!("upgrade-{round}.log"));
        assert!(
            old_status.success(),
            "the old process exits 0: {old_status}"
        );
        pids.push(gw.pid());
        load.wait_progress(200);
    }
    let counts = load.finish();
    println!("three upgrades under load: {counts:?}");
    assert_eq!(
        (counts.io_errors, counts.bad_status),
        (0, 0),
        "{counts:?}\n{}",
        gw.stderr()
    );
    assert!(counts.ok >= 1000, "the load kept flowing: {counts:?}");
    assert!(
        counts.reconnects > 16,
        "draining processes closed connections: {counts:?}"
    );
    pids.dedup();
    assert_eq!(pids.len(), 4, "each upgrade started a new process");
    let pid_file = std::fs::read_to_string(gw.dir.join("edgegate.pid")).unwrap();
    assert_eq!(pid_file.trim(), gw.pid().to_string());
    assert!(gw.get("/").status == 200);
}

#[test]
fn a_handover_that_cannot_start_leaves_the_old_process_serving() {
    let origin = Origin::start("app");
    let gw = gateway(&origin);
    let running = std::fs::read_to_string(gw.dir.join("edgegate.yaml")).unwrap();

    // Invalid YAML for the new process: it reports why and exits before signalling anyone.
    let invalid = gw.dir.join("invalid.yaml");
    std::fs::write(
        &invalid,
        running.replace("upstream: app", "upstream: nowhere"),
    )
    .unwrap();
    let mut attempt = gw.spawn_upgrade(Some(&invalid), "invalid.log");
    let status = attempt.wait().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(gw.dir.join("invalid.log")).unwrap();
    assert!(
        log.contains("routes[0].upstream: no upstream named `nowhere`"),
        "{log}"
    );

    // Valid YAML whose runtime cannot be built (the access log cannot be opened).
    let unbuildable = gw.dir.join("unbuildable.yaml");
    let access_log = gw.dir.join("access.log");
    std::fs::write(
        &unbuildable,
        running.replace(
            &access_log.display().to_string(),
            "/nonexistent-dir/access.log",
        ),
    )
    .unwrap();
    let mut attempt = gw.spawn_upgrade(Some(&unbuildable), "unbuildable.log");
    assert!(!attempt.wait().unwrap().success());
    let log = std::fs::read_to_string(gw.dir.join("unbuildable.log")).unwrap();
    assert!(log.contains("cannot open the access log"), "{log}");

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.get("/").status, 200, "the old process still serves");
    assert!(
        !gw.stderr().contains("SIGQUIT"),
        "it was never asked to leave"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let origin = Origin::start("app");
    origin.set(|b| b.delay = Duration::from_millis(800));
    let mut gw = gateway(&origin);
    let proxy = gw.proxy;
    let in_flight: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || crate::support::get(proxy, "/slow").status))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || origin.hits() == 4));
    gw.signal("TERM");
    for request in in_flight {
        assert_eq!(request.join().unwrap(), 200, "in-flight requests complete");
    }
    let status = gw.wait_exit(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(proxy).is_err(),
        "no longer listening"
    );
    // Requests finished during the grace period are logged before the process exits.
    let logged = std::fs::read_to_string(gw.dir.join("access.log")).unwrap();
    assert_eq!(logged.matches("\"path\":\"/slow\"").count(), 4, "{logged}");
}

#[test]
fn sigusr1_reopens_the_access_log_after_rotation() {
    let origin = Origin::start("app");
    let gw = gateway(&origin);
    assert_eq!(gw.get("/before").status, 200);
    assert_eq!(gw.access_log(1).len(), 1);
    let log = gw.dir.join("access.log");
    let rotated = gw.dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("USR1");
    assert!(wait_until(Duration::from_secs(5), || gw
        .stderr()
        .contains("access log reopened")));
    assert_eq!(gw.get("/after").status, 200);
    let lines = gw.access_log(1);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["path"], "/after");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"));
}

#[test]
fn daemon_mode_detaches_and_writes_the_pid_file() {
    let origin = Origin::start("app");
    let dir = crate::support::temp_dir();
    let proxy = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let config = dir.join("edgegate.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  threads: 1\n  pid_file: {d}/edgegate.pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period: 1s\n  shutdown_timeout: 1s\n\
             listeners: [{{ name: http, address: \"{proxy}\" }}]\nadmin: {{ address: \"{admin}\" }}\naccess_log: {{ format: json, path: {d}/access.log }}\n\
             upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
            origin.addr,
            d = dir.display()
        ),
    )
    .unwrap();
    let status = Command::new(binary())
        .args(["run", "-d", "-c"])
        .arg(&config)
        .status()
        .unwrap();
    assert!(status.success(), "the launching process exits at once");
    let pid_file = dir.join("edgegate.pid");
    assert!(wait_until(Duration::from_secs(10), || {
        crate::support::try_request(proxy.parse().unwrap(), "GET", "/", &[], b"")
            .is_ok_and(|r| r.status == 200)
    }));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The access-log writer runs in the daemon, not only in the process that forked it.
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(dir.join("access.log"))
            .is_ok_and(|log| log.contains("\"status\":200"))
    }));
    // Stop the daemon this test started, by the pid it wrote.
    crate::support::send_signal(pid.parse().unwrap(), "TERM");
    assert!(wait_until(Duration::from_secs(15), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }));
}

#[test]
fn the_systemd_unit_verifies_and_outlasts_the_drain() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("systemd/edgegate.service")).unwrap();
    for line in [
        "Type=forking",
        "PIDFile=/run/edgegate/edgegate.pid",
        "ExecStartPre=/usr/local/bin/edgegate check -c /etc/edgegate/edgegate.yaml",
        "ExecReload=/usr/local/bin/edgegate run -d -u -c /etc/edgegate/edgegate.yaml",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    let stop_timeout: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec in seconds");
    let shipped = edgegate::config::load(&root.join("conf/edgegate.yaml")).unwrap();
    let drain = shipped.server.grace_period + shipped.server.shutdown_timeout;
    assert!(Duration::from_secs(stop_timeout) > drain);

    let output = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze verifies the unit: scripts/install-deps.sh test installs it");
    assert!(output.status.success());
    // Verify a copy whose commands point at the binary under test (verify checks they exist).
    let dir = crate::support::temp_dir();
    let copy = dir.join("edgegate.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/edgegate", binary())).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}
