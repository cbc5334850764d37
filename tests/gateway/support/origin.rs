//! A real HTTP/1.1 origin server and a raw HTTP/1.1 client, used by the black-box tests and by
//! `examples/demo_origin.rs` (which includes this file).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a server the test starts, taken below the kernel's
/// ephemeral range (`ip_local_port_range`): a port picked with `bind(:0)` and released is an
/// ephemeral port, and any outgoing connection (a gateway to its origin, say) may be given it
/// before the server under test binds it. Below that range only explicit binds compete; each
/// test process walks its own stretch of ports (by process id) and skips ports in use.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(12_000));
    let span = u32::from(high - low);
    let mut next = NEXT.lock().unwrap();
    let mut port =
        next.unwrap_or_else(|| low + (std::process::id().wrapping_mul(7919) % span) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= high { low } else { port + 1 };
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// A fresh directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "edgegate-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A byte stream an origin can serve HTTP on (plain TCP or TLS).
pub trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Wraps an accepted connection in TLS (None: the handshake failed).
pub type TlsWrap = Arc<dyn Fn(TcpStream) -> Option<Box<dyn ReadWrite>> + Send + Sync>;

/// What an origin does with the next requests.
#[derive(Clone, Debug)]
pub struct Behavior {
    pub status: u16,
    pub delay: Duration,
    pub health_status: u16,
    /// Served instead of the JSON echo when set.
    pub body: Option<String>,
    /// Extra response headers. An `ETag` among them makes a matching `If-None-Match` a 304.
    pub headers: Vec<(String, String)>,
    /// Read the request (it counts as a hit), then close the connection without answering.
    pub hang_up: bool,
    /// Send the body `trickle_bytes` (at least 1) at a time with this pause before each piece.
    pub trickle: Option<Duration>,
    pub trickle_bytes: usize,
    /// Trickle the response head too, not only the body.
    pub trickle_head: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            delay: Duration::ZERO,
            health_status: 200,
            body: None,
            headers: Vec::new(),
            hang_up: false,
            trickle: None,
            trickle_bytes: 1,
            trickle_head: false,
        }
    }
}

struct OriginState {
    name: String,
    behavior: Mutex<Behavior>,
    hits: AtomicUsize,
    health_hits: AtomicUsize,
    connections: AtomicUsize,
    stop: AtomicBool,
}

