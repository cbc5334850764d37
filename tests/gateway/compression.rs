//! Response compression: zstd, brotli and gzip negotiated from `Accept-Encoding`, decoded by
//! curl (libcurl's zlib, brotli and zstd decoders) and the `gzip` CLI; what is never
//! compressed; streamed and chunked bodies; one stored answer served to every client.

use crate::cache::serve;
use crate::support::{Gateway, Origin};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

/// A JSON document well over the default 1 KiB threshold.
fn document() -> String {
    let items: Vec<String> = (0..200)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item number {i}\",\"tags\":[\"a\",\"b\"]}}"))
        .collect();
    format!("[{}]", items.join(","))
}

struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    /// As decoded by curl (`--compressed`), or as sent when `raw`.
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One request with curl; `decode`: curl decodes the content coding it is sent.
fn curl(gw: &Gateway, path: &str, extra: &[&str], decode: bool) -> Fetched {
    let dir = crate::support::temp_dir();
    let head = dir.join("head");
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "10", "-D"])
        .arg(&head)
        .args(extra);
    if decode {
        command.arg("--compressed");
    }
    let output = command
        .arg(format!("http://{}{path}", gw.proxy))
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "curl failed: {output:?}");
    let head = std::fs::read_to_string(head).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Fetched {
        status,
        headers,
        body: output.stdout,
    }
}

fn accept(coding: &str) -> String {
    format!("Accept-Encoding: {coding}")
}

fn routes(origin: &Origin, chunked: SocketAddr) -> String {
    format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n  chunked: {{ targets: [{{ address: \"{chunked}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: gz-only, match: {{ path_prefix: /gz }}, upstream: app, compression: {{ algorithms: [gzip], level: {{ gzip: 1 }}, min_size: 100 }} }}\n\
         \x20 - {{ name: stream, match: {{ path_prefix: /stream }}, upstream: chunked, compression: {{}} }}\n\
         \x20 - {{ name: plain, match: {{ path_prefix: /plain }}, upstream: app }}\n\
         \x20 - {{ name: zip, upstream: app, compression: {{ algorithms: [zstd, br, gzip] }} }}\n",
        origin.addr
    )
}

/// An origin answering every request with `pieces` as chunks of a chunked text body.
fn chunked_origin(pieces: &'static [&'static str]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut out =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        .to_vec();
                for piece in pieces {
                    out.extend(format!("{:x}\r\n{piece}\r\n", piece.len()).into_bytes());
                }
                out.extend(b"0\r\n\r\n");
                let _ = stream.write_all(&out);
            });
        }
    });
    addr
}

const PIECES: &[&str] = &[
    "first piece of a streamed text body; ",
    "second piece, repeated repeated repeated repeated repeated; ",
    "and the third and last piece of it.\n",
];

