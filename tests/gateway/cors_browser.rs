//! CORS as a real browser enforces it: headless Chromium (Debian's), driven through its DevTools
//! protocol, opens a page on one origin and `fetch`es the gateway on another. The allowed origin
//! reads the answer (after the preflight its custom header causes); a disallowed one is blocked
//! by the browser, and neither preflight reaches the backend.

use crate::support::{read_response, temp_dir, Gateway, Origin};
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const PAGE: &str = "<!doctype html><html><head><title>app</title></head><body>app</body></html>";

/// Serves `PAGE` for every request, on a free port, until the test process ends.
fn page_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_page(stream));
        }
    });
    addr
}

fn serve_page(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // The rest of the head; the browser sends no body to this page.
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{PAGE}",
            PAGE.len()
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A headless Chromium in its own process group, killed with it when dropped.
struct Browser {
    child: Child,
    devtools_port: u16,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let binary = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| {
                Command::new("which")
                    .arg(b)
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("no chromium: scripts/install-deps.sh test installs Debian's");
        let profile = temp_dir().join("chromium-profile");
        let mut command = Command::new(binary);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("start chromium");
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let devtools_port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            devtools_port,
        }
    }

    /// The DevTools WebSocket of the tab showing `url`.
    fn page_socket(&self, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(socket) = self.targets().and_then(|targets| {
                targets.as_array()?.iter().find_map(|t| {
                    (t["type"] == "page" && t["url"] == url)
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                        .flatten()
                })
            }) {
                return socket;
            }
            assert!(Instant::now() < deadline, "chromium never showed {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /json/list (DevTools wants an IP or `localhost` as the Host).
    fn targets(&self) -> Option<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.devtools_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!(
            "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.devtools_port
        );
        stream.write_all(request.as_bytes()).ok()?;
        // It keeps the connection open whatever the request says: read by Content-Length.
        let response = read_response(&mut BufReader::new(stream), false).ok()?;
        serde_json::from_slice(&response.body).ok()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and the renderer processes it started.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Evaluates `expression` in the page (awaiting a promise) and returns its string value.
async fn evaluate(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: u64,
    expression: &str,
) -> String {
    let call = serde_json::json!({
        "id": id,
        "method": "Runtime.evaluate",
        "params": { "expression": expression, "awaitPromise": true, "returnByValue": true },
    });
    socket.send(Message::text(call.to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("no DevTools answer in time")
            .expect("DevTools closed")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
        if reply["id"] == id {
            return reply["result"]["result"]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("not a string: {reply}"))
                .to_string();
        }
    }
}

#[test]
fn a_browser_reads_the_allowed_origins_answers_and_is_blocked_elsewhere() {
    let backend = Origin::start("app");
    let page = page_server();
    let page_origin = format!("http://{page}");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - name: open\n\
         \x20   match: {{ path_prefix: /open, methods: [PUT] }}\n\
         \x20   upstream: app\n\
         \x20   cors: {{ allow_origins: [\"{page_origin}\"], allow_methods: [PUT], allow_headers: [X-Trace],\n\
         \x20           expose_headers: [X-Request-ID] }}\n\
         \x20 - name: closed\n\
         \x20   match: {{ path_prefix: /closed }}\n\
         \x20   upstream: app\n\
         \x20   cors: {{ allow_origins: [\"https://somewhere-else.test\"], allow_methods: [PUT], allow_headers: [X-Trace] }}\n",
        backend.addr
    ));
    let url = format!("{page_origin}/");
    let browser = Browser::open(&url);
    let socket_url = browser.page_socket(&url);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(socket_url.as_str())
            .await
            .expect("DevTools WebSocket");
        // The tab shows the URL before the page replaces its initial about:blank (origin
        // `null`, and also "complete"): wait for the page's own document.
        let loaded = format!("{page_origin} complete");
        let deadline = Instant::now() + Duration::from_secs(30);
        while evaluate(&mut socket, 1, "location.origin + ' ' + document.readyState").await != loaded {
            assert!(Instant::now() < deadline, "the page never loaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A PUT with a custom header: the browser sends a preflight first.
        let call = |path: &str| {
            format!(
                "fetch('http://{}{path}', {{ method: 'PUT', headers: {{ 'X-Trace': '1' }}, body: 'x' }})\
                 .then(r => r.text().then(t => 'status ' + r.status + ' id ' + (r.headers.get('x-request-id') ? 'readable' : 'hidden') + ' ' + t))\
                 .catch(e => 'blocked: ' + e.message)",
                gw.proxy
            )
        };
        let allowed = evaluate(&mut socket, 2, &call("/open/items")).await;
        assert!(allowed.starts_with("status 200 id readable"), "{allowed}");
        assert!(allowed.contains("\"method\":\"PUT\""), "the backend saw the PUT: {allowed}");
        let blocked = evaluate(&mut socket, 3, &call("/closed/items")).await;
        assert!(blocked.starts_with("blocked:"), "{blocked}");
    });
    drop(browser);

    // One PUT reached the backend; neither preflight did, and the blocked PUT was never sent.
    assert_eq!(backend.hits(), 1);
    let log = gw.access_log(3);
    let methods: Vec<(&str, u64)> = log
        .iter()
        .map(|line| {
            (
                line["method"].as_str().unwrap_or(""),
                line["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [("OPTIONS", 204), ("PUT", 200), ("OPTIONS", 204)],
        "{log:?}"
    );
}
