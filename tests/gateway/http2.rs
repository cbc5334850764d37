//! `http2: true` towards plaintext backends: h2c with prior knowledge, multiplexed.

use crate::support::Gateway;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// An h2c-only origin answering JSON with the HTTP version and target it saw.
struct H2cOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

fn start_h2c_origin() -> H2cOrigin {
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
    let addr = crate::support::spawn_async_origin(move |listener| async move {
        while let Ok((socket, _)) = listener.accept().await {
            conns.fetch_add(1, SeqCst);
            let reqs = Arc::clone(&reqs);
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    reqs.fetch_add(1, SeqCst);
                    let body = serde_json::json!({
                            "version": format!("{:?}", request.version()),
                            "target": request.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/"),
                        })
                        .to_string();
                    let response = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .header("content-length", body.len())
                        .header("x-origin", "h2c")
                        .body(())
                        .unwrap();
                    if let Ok(mut stream) = respond.send_response(response, false) {
                        let _ = stream.send_data(bytes::Bytes::from(body), true);
                    }
                }
            });
        }
    });
    H2cOrigin {
        addr,
        connections,
        requests,
    }
}

#[test]
fn http2_backends_are_spoken_to_in_h2c_over_few_connections() {
    let origin = start_h2c_origin();
    let gw = Gateway::start(&format!(
        "upstreams:\n  grpcish:\n    http2: true\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - {{ name: all, upstream: grpcish }}\n",
        origin.addr
    ));
    for i in 0..10 {
        let response = gw.get(&format!("/items/{i}?x=1"));
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        assert_eq!(body["version"], "HTTP/2.0");
        assert_eq!(body["target"], format!("/items/{i}?x=1"));
    }
    assert_eq!(origin.requests.load(SeqCst), 10);
    assert!(
        origin.connections.load(SeqCst) <= 2,
        "{} connections for 10 sequential requests",
        origin.connections.load(SeqCst)
    );
}

#[test]
fn aggregation_parts_speak_h2c_to_http2_backends_over_pooled_connections() {
    let origin = start_h2c_origin();
    let gw = Gateway::start(&format!(
        "upstreams:\n  grpcish:\n    http2: true\n    targets: [{{ address: \"{}\" }}]\n\
         routes:\n  - {{ name: agg, aggregate: {{ parts: {{ a: {{ upstream: grpcish, path: \"/a?n={{query.n}}\" }}, b: {{ upstream: grpcish, path: /b }} }} }} }}\n",
        origin.addr
    ));
    for i in 0..10 {
        let response = gw.get(&format!("/any?n={i}"));
        assert_eq!(response.status, 200, "{}", response.text());
        let data = &response.json()["data"];
        assert_eq!(data["a"]["version"], "HTTP/2.0");
        assert_eq!(data["a"]["target"], format!("/a?n={i}"));
        assert_eq!(data["b"]["target"], "/b");
    }
    assert_eq!(origin.requests.load(SeqCst), 20);
    assert!(
        origin.connections.load(SeqCst) <= 3,
        "{} connections for 20 parts",
        origin.connections.load(SeqCst)
    );
}
