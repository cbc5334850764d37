//! gRPC through the gateway: a real tonic origin (tests/grpc-fixture, compiled from
//! proto/echo.proto) and a real tonic client over h2c; unary, server streaming and bidi calls with
//! their trailers, the gateway's own errors as gRPC statuses, `grpc-timeout`, and the
//! `grpc.health.v1` health check.

use crate::support::{free_port, wait_until, Gateway};
use grpc_fixture::pb::EchoRequest;
use grpc_fixture::{EchoClient, GrpcOrigin};
use prost::Message;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gateway with an h2c listener in front of `origin` (upstream `echo`, `http2: true`, with
/// `echo_extra` keys), more `upstreams` lines, and `sections` (routes and the rest).
fn gateway_with(origin: &GrpcOrigin, echo_extra: &str, upstreams: &str, sections: &str) -> Gateway {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    Gateway::start_with_listener(
        &format!(
            "upstreams:\n  echo: {{ http2: true, targets: [{{ address: \"{}\" }}]{echo_extra} }}\n{upstreams}{sections}",
            origin.addr
        ),
        address,
        "h2c: true",
    )
}

fn gateway(origin: &GrpcOrigin, echo_extra: &str, sections: &str) -> Gateway {
    gateway_with(origin, echo_extra, "", sections)
}

const ROUTES: &str = "auth:\n  api_keys:\n    keys: [{ consumer: partner, sha256: HASH }]\n\
     rate_limits:\n  policies:\n    one: { algorithm: fixed_window, key: consumer, limit: 1, window: 1m }\n\
     routes:\n\
     \x20 - { name: limited, match: { path_prefix: /edgegate.test.Echo/ServerStream }, upstream: echo, grpc: true, auth: { api_key: true }, rate_limits: [one] }\n\
     \x20 - { name: keyed, match: { path_prefix: /edgegate.test.Echo/Bidi }, upstream: echo, grpc: true, auth: { api_key: true } }\n\
     \x20 - { name: echo, match: { path_prefix: /edgegate.test.Echo/ }, upstream: echo, grpc: true }\n";

fn routes() -> String {
    ROUTES.replace("HASH", &edgegate::auth::api_key::hash_key_hex("grpc-key"))
}

async fn client(gw: &Gateway) -> EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gw.proxy))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoClient::new(channel)
}

fn keyed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", "grpc-key".parse().unwrap());
    request
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_string(),
        ..Default::default()
    }
}

