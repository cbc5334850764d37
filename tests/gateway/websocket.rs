//! WebSocket through the gateway: a real echo origin and client (tokio-tungstenite), auth and rate
//! limits on the upgrade request, the idle timeout, metrics and the access-log line, and a
//! graceful stop that lets open WebSockets run through the grace period; WebSockets over a TLS
//! listener (wss).

use crate::support::{wait_until, Gateway};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// An echo WebSocket origin; counts the connections it upgraded.
struct EchoOrigin {
    addr: SocketAddr,
    upgrades: Arc<AtomicUsize>,
}

fn start_echo_origin() -> EchoOrigin {
    let upgrades = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&upgrades);
    let addr = crate::support::spawn_async_origin(move |listener| async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
                    return;
                };
                counted.fetch_add(1, SeqCst);
                while let Some(Ok(message)) = ws.next().await {
                    let data = message.is_text() || message.is_binary();
                    if data && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    EchoOrigin { addr, upgrades }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens a WebSocket through the gateway; `Err(status)` when the upgrade is refused.
async fn open(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let mut request = format!("ws://{gw}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let tcp = tokio::net::TcpStream::connect(gw).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// Sends `text` and waits (at most 5 s) for its echo.
async fn echo(socket: &mut Socket, text: &str) -> Option<String> {
    socket.send(Message::text(text)).await.ok()?;
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .ok()??
        .ok()?;
    reply.into_text().ok().map(|t| t.to_string())
}

fn gateway(origin: &EchoOrigin, route_extra: &str, server_extra: &str) -> Gateway {
    Gateway::start_with_server(
        &format!(
            "auth:\n  api_keys:\n    keys: [{{ consumer: partner, sha256: {} }}]\n\
             rate_limits:\n  policies:\n    two: {{ algorithm: fixed_window, key: consumer, limit: 2, window: 1m }}\n\
             upstreams:\n  ws: {{ targets: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ name: chat, upstream: ws, auth: {{ api_key: true }}, rate_limits: [two]{route_extra} }}\n",
            edgegate::auth::api_key::hash_key_hex("ws-key"),
            origin.addr
        ),
        server_extra,
    )
}

const KEY: &[(&str, &str)] = &[("X-API-Key", "ws-key")];

#[test]
fn messages_round_trip_after_auth_and_rate_limits_ran_on_the_upgrade() {
    let origin = start_echo_origin();
    let gw = gateway(&origin, "", "");
    runtime().block_on(async {
        assert_eq!(open(gw.proxy, "/chat", &[]).await.err(), Some(401));
        assert_eq!(
            origin.upgrades.load(SeqCst),
            0,
            "refused before the backend"
        );

        let mut socket = open(gw.proxy, "/chat", KEY).await.unwrap();
        assert_eq!(echo(&mut socket, "hello").await.as_deref(), Some("hello"));
        socket
            .send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        let binary = socket.next().await.unwrap().unwrap();
        assert_eq!(binary.into_data().as_ref(), [0u8, 1, 2, 255]);
        let big = "x".repeat(200_000);
        assert_eq!(echo(&mut socket, &big).await.as_deref(), Some(big.as_str()));
        assert_eq!(
            gw.metric("edgegate_upgraded_connections{route=\"chat\"}"),
            Some(1.0)
        );

        let mut second = open(gw.proxy, "/chat", KEY).await.unwrap();
        assert_eq!(echo(&mut second, "again").await.as_deref(), Some("again"));
        assert_eq!(open(gw.proxy, "/chat", KEY).await.err(), Some(429));

        socket.close(None).await.unwrap();
        second.close(None).await.unwrap();
    });
    gw.wait_metric("edgegate_upgraded_connections{route=\"chat\"}", 0.0);
    assert_eq!(
        gw.metric("edgegate_upgrades_total{route=\"chat\"}"),
        Some(2.0)
    );
    assert_eq!(origin.upgrades.load(SeqCst), 2);
    // One line per upgraded connection, written when it ends: its lifetime and bytes each way.
    let log = gw.access_log(4);
    let tunnels: Vec<&serde_json::Value> = log.iter().filter(|l| l["status"] == 101).collect();
    assert_eq!(tunnels.len(), 2, "{log:?}");
    let first = tunnels
        .iter()
        .max_by_key(|l| l["bytes"].as_u64().unwrap())
        .unwrap();
    assert!(first["bytes"].as_u64().unwrap() > 200_000, "{first}");
    assert!(
        first["request_bytes"].as_u64().unwrap() > 200_000,
        "{first}"
    );
    assert_eq!(first["consumer"], "partner");
}

#[test]
fn an_idle_websocket_is_closed_and_a_busy_one_is_not() {
    let origin = start_echo_origin();
    let gw = gateway(&origin, ", websocket: { idle_timeout: 1s }", "");
    runtime().block_on(async {
        let mut socket = open(gw.proxy, "/chat", KEY).await.unwrap();
        let busy_until = Instant::now() + Duration::from_millis(2500);
        let mut idle_since = Instant::now();
        while Instant::now() < busy_until {
            assert_eq!(echo(&mut socket, "ping").await.as_deref(), Some("ping"));
            idle_since = Instant::now();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let end = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
        let closed = match end {
            Ok(None | Some(Err(_))) => true,
            Ok(Some(Ok(ref message))) => message.is_close(),
            Err(_) => false,
        };
        assert!(closed, "still open 10 s after going idle: {end:?}");
        assert!(
            idle_since.elapsed() >= Duration::from_millis(900),
            "closed {:?} after going idle",
            idle_since.elapsed()
        );
    });
    gw.wait_metric("edgegate_upgraded_connections{route=\"chat\"}", 0.0);
}

#[test]
fn a_graceful_stop_lets_open_websockets_run_through_the_grace_period() {
    let origin = start_echo_origin();
    let mut gw = gateway(&origin, "", "  grace_period: 4s\n  shutdown_timeout: 1s\n");
    runtime().block_on(async {
        let mut socket = open(gw.proxy, "/chat", KEY).await.unwrap();
        assert_eq!(echo(&mut socket, "before").await.as_deref(), Some("before"));
        gw.signal("TERM");
        let refused = wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(gw.proxy).is_err()
        });
        assert!(refused, "the listener should close at once");
        assert_eq!(
            echo(&mut socket, "during the grace period")
                .await
                .as_deref(),
            Some("during the grace period")
        );
    });
    let status = gw.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "edgegate did not exit after the grace period"
    );
}

#[test]
fn a_backend_that_does_not_switch_protocols_is_answered_as_it_said() {
    let plain = crate::support::Origin::start("plain");
    plain.set(|b| b.status = 426);
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        plain.addr
    ));
    let exchange = crate::support::raw_exchange(
        gw.proxy,
        b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        Duration::from_millis(500),
    );
    let response = &exchange.responses[0];
    assert_eq!(response.status, 426);
    assert_eq!(response.json()["origin"], "plain");
    assert_eq!(response.json()["headers"]["upgrade"], "websocket");
    assert!(exchange.closed);
    assert_eq!(
        gw.metric("edgegate_upgrades_total{route=\"all\"}"),
        Some(0.0)
    );
}

