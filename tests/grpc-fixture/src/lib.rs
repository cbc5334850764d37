//! Test-only gRPC origin for edgegate's black-box tests: the `Echo` service of `proto/echo.proto`
//! (unary, server streaming, bidirectional streaming) and the standard `grpc.health.v1` service
//! (tonic-health), served over h2c on an ephemeral port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, client and server.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("edgegate.test");
}

pub use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

/// A running origin; it lives until the test process exits.
pub struct GrpcOrigin {
    pub addr: SocketAddr,
    /// Calls of the Echo service received.
    pub calls: Arc<AtomicUsize>,
    health: tonic_health::server::HealthReporter,
    runtime: tokio::runtime::Handle,
}

impl GrpcOrigin {
    /// Sets what `grpc.health.v1.Health/Check` answers for the whole server (service "").
    pub fn set_serving(&self, serving: bool) {
        let health = self.health.clone();
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.runtime
            .block_on(async move { health.set_service_status("", status).await });
    }
}

struct EchoService {
    calls: Arc<AtomicUsize>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let request = request.into_inner();
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        }
        if request.fail_code != 0 {
            return Err(Status::new(
                tonic::Code::from(request.fail_code as i32),
                format!("failed as asked: {}", request.message),
            ));
        }
        let mut response = Response::new(EchoReply {
            message: request.message,
            index: 0,
            grpc_timeout: deadline,
        });
        response
            .metadata_mut()
            .insert("x-origin", "grpc-fixture".parse().expect("static"));
        Ok(response)
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let replies = (0..request.repeat).map(move |index| {
            Ok(EchoReply {
                message: format!("{} {index}", request.message),
                index,
                grpc_timeout: String::new(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut index = 0;
            while let Some(item) = incoming.next().await {
                let reply = item.map(|message| EchoReply {
                    message: message.message.to_uppercase(),
                    index,
                    grpc_timeout: String::new(),
                });
                index += 1;
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Starts the origin on 127.0.0.1 (an ephemeral port), serving.
pub fn start() -> GrpcOrigin {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local address");
    let calls = Arc::new(AtomicUsize::new(0));
    let service_calls = Arc::clone(&calls);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let (health, health_service) = handle.block_on(async {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        (reporter, service)
    });
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(EchoServer::new(EchoService {
                    calls: service_calls,
                }))
                .serve_with_incoming(incoming)
                .await;
        });
    });
    GrpcOrigin {
        addr,
        calls,
        health,
        runtime: handle,
    }
}