/// A real HTTP/1.1 origin on 127.0.0.1 answering JSON that names it (`x-origin` header too).
/// `/health` answers `health_status`; everything else `status` after `delay`.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin named `name` on a free port.
    pub fn start(name: &str) -> Origin {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts an origin on `addr` (to bring a stopped one back on its port).
    pub fn start_on(name: &str, addr: SocketAddr) -> Origin {
        Self::start_with(name, addr, None)
    }

    /// Starts an origin that speaks TLS with `tls` on every connection.
    pub fn start_tls(name: &str, tls: TlsWrap) -> Origin {
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), Some(tls))
    }

    fn start_with(name: &str, addr: SocketAddr, tls: Option<TlsWrap>) -> Origin {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            name: name.to_string(),
            behavior: Mutex::new(Behavior::default()),
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let acceptor = thread::spawn(move || {
            while !shared.stop.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        shared.connections.fetch_add(1, SeqCst);
                        let state = Arc::clone(&shared);
                        let tls = tls.clone();
                        thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                            match tls {
                                None => serve_connection(stream, state),
                                Some(wrap) => {
                                    if let Some(secured) = wrap(stream) {
                                        serve_connection(secured, state)
                                    }
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Origin {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// Changes what the origin does from now on.
    pub fn set(&self, change: impl FnOnce(&mut Behavior)) {
        change(&mut self.state.behavior.lock().unwrap());
    }

    /// Requests served, `/health` probes excluded.
    pub fn hits(&self) -> usize {
        self.state.hits.load(SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(SeqCst)
    }

    /// `/health` probes served.
    pub fn health_hits(&self) -> usize {
        self.state.health_hits.load(SeqCst)
    }

    /// Stops accepting: new connections are refused (open ones finish their current request).
    pub fn stop(mut self) -> SocketAddr {
        self.halt();
        self.addr
    }

    fn halt(&mut self) {
        self.state.stop.store(true, SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve_connection<S: Read + Write>(stream: S, state: Arc<OriginState>) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let behavior = state.behavior.lock().unwrap().clone();
        let status = if request.target == "/health" {
            state.health_hits.fetch_add(1, SeqCst);
            behavior.health_status
        } else {
            state.hits.fetch_add(1, SeqCst);
            if behavior.hang_up {
                return;
            }
            if !behavior.delay.is_zero() {
                thread::sleep(behavior.delay);
            }
            behavior.status
        };
        let response = response_for(&request, status, &behavior, &state.name);
        if send(reader.get_mut(), &response, &behavior).is_err() {
            return;
        }
        if request
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// One request as the origin saw it.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_bytes: usize,
}

/// Reads one request (a Content-Length or chunked body is read and counted); `None` at the
/// connection's end.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    if chunked {
        read_chunked(reader)?;
    }
    Some(Request {
        method,
        target,
        headers,
        body_bytes: body.len(),
    })
}

/// The whole response: a 304 when the client's `If-None-Match` matches the configured ETag,
/// else `status` with the configured body or a JSON echo of the request.
fn response_for(request: &Request, status: u16, behavior: &Behavior, origin: &str) -> String {
    let header_map: BTreeMap<String, String> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    let payload = match &behavior.body {
        Some(body) => body.clone(),
        None => serde_json::json!({
            "origin": origin,
            "method": request.method,
            "target": request.target,
            "headers": header_map,
            "body_bytes": request.body_bytes,
        })
        .to_string(),
    };
    let mut extra = String::new();
    for (name, value) in &behavior.headers {
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    let etag = behavior
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.as_str());
    let not_modified =
        etag.is_some() && header_map.get("if-none-match").map(String::as_str) == etag;
    if not_modified {
        format!("HTTP/1.1 304 Not Modified\r\nX-Origin: {origin}\r\n{extra}\r\n")
    } else {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Origin: {origin}\r\nServer: test-origin\r\n{extra}\r\n{payload}",
            payload.len(),
        )
    }
}

/// Writes `response` at once, or trickled as the behaviour says.
fn send(stream: &mut impl Write, response: &str, behavior: &Behavior) -> std::io::Result<()> {
    let Some(pause) = behavior.trickle else {
        return stream.write_all(response.as_bytes());
    };
    let head_end = if behavior.trickle_head {
        0
    } else {
        response.find("\r\n\r\n").map_or(0, |at| at + 4)
    };
    let (head, body) = response.as_bytes().split_at(head_end);
    stream.write_all(head)?;
    body.chunks(behavior.trickle_bytes.max(1))
        .try_for_each(|piece| {
            thread::sleep(pause);
            stream.write_all(piece).and_then(|()| stream.flush())
        })
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a new connection and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, target, headers, body)
        .unwrap_or_else(|e| panic!("{method} {target} via {addr}: {e}"))
}

/// `request` that reports I/O failures instead of panicking.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str("Host: test.local\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_response(&mut BufReader::new(stream), method == "HEAD")
}

/// Reads one response from `reader` (a keepalive connection stays usable afterwards).
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if let Some(length) = find("content-length") {
        let mut body = vec![0u8; length.parse().map_err(|_| bad("bad content-length"))?];
        reader.read_exact(&mut body)?;
        body
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader).ok_or_else(|| bad("bad chunked body"))?
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// GET `target` through `addr`.
pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, &[], b"")
}

/// Polls `condition` every 25 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(25));
    }
    condition()
}

/// Runs an async origin on its own runtime thread (it lives until the test process exits):
/// `serve` gets a listener on an ephemeral loopback port, whose address is returned.
pub fn spawn_async_origin<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            serve(tokio::net::TcpListener::from_std(listener).unwrap()).await;
        });
    });
    addr
}