#[test]
fn websockets_pass_through_a_tls_listener() {
    let origin = start_echo_origin();
    let (_dir, ca, cert, http_origin) = crate::tls_listener::setup();
    // The catch-all `app` upstream comes with the helper; the second one is the echo origin.
    let gw = crate::tls_listener::tls_gateway(
        &http_origin,
        &format!("certificates: [{cert}]"),
        Some(&format!(
            "  ws: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: chat, upstream: ws }}\n",
            origin.addr
        )),
        "",
    );
    // Browsers open WebSockets on connections offering HTTP/1.1 only: the upgrade is HTTP/1.1.
    let connector =
        crate::tls_listener::connector(&ca, |b| b.set_alpn_protos(b"\x08http/1.1").unwrap());
    runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
        let ssl = connector.configure().unwrap().into_ssl("api.test").unwrap();
        let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        std::pin::Pin::new(&mut tls).connect().await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async("wss://api.test/chat", tls)
            .await
            .expect("the upgrade over TLS");
        socket.send(Message::text("over tls")).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), "over tls");
        // Larger than a TLS record, both ways.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
        socket.send(Message::binary(big.clone())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            reply.into_data()[..] == big[..],
            "the binary message comes back whole"
        );
    });
    assert_eq!(origin.upgrades.load(SeqCst), 1);
}
