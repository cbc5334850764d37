//! Bounds that hold under unlucky conditions: a stalled access-log destination.

use crate::support::{read_response, Gateway, Origin};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn a_stdout_pipe_nobody_reads_never_stalls_requests() {
    let origin = Origin::start("app");
    let gw = Gateway::start_with_unread_stdout_log(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        origin.addr
    ));
    // Long paths make ~1.1 KiB lines: 10,000 of them overflow both the 64 KiB pipe and the
    // 4 MiB queue, so lines must be dropped for requests to go on.
    let request = format!("GET /{} HTTP/1.1\r\nHost: test.local\r\n", "p".repeat(1000));
    let proxy = gw.proxy;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let statuses = statuses_on_one_connection(proxy, 2500, |_| request.clone());
                assert!(statuses.iter().all(|&status| status == 200));
                statuses.len()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 10_000);
    let dropped = gw.metric("edgegate_access_log_dropped_total").unwrap();
    assert!(dropped > 0.0, "dropped lines are counted");
    // The admin listener and the metrics stay responsive too.
    assert_eq!(gw.admin_get("/health").status, 200);
}

/// Sends `count` requests on one keep-alive connection (`head(i)` builds each request head,
/// without the final blank line); returns their statuses.
fn statuses_on_one_connection(
    proxy: std::net::SocketAddr,
    count: usize,
    head: impl Fn(usize) -> String,
) -> Vec<u16> {
    let stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    (0..count)
        .map(|i| {
            writer
                .write_all(format!("{}\r\n", head(i)).as_bytes())
                .unwrap();
            read_response(&mut reader, false)
                .unwrap_or_else(|e| panic!("request {i} got no answer: {e}"))
                .status
        })
        .collect()
}

#[test]
fn a_flood_of_new_rate_limit_keys_never_resets_a_limited_client() {
    let origin = Origin::start("app");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         rate_limits:\n  max_keys: 1024\n  policies:\n    per_client: {{ algorithm: fixed_window, key: \"header:X-Client\", limit: 1, window: 1h }}\n\
         routes:\n  - {{ name: all, upstream: app, rate_limits: [per_client] }}\n",
        origin.addr
    ));
    let request = |client: &str| format!("GET / HTTP/1.1\r\nHost: t\r\nX-Client: {client}\r\n");
    assert_eq!(
        statuses_on_one_connection(gw.proxy, 2, |_| request("hot")),
        [200, 429]
    );
    // Four times the store's capacity of new clients, all inside the hot client's window.
    let flood = statuses_on_one_connection(gw.proxy, 4096, |i| request(&format!("c{i}")));
    assert!(flood.iter().all(|&status| status == 200));
    assert_eq!(
        statuses_on_one_connection(gw.proxy, 1, |_| request("hot")),
        [429],
        "the hot client's window survived"
    );
    assert!(gw.metric("edgegate_ratelimit_store_full_total").unwrap() > 0.0);
}

/// The process's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Peak RSS growth of a gateway answering 50 concurrent requests for distinct 4 MiB objects,
/// with or without caching them in a 16 MiB cache.
fn peak_growth_under_large_misses(cache: bool) -> u64 {
    let origin = Origin::start("app");
    let body = "x".repeat(4 << 20);
    origin.set(move |b| {
        b.body = Some(body);
        b.headers = vec![("Cache-Control".into(), "max-age=60".into())];
        // 4 MiB over ~1.3 s: all 50 responses are in flight (and filling) at once, in pieces
        // small enough that little of each queues in the proxy on a busy machine.
        b.trickle = Some(Duration::from_millis(10));
        b.trickle_bytes = 32 << 10;
    });
    let gw = Gateway::start(&format!(
        "cache: {{ max_size: 16MiB, max_object_size: 8MiB }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: all, upstream: app{} }}\n",
        origin.addr,
        if cache { ", cache: { ttl: 60s }" } else { "" }
    ));
    assert_eq!(gw.get("/warm").status, 200);
    let before = peak_rss(gw.pid());
    let proxy = gw.proxy;
    let clients: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let response = crate::support::get(proxy, &format!("/object?{i}"));
                (response.status, response.body.len())
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), (200, 4 << 20));
    }
    if cache {
        let status = gw.admin_get("/status").json();
        assert!(status["cache"]["bytes"].as_u64().unwrap() <= 16 << 20);
        assert_eq!(status["cache"]["filling"], 0);
    }
    peak_rss(gw.pid()).saturating_sub(before)
}

#[test]
fn concurrent_misses_of_large_objects_cost_at_most_the_cache_bound() {
    // Proxying alone holds some memory per large response in flight (Pingora batches body chunks
    // on their way to the client); caching may add at most `max_size` to that, plus noise. Before
    // fills were charged, every miss held its whole object: 50 x 4 MiB.
    let proxying = peak_growth_under_large_misses(false);
    let caching = peak_growth_under_large_misses(true);
    eprintln!(
        "peak RSS growth: {} KiB proxying, {} KiB caching",
        proxying >> 10,
        caching >> 10
    );
    assert!(
        caching < proxying + (16 << 20) + (24 << 20),
        "caching grew the peak by {} MiB, proxying alone by {} MiB",
        caching >> 20,
        proxying >> 20
    );
}
