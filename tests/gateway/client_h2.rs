//! HTTP/2 from clients: over TLS (ALPN h2) and h2c with prior knowledge, through every feature,
//! with the same edge checks and bounds as HTTP/1.1. The client is the `h2` crate.

use crate::support::ca::Ca;
use crate::support::{free_port, wait_until, Gateway, Origin};
use crate::tls_listener::{connect, connector, setup, tls_gateway};
use std::net::SocketAddr;
use std::time::Duration;

/// Method, path and headers of one request.
type H2Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A request owned by the client task.
struct OwnedRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// One HTTP/2 answer: status, headers, body.
struct H2Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Sends `requests` (method, path, headers) one after another on one HTTP/2 connection to
/// `addr`: over TLS (ALPN h2, trusting `tls`'s CA, SNI `api.test`) or h2c with prior knowledge.
fn h2_requests(addr: SocketAddr, tls: Option<&Ca>, requests: &[H2Request<'_>]) -> Vec<H2Answer> {
    let requests: Vec<OwnedRequest> = requests
        .iter()
        .map(|(method, path, headers)| OwnedRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
        .collect();
    let connector = tls.map(|ca| connector(ca, |b| b.set_alpn_protos(b"\x02h2").unwrap()));
    runtime_block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        match connector {
            Some(connector) => {
                let ssl = connector.configure().unwrap().into_ssl("api.test").unwrap();
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                std::pin::Pin::new(&mut stream).connect().await.unwrap();
                assert_eq!(stream.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
                h2_exchange(stream, requests).await
            }
            None => h2_exchange(tcp, requests).await,
        }
    })
}

async fn h2_exchange<S>(io: S, requests: Vec<OwnedRequest>) -> Vec<H2Answer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut answers = Vec::new();
    for OwnedRequest {
        method,
        path,
        headers,
    } in requests
    {
        let mut request = http::Request::builder()
            .method(method.as_str())
            .uri(format!("https://api.test{path}"));
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let (response, _) = client
            .send_request(request.body(()).unwrap(), true)
            .unwrap();
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        answers.push(H2Answer {
            status,
            headers,
            body: bytes,
        });
    }
    answers
}

#[test]
fn http2_over_tls_goes_through_auth_rate_limits_and_the_cache() {
    let (_, ca, cert, origin) = setup();
    origin.set(|b| b.headers = vec![("Cache-Control".into(), "max-age=60".into())]);
    let key_hash = edgegate::auth::api_key::hash_key_hex("h2-key");
    let gw = tls_gateway(
        &origin,
        &format!("certificates: [{cert}]"),
        Some(&format!(
            "auth:\n  api_keys:\n    keys:\n      - {{ consumer: partner, sha256: {key_hash} }}\n\
             rate_limits:\n  policies:\n    few: {{ algorithm: fixed_window, key: consumer, limit: 2, window: 1m }}\n\
             cache: {{ max_size: 1MiB }}\n\
             routes:\n\
             \x20 - {{ name: cached, match: {{ path_prefix: /cached }}, upstream: app, cache: {{ ttl: 30s }} }}\n\
             \x20 - {{ name: keyed, upstream: app, auth: {{ api_key: true }}, rate_limits: [few] }}\n"
        )),
        "",
    );
    let key: &[(&str, &str)] = &[("x-api-key", "h2-key")];
    let answers = h2_requests(
        gw.proxy,
        Some(&ca),
        &[
            ("GET", "/keyed", &[]),
            ("GET", "/keyed", key),
            ("GET", "/keyed", key),
            ("GET", "/keyed", key),
            ("GET", "/cached/doc", &[]),
            ("GET", "/cached/doc", &[]),
        ],
    );
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [401, 200, 200, 429, 200, 200]);
    let unauthorized: serde_json::Value = serde_json::from_slice(&answers[0].body).unwrap();
    assert_eq!(unauthorized["error"], "unauthorized");
    let seen: serde_json::Value = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(answers[2].headers["x-ratelimit-remaining"], "0");
    assert!(answers[3].headers.contains_key("retry-after"));
    assert_eq!(answers[4].headers["x-cache"], "MISS");
    assert_eq!(answers[5].headers["x-cache"], "HIT");
    assert_eq!(origin.hits(), 3, "two keyed requests and one cache miss");
    let log = gw.access_log(6);
    assert!(
        log.iter().all(|line| line["protocol"] == "HTTP/2"),
        "{log:?}"
    );
}

