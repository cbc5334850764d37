//! Slow and greedy clients: request heads dribbled a byte at a time, bodies that stall, and more
//! connections than a listener (or one address) may hold.

use crate::support::{read_response, wait_until, Gateway, Origin};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

fn single(origin: &Origin) -> String {
    format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        origin.addr
    )
}

/// Sends a request head one byte every `pace`; returns how long until the gateway hung up and
/// what it said.
fn dribble(addr: SocketAddr, pace: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(200)
    );
    let mut answer = Vec::new();
    for byte in head.bytes() {
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        thread::sleep(pace);
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.read_to_end(&mut answer);
    (started.elapsed(), answer)
}

#[test]
fn dribbling_clients_are_cut_while_normal_clients_are_all_served() {
    let origin = Origin::start("app");
    // 2 s, not 1: with 250 client threads starting on a busy 2-core machine, a normal client can
    // take most of a second between its connect and its first write.
    let gw = Gateway::start_with_server(&single(&origin), "  header_read_timeout: 2s\n");
    let proxy = gw.proxy;
    let dribblers: Vec<_> = (0..50)
        .map(|_| thread::spawn(move || dribble(proxy, Duration::from_millis(500))))
        .collect();
    let clients: Vec<_> = (0..200)
        .map(|_| {
            thread::spawn(move || {
                let stream = TcpStream::connect(proxy).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut statuses = Vec::new();
                for _ in 0..3 {
                    writer
                        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                        .unwrap();
                    statuses.push(read_response(&mut reader, false).map_or(0, |r| r.status));
                    thread::sleep(Duration::from_millis(200));
                }
                statuses
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), [200, 200, 200]);
    }
    for dribbler in dribblers {
        let (lasted, answer) = dribbler.join().unwrap();
        assert!(
            lasted < Duration::from_secs(6),
            "a dribbler held its connection for {lasted:?}"
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 408 ") && text.contains("\"error\":\"request_timeout\""),
            "{text}"
        );
    }
    assert_eq!(
        origin.hits(),
        600,
        "only the normal clients' requests were proxied"
    );
    assert!(gw
        .metric("edgegate_client_timeouts_total{phase=\"header\"}")
        .is_some_and(|n| n >= 50.0));
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout() {
    let origin = Origin::start("app");
    let gw = Gateway::start_with_server(&single(&origin), "  header_read_timeout: 1s\n");
    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    assert!(stream.read_to_end(&mut rest).is_ok() && rest.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn a_stalled_body_is_answered_408_and_the_connection_closed() {
    let origin = Origin::start("app");
    let gw = Gateway::start_with_server(&single(&origin), "  body_read_timeout: 1s\n");
    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-a-little")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader, false).unwrap();
    assert_eq!(response.status, 408, "{}", response.text());
    assert_eq!(response.json()["error"], "request_timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    let mut rest = Vec::new();
    assert!(reader.read_to_end(&mut rest).is_ok() && rest.is_empty());
    assert_eq!(
        gw.metric("edgegate_client_timeouts_total{phase=\"body\"}"),
        Some(1.0)
    );
}

/// A connection from the loopback address `from` (127.0.0.x: each is another client address).
fn open(addr: SocketAddr, from: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(2))
        .unwrap();
    socket.into()
}

/// The gateway closed the connection without a word (and did not keep it open).
fn closed_at_once(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn get_on(stream: &TcpStream) -> u16 {
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    read_response(&mut reader, false).map_or(0, |r| r.status)
}

#[test]
fn connections_over_the_listener_or_per_address_limit_are_closed_at_once() {
    let origin = Origin::start("app");
    let addr: SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .unwrap();
    let gw = Gateway::start_with_listener(
        &single(&origin),
        addr,
        "max_connections: 4, max_connections_per_ip: 3",
    );
    let open_now = || gw.metric("edgegate_listener_connections{listener=\"capped\"}");
    let refused = |reason: &str| {
        gw.metric(&format!(
            "edgegate_connections_refused_total{{listener=\"capped\",reason=\"{reason}\"}}"
        ))
    };
    // The start-up probes connected from 127.0.0.1; once a request on a later connection has been
    // answered they have all been accepted, and they are gone when the count is back to zero.
    let probe = open(addr, "127.0.0.1");
    assert_eq!(get_on(&probe), 200);
    drop(probe);
    assert!(wait_until(Duration::from_secs(5), || open_now() == Some(0.0)));

    let mut held: Vec<TcpStream> = (0..3).map(|_| open(addr, "127.0.0.2")).collect();
    assert!(wait_until(Duration::from_secs(5), || open_now() == Some(3.0)));
    let mut fourth = open(addr, "127.0.0.2");
    assert!(
        closed_at_once(&mut fourth),
        "a fourth connection from one address"
    );
    assert_eq!(refused("max_connections_per_ip"), Some(1.0));

    held.push(open(addr, "127.0.0.3"));
    assert!(wait_until(Duration::from_secs(5), || open_now() == Some(4.0)));
    let mut fifth = open(addr, "127.0.0.4");
    assert!(
        closed_at_once(&mut fifth),
        "a fifth connection on the listener"
    );
    assert_eq!(refused("max_connections"), Some(1.0));

    for stream in &held {
        assert_eq!(
            get_on(stream),
            200,
            "established connections are unaffected"
        );
    }
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || open_now() == Some(0.0)));
    let again = open(addr, "127.0.0.2");
    assert_eq!(get_on(&again), 200, "freed slots are usable again");
}