#[test]
fn unary_streaming_and_bidi_calls_pass_through_with_their_trailers() {
    let origin = grpc_fixture::start();
    let gw = gateway(&origin, "", &routes());
    runtime().block_on(async {
        let mut client = client(&gw).await;
        let mut timed = tonic::Request::new(echo("hello"));
        timed.set_timeout(Duration::from_secs(5));
        let reply = client.unary(timed).await.unwrap();
        assert_eq!(
            reply.metadata().get("x-origin").unwrap(),
            "grpc-fixture",
            "response metadata passes"
        );
        let reply = reply.into_inner();
        assert_eq!(reply.message, "hello");
        // The backend is given what is left of the client's 5 s, in milliseconds.
        let left: u64 = reply
            .grpc_timeout
            .strip_suffix('m')
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("grpc-timeout seen: {:?}", reply.grpc_timeout));
        assert!((1_000..=5_000).contains(&left), "{left}");

        // A status set by the backend travels in the trailers.
        let failed = client
            .unary(EchoRequest {
                message: "nope".into(),
                fail_code: Code::NotFound as u32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(failed.code(), Code::NotFound);
        assert_eq!(failed.message(), "failed as asked: nope");

        let mut stream = client
            .server_stream(keyed(EchoRequest {
                message: "item".into(),
                repeat: 5,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let mut items = Vec::new();
        while let Some(item) = stream.message().await.unwrap() {
            items.push(item.message);
        }
        assert_eq!(items, ["item 0", "item 1", "item 2", "item 3", "item 4"]);
        assert!(
            stream.trailers().await.unwrap().is_some(),
            "trailers arrive"
        );

        let outbound = tokio_stream_of(["a", "b", "c"]);
        let mut replies = client.bidi(keyed(outbound)).await.unwrap().into_inner();
        let mut echoed = Vec::new();
        while let Some(reply) = replies.message().await.unwrap() {
            echoed.push((reply.index, reply.message));
        }
        assert_eq!(
            echoed,
            [
                (0, "A".to_string()),
                (1, "B".to_string()),
                (2, "C".to_string())
            ]
        );
    });
    assert_eq!(origin.calls.load(SeqCst), 4);
    let log = gw.access_log(4);
    assert!(log.iter().all(|l| l["protocol"] == "HTTP/2"), "{log:?}");
}

fn tokio_stream_of(items: [&'static str; 3]) -> impl futures_util::Stream<Item = EchoRequest> {
    futures_util::stream::iter(items.map(echo))
}

#[test]
fn errors_the_gateway_produces_are_grpc_statuses_on_grpc_routes() {
    let origin = grpc_fixture::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = gateway_with(
        &origin,
        "",
        &format!("  dead: {{ http2: true, targets: [{{ address: \"{dead}\" }}] }}\n"),
        &format!(
            "{}  - {{ name: down, match: {{ path_prefix: /edgegate.test.Down/ }}, upstream: dead, grpc: true }}\n",
            routes()
        ),
    );
    runtime().block_on(async {
        let mut client = client(&gw).await;
        let status = client
            .server_stream(EchoRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = client
            .bidi(tokio_stream_of(["x", "y", "z"]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        let first = client.server_stream(keyed(echo("once"))).await;
        assert!(first.is_ok());
        let status = client
            .server_stream(keyed(echo("twice")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.metadata().get("retry-after").is_some());

        let channel = Channel::from_shared(format!("http://{}", gw.proxy))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let unknown: Result<tonic::Response<grpc_fixture::pb::EchoReply>, _> = grpc
            .unary(
                tonic::Request::new(echo("?")),
                http::uri::PathAndQuery::from_static("/other.Service/Method"),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(unknown.unwrap_err().code(), Code::Unimplemented);
        grpc.ready().await.unwrap();
        let down: Result<tonic::Response<grpc_fixture::pb::EchoReply>, _> = grpc
            .unary(
                tonic::Request::new(echo("?")),
                http::uri::PathAndQuery::from_static("/edgegate.test.Down/Call"),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(down.unwrap_err().code(), Code::Unavailable);
    });
}

#[test]
fn grpc_timeout_bounds_the_upstream_exchange() {
    let origin = grpc_fixture::start();
    // The header is read by the gateway and then withheld from the backend (which would honour it
    // itself), so only the gateway can end the call; a raw h2 client does not enforce it either.
    let gw = gateway(
        &origin,
        "",
        "routes:\n  - { name: echo, upstream: echo, grpc: true, request_headers: { remove: [grpc-timeout] } }\n",
    );
    let slow = EchoRequest {
        message: "slow".into(),
        delay_ms: 3000,
        ..Default::default()
    };
    let mut body = vec![0u8];
    body.extend_from_slice(&(slow.encoded_len() as u32).to_be_bytes());
    slow.encode(&mut body).unwrap();
    let started = Instant::now();
    let (status, headers) = runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
        let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/edgegate.test.Echo/Unary", gw.proxy))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "300m")
            .body(())
            .unwrap();
        let (response, mut send) = h2.send_request(request, false).unwrap();
        send.send_data(body.into(), true).unwrap();
        let response = response.await.unwrap();
        (response.status(), response.headers().clone())
    });
    assert_eq!(status, 200);
    assert_eq!(
        headers["grpc-status"], "4",
        "DEADLINE_EXCEEDED: {headers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn grpc_health_checks_follow_the_backends_serving_status() {
    let origin = grpc_fixture::start();
    let gw = gateway(
        &origin,
        ", health_check: { type: grpc, interval: 300ms, timeout: 300ms, healthy_threshold: 1, unhealthy_threshold: 1 }",
        "routes:\n  - { name: echo, upstream: echo, grpc: true }\n",
    );
    let series = format!(
        "edgegate_backend_healthy{{backend=\"{}\",upstream=\"echo\"}}",
        origin.addr
    );
    assert_eq!(gw.metric(&series), Some(1.0));
    origin.set_serving(false);
    gw.wait_metric(&series, 0.0);
    let code = runtime().block_on(async {
        let mut client = client(&gw).await;
        client.unary(echo("x")).await.unwrap_err().code()
    });
    assert_eq!(code, Code::Unavailable);
    origin.set_serving(true);
    gw.wait_metric(&series, 1.0);
    let served = wait_until(Duration::from_secs(5), || {
        runtime().block_on(async { client(&gw).await.unary(echo("back")).await.is_ok() })
    });
    assert!(served);
}