#[test]
fn each_coding_is_negotiated_and_decodes_to_the_original() {
    let origin = Origin::start("app");
    let body = document();
    serve(&origin, &body, &[("ETag", "\"v1\"")]);
    let gw = Gateway::start(&routes(&origin, chunked_origin(PIECES)));
    for (offered, expected) in [
        ("zstd", "zstd"),
        ("br", "br"),
        ("gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("br;q=0.2, zstd;q=0, *;q=0.1", "br"),
        ("x-gzip", "gzip"),
    ] {
        let fetched = curl(&gw, "/doc", &["-H", &accept(offered)], true);
        assert_eq!(fetched.status, 200);
        assert_eq!(
            fetched.header("content-encoding"),
            Some(expected),
            "{offered}"
        );
        assert_eq!(String::from_utf8_lossy(&fetched.body), body, "{offered}");
        assert_eq!(fetched.header("etag"), Some("W/\"v1\""), "{offered}");
        assert!(fetched.header("content-length").is_none(), "{offered}");
        assert_eq!(fetched.all("vary"), ["Accept-Encoding"], "{offered}");
    }
    // The compressed bytes are a real gzip stream: the gzip CLI reads them back.
    let raw = curl(&gw, "/doc", &["-H", "Accept-Encoding: gzip"], false);
    assert!(raw.body.len() < body.len() / 3, "{} bytes", raw.body.len());
    let mut gunzip = Command::new("gzip")
        .args(["-d", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gunzip.stdin.take().unwrap().write_all(&raw.body).unwrap();
    let decoded = gunzip.wait_with_output().unwrap();
    assert!(decoded.status.success());
    assert_eq!(String::from_utf8_lossy(&decoded.stdout), body);

    // Counted per coding: 4 gzip answers above (x-gzip included), 2 zstd, 2 brotli.
    let series = |name: &str, coding: &str| {
        gw.metric(&format!("{name}{{coding=\"{coding}\",route=\"zip\"}}"))
            .unwrap_or(0.0)
    };
    gw.wait_metric(
        "edgegate_compressed_responses_total{coding=\"gzip\",route=\"zip\"}",
        4.0,
    );
    assert_eq!(series("edgegate_compressed_responses_total", "zstd"), 2.0);
    assert_eq!(series("edgegate_compressed_responses_total", "br"), 2.0);
    assert_eq!(
        series("edgegate_compression_input_bytes_total", "gzip"),
        4.0 * body.len() as f64
    );
    assert_eq!(
        series("edgegate_compression_output_bytes_total", "gzip"),
        4.0 * raw.body.len() as f64
    );

    // Nothing acceptable, or no Accept-Encoding: the original, marked as varying.
    for extra in [
        &["-H", "Accept-Encoding: identity"][..],
        &[][..],
        &["-H", "Accept-Encoding: deflate"][..],
    ] {
        let plain = curl(&gw, "/doc", extra, false);
        assert_eq!(plain.header("content-encoding"), None, "{extra:?}");
        assert_eq!(
            plain.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(plain.header("etag"), Some("\"v1\""));
        assert_eq!(plain.all("vary"), ["Accept-Encoding"]);
        assert_eq!(String::from_utf8_lossy(&plain.body), body);
    }
    // A route without compression is untouched.
    let untouched = curl(&gw, "/plain", &["-H", "Accept-Encoding: gzip"], false);
    assert_eq!(untouched.header("content-encoding"), None);
    assert!(untouched.header("vary").is_none());
}

#[test]
fn what_is_never_compressed() {
    let origin = Origin::start("app");
    let body = document();
    serve(&origin, &body, &[]);
    let gw = Gateway::start(&routes(&origin, chunked_origin(PIECES)));
    let gzip = ["-H", "Accept-Encoding: gzip"];

    let head = curl(&gw, "/doc", &["-I", gzip[0], gzip[1]], false);
    assert_eq!(head.header("content-encoding"), None, "HEAD");
    let range = curl(
        &gw,
        "/doc",
        &[gzip[0], gzip[1], "-H", "Range: bytes=0-9"],
        false,
    );
    assert_eq!(range.header("content-encoding"), None, "a range");
    assert_eq!(&range.body[..], &body.as_bytes()[..range.body.len()]);
    let old = curl(&gw, "/doc", &["--http1.0", gzip[0], gzip[1]], false);
    assert_eq!(old.header("content-encoding"), None, "HTTP/1.0");

    serve(&origin, &body, &[("Cache-Control", "no-transform")]);
    let kept = curl(&gw, "/doc", &gzip, false);
    assert_eq!(kept.header("content-encoding"), None, "no-transform");
    assert_eq!(String::from_utf8_lossy(&kept.body), body);

    // Already encoded by the origin: passed on as it is (the bytes are not gzip; nobody looks).
    serve(&origin, &body, &[("Content-Encoding", "br")]);
    let encoded = curl(&gw, "/doc", &gzip, false);
    assert_eq!(encoded.header("content-encoding"), Some("br"));
    assert_eq!(String::from_utf8_lossy(&encoded.body), body);

    // Under min_size: 1023 bytes on the default 1 KiB; 100 is enough on /gz.
    let small = "x".repeat(1023);
    serve(&origin, &small, &[]);
    assert_eq!(
        curl(&gw, "/doc", &gzip, false).header("content-encoding"),
        None
    );
    assert_eq!(
        curl(&gw, "/gz/doc", &gzip, true).header("content-encoding"),
        Some("gzip")
    );
    // The origin never sees the client's Accept-Encoding on a compressing route.
    origin.set(|b| b.body = None);
    let json =
        |fetched: Fetched| serde_json::from_slice::<serde_json::Value>(&fetched.body).unwrap();
    let echo = json(curl(&gw, "/gz/echo", &gzip, true));
    assert!(echo["headers"].get("accept-encoding").is_none(), "{echo}");
    let echo = json(curl(&gw, "/plain/echo", &gzip, true));
    assert_eq!(echo["headers"]["accept-encoding"], "gzip");
}

#[test]
fn a_chunked_stream_is_compressed_as_it_comes() {
    let origin = Origin::start("app");
    let address: SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .unwrap();
    let gw = Gateway::start_with_listener(
        &routes(&origin, chunked_origin(PIECES)),
        address,
        "h2c: true",
    );
    let whole: String = PIECES.concat();
    for coding in ["zstd", "br", "gzip"] {
        let fetched = curl(&gw, "/stream", &["-H", &accept(coding)], true);
        assert_eq!(fetched.header("content-encoding"), Some(coding));
        assert_eq!(fetched.header("transfer-encoding"), Some("chunked"));
        assert_eq!(String::from_utf8_lossy(&fetched.body), whole, "{coding}");
    }
    // An empty chunked body (its end in the same packet as the head) becomes a valid empty
    // stream.
    let empty = Gateway::start(&routes(&origin, chunked_origin(&[])));
    for coding in ["zstd", "br", "gzip"] {
        let fetched = curl(&empty, "/stream", &["-H", &accept(coding)], true);
        assert_eq!(fetched.status, 200);
        assert!(fetched.body.is_empty(), "{coding}");
        let raw = curl(&empty, "/stream", &["-H", &accept(coding)], false);
        // A compressed empty stream, not zero bytes under a Content-Encoding.
        assert!(!raw.body.is_empty(), "{coding}");
    }
    // Over HTTP/2 (h2c) the end of the stream ends the body.
    let h2 = curl(
        &gw,
        "/stream",
        &["--http2-prior-knowledge", "-H", "Accept-Encoding: br"],
        true,
    );
    assert_eq!(h2.header("content-encoding"), Some("br"));
    assert_eq!(String::from_utf8_lossy(&h2.body), whole);
}

#[test]
fn one_stored_answer_serves_every_client_in_its_coding() {
    let origin = Origin::start("app");
    let body = document();
    serve(
        &origin,
        &body,
        &[("Cache-Control", "max-age=60"), ("ETag", "\"c1\"")],
    );
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: cached, upstream: app, cache: {{ ttl: 30s }}, compression: {{}} }}\n",
        origin.addr
    ));
    let miss = curl(&gw, "/c", &["-H", "Accept-Encoding: gzip"], true);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(miss.header("content-encoding"), Some("gzip"));
    assert_eq!(String::from_utf8_lossy(&miss.body), body);
    for coding in ["br", "zstd", "gzip"] {
        let hit = curl(&gw, "/c", &["-H", &accept(coding)], true);
        assert_eq!(hit.header("x-cache"), Some("HIT"), "{coding}");
        assert_eq!(hit.header("content-encoding"), Some(coding));
        // Answered whole from the store: compressed once, with its own length.
        let length: usize = hit.header("content-length").unwrap().parse().unwrap();
        assert!(length < body.len() / 3, "{coding}: {length}");
        assert_eq!(String::from_utf8_lossy(&hit.body), body, "{coding}");
        assert_eq!(hit.header("etag"), Some("W/\"c1\""));
    }
    let plain = curl(&gw, "/c", &[], false);
    assert_eq!(x_cache_of(&plain), "HIT");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("etag"), Some("\"c1\""));
    assert_eq!(String::from_utf8_lossy(&plain.body), body);
    assert_eq!(origin.hits(), 1, "stored once, for every coding");
    let ranged = curl(
        &gw,
        "/c",
        &["-H", "Accept-Encoding: gzip", "-H", "Range: bytes=1-5"],
        false,
    );
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.header("content-encoding"), None);
    assert_eq!(&ranged.body[..], &body.as_bytes()[1..=5]);

    // A stored answer that varies (here on Accept-Language) is streamed by Pingora's hit path
    // in pieces whose end is known from the stored length.
    serve(
        &origin,
        &body,
        &[
            ("Cache-Control", "max-age=60"),
            ("Vary", "Accept-Language, Accept-Encoding"),
        ],
    );
    let lang = ["-H", "Accept-Language: fr"];
    let first = curl(
        &gw,
        "/v",
        &[lang[0], lang[1], "-H", "Accept-Encoding: gzip"],
        true,
    );
    assert_eq!(first.header("x-cache"), Some("MISS"));
    for coding in ["zstd", "br", "gzip"] {
        let hit = curl(&gw, "/v", &[lang[0], lang[1], "-H", &accept(coding)], true);
        assert_eq!(hit.header("x-cache"), Some("HIT"), "{coding}");
        assert_eq!(hit.header("content-encoding"), Some(coding));
        assert_eq!(String::from_utf8_lossy(&hit.body), body, "{coding}");
    }
    assert_eq!(
        origin.hits(),
        2,
        "Accept-Encoding is no variant on a compressing route"
    );
    // Hits answered whole from the store are counted like streamed ones.
    gw.wait_metric(
        "edgegate_compressed_responses_total{coding=\"br\",route=\"cached\"}",
        2.0,
    );
}

fn x_cache_of(fetched: &Fetched) -> &str {
    fetched.header("x-cache").unwrap_or("")
}