#[test]
fn h2c_with_prior_knowledge_works_only_where_enabled_and_http11_still_does() {
    let origin = Origin::start("app");
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let body = format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        origin.addr
    );
    let gw = Gateway::start_with_listener(&body, address, "h2c: true");
    let answers = h2_requests(
        gw.proxy,
        None,
        &[("GET", "/one", &[]), ("GET", "/two", &[])],
    );
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 200]
    );
    let seen: serde_json::Value = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(seen["target"], "/two");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(gw.get("/h1").status, 200, "HTTP/1.1 on the same listener");
    assert_eq!(gw.access_log(3)[0]["protocol"], "HTTP/2");

    // Without h2c the preface is not HTTP/1: refused, never proxied.
    let plain = Gateway::start(&body);
    let exchange = crate::support::raw_exchange(
        plain.proxy,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Duration::from_millis(500),
    );
    assert!(
        exchange.responses.iter().all(|r| r.status != 200),
        "{:?}",
        exchange
            .responses
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>()
    );
    assert_eq!(origin.hits(), 3);
}

#[test]
fn an_http2_client_that_never_sends_its_preface_is_closed() {
    let (_, ca, cert, origin) = setup();
    let gw = tls_gateway(
        &origin,
        &format!("certificates: [{cert}]"),
        None,
        "  header_read_timeout: 1s\n",
    );
    let client = connector(&ca, |b| b.set_alpn_protos(b"\x02h2").unwrap());
    let mut stream = connect(&client, gw.proxy, Some("api.test")).unwrap();
    let started = std::time::Instant::now();
    // The gateway's SETTINGS may arrive first; then the connection must end.
    let mut buffer = [0u8; 256];
    while let Ok(read @ 1..) = std::io::Read::read(&mut stream, &mut buffer) {
        assert!(read <= buffer.len());
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed only by the client's timeout"
    );
    wait_until(Duration::from_secs(5), || {
        gw.metric("edgegate_client_timeouts_total{phase=\"header\"}")
            .unwrap_or(0.0)
            >= 1.0
    });
}

#[test]
fn http2_requests_get_the_same_edge_checks_and_bounded_headers() {
    let origin = Origin::start("app");
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
            origin.addr
        ),
        address,
        "h2c: true",
    );
    let answers = h2_requests(
        gw.proxy,
        None,
        &[
            ("GET", "/a/../echo//x?q=%2F", &[]),
            ("TRACE", "/", &[]),
            ("GET", "/%2F", &[]),
        ],
    );
    assert_eq!(answers[0].status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&answers[0].body).unwrap();
    assert_eq!(seen["target"], "/echo/x?q=%2F", "normalized like HTTP/1");
    assert_eq!(answers[1].status, 405);
    assert_eq!(answers[2].status, 400);
    assert_eq!(origin.hits(), 1);

    // A header list over server.max_request_header_size (64 KiB) never reaches the backend.
    let huge = "x".repeat(100 * 1024);
    let outcome = runtime_block_on(async move {
        let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
        let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::builder()
            .uri("http://api.test/big")
            .header("x-big", huge)
            .body(())
            .unwrap();
        match client.send_request(request, true) {
            Ok((response, _)) => response.await.map(|r| r.status().as_u16()).ok(),
            Err(_) => None,
        }
    });
    assert_ne!(outcome, Some(200), "{outcome:?}");
    assert_eq!(origin.hits(), 1);
}

fn runtime_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
