//! Response compression for the routes that configure `compression`: the coding negotiated
//! from `Accept-Encoding` (q-values, the route's order breaking ties), which responses are
//! compressed, the header changes (`Content-Encoding`, `Vary`, weakened `ETag`), and the
//! streaming encoder. Pingora's encoders do the compressing; this module is used only by
//! routes that ask for it, so the others pay nothing (Pingora's own compression module costs
//! every request about 1k instructions, enabled or not).

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use pingora_core::protocols::http::compression::{Algorithm, Encode};

static VARY_ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// Every coding, with its `Accept-Encoding` token.
    pub const ALL: [(Coding, &'static str); 3] = [
        (Coding::Zstd, "zstd"),
        (Coding::Brotli, "br"),
        (Coding::Gzip, "gzip"),
    ];

    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The levels a configuration may ask for.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Coding::Zstd => 1..=19,
            Coding::Brotli => 0..=11,
            Coding::Gzip => 1..=9,
        }
    }

    /// The level used when the configuration names none.
    pub fn default_level(self) -> u32 {
        match self {
            Coding::Zstd => 3,
            Coding::Brotli => 4,
            Coding::Gzip => 6,
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.token())
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Coding::Zstd => Algorithm::Zstd,
            Coding::Brotli => Algorithm::Brotli,
            Coding::Gzip => Algorithm::Gzip,
        }
    }

    fn named(token: &str) -> Option<Coding> {
        if token.eq_ignore_ascii_case("x-gzip") {
            return Some(Coding::Gzip);
        }
        Coding::ALL
            .iter()
            .find(|(_, name)| token.eq_ignore_ascii_case(name))
            .map(|(coding, _)| *coding)
    }
}

/// One `content_types` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPattern {
    /// `application/json`.
    Exact(Box<str>),
    /// `text/*`: the type's every subtype.
    AnySubtype(Box<str>),
    /// `application/*+json`: a structured-syntax suffix (`+json`) under the type.
    Suffix { kind: Box<str>, suffix: Box<str> },
}

impl MediaPattern {
    /// Parses `type/subtype`, `type/*` or `type/*+suffix` (lower-cased).
    pub fn parse(text: &str) -> Option<MediaPattern> {
        let lower = text.trim().to_ascii_lowercase();
        let (kind, subtype) = lower.split_once('/')?;
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(kind) {
            return None;
        }
        if subtype == "*" {
            return Some(MediaPattern::AnySubtype(kind.into()));
        }
        if let Some(suffix) = subtype.strip_prefix("*+") {
            return token(suffix).then(|| MediaPattern::Suffix {
                kind: kind.into(),
                suffix: format!("+{suffix}").into(),
            });
        }
        token(subtype).then(|| MediaPattern::Exact(lower.as_str().into()))
    }

    /// Whether `kind/subtype` (as sent, any case) is one of this pattern's.
    fn matches(&self, kind: &str, subtype: &str) -> bool {
        match self {
            MediaPattern::Exact(full) => full.split_once('/').is_some_and(|(k, s)| {
                k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype)
            }),
            MediaPattern::AnySubtype(wanted) => wanted.eq_ignore_ascii_case(kind),
            MediaPattern::Suffix {
                kind: wanted,
                suffix,
            } => {
                wanted.eq_ignore_ascii_case(kind)
                    && subtype.len() > suffix.len()
                    && subtype.as_bytes()[subtype.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// The media types compressed when `content_types` is not given.
pub const DEFAULT_CONTENT_TYPES: [&str; 9] = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
    "application/wasm",
];

/// Streams that must reach the client as they are produced; a compressor would hold them back.
const NEVER_COMPRESSED: [&str; 1] = ["text/event-stream"];

/// A route's `compression`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionPolicy {
    /// The codings offered, in the route's order of preference, each with its level.
    pub codings: Vec<(Coding, u32)>,
    /// Smaller responses (by `Content-Length`) are sent as they are.
    pub min_size: u64,
    pub content_types: Vec<MediaPattern>,
}

/// What a request of a compressing route settled before the response came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The coding this client gets (`None`: the response goes as it is, e.g. the client
    /// accepts none of the route's codings, or asked for a range).
    pub coding: Option<(Coding, u32)>,
    /// The request carries `Accept-Encoding` (which the origin is not sent).
    pub accept_encoding_sent: bool,
}

impl CompressionPolicy {
    /// The coding for a client that sent `accept_encoding` (RFC 9110 §12.5.3): the acceptable
    /// coding with the highest q-value, the route's order breaking ties. Without the header a
    /// response is not compressed (as in nginx and Envoy: old clients send none).
    pub fn negotiate(&self, headers: &HeaderMap) -> Option<(Coding, u32)> {
        let qualities = qualities(headers);
        let mut best: Option<((Coding, u32), u32)> = None;
        for &(coding, level) in &self.codings {
            let q = qualities.of(coding);
            if q > 0 && best.is_none_or(|(_, top)| q > top) {
                best = Some(((coding, level), q));
            }
        }
        best.map(|(choice, _)| choice)
    }

    /// What a request settles, given whether it carries `Accept-Encoding` and `Range` (the
    /// caller's own pass over the fields tells): no coding for a HEAD (never compressed), a
    /// range request (ranges of the plain bytes are served as they are) or HTTP/1.0 (no
    /// chunked framing for a body whose length is not known up front).
    pub fn settle(
        &self,
        request: &pingora_http::RequestHeader,
        accept_encoding_sent: bool,
        range: bool,
    ) -> Negotiated {
        let plain = !accept_encoding_sent
            || range
            || request.method == http::Method::HEAD
            || request.version < http::Version::HTTP_11;
        Negotiated {
            coding: if plain {
                None
            } else {
                self.negotiate(&request.headers)
            },
            accept_encoding_sent,
        }
    }

    /// Whether a response like this one is compressed for clients that accept a coding (and
    /// so varies with `Accept-Encoding`); `length` is its body's when known otherwise than by
    /// its `Content-Length`.
    pub fn applies(&self, status: StatusCode, headers: &HeaderMap, length: Option<u64>) -> bool {
        let fields = ResponseFields::of(headers);
        self.decide(status, &fields, length).is_some()
    }

    /// [`Self::applies`] on fields already read, with the body's length when known.
    fn decide(
        &self,
        status: StatusCode,
        fields: &ResponseFields,
        length: Option<u64>,
    ) -> Option<Option<u64>> {
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return None;
        }
        let length = length.or(fields.length);
        // An empty body has nothing to compress (and may never reach the body filter).
        let compressed = length.is_none_or(|length| length > 0 && length >= self.min_size)
            && !fields.encoded
            && !fields.no_transform
            && fields
                .content_type
                .as_ref()
                .is_some_and(|kind| self.type_allowed(kind));
        compressed.then_some(length)
    }

    fn type_allowed(&self, value: &HeaderValue) -> bool {
        let Ok(value) = value.to_str() else {
            return false;
        };
        let essence = value.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        if NEVER_COMPRESSED.iter().any(|never| {
            never.split_once('/').is_some_and(|(k, s)| {
                k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype)
            })
        }) {
            return false;
        }
        self.content_types
            .iter()
            .any(|pattern| pattern.matches(kind, subtype))
    }
}

/// What the response policies of a route read from a response's fields, gathered in one pass
/// over the header map (cheaper than a hashed lookup for each): compression's inputs, and
/// whether `Vary` and any `Access-Control-*` field are present, for CORS.
#[derive(Debug, Default, Clone)]
pub struct ResponseFields {
    length: Option<u64>,
    /// The first `Content-Type` (a reference-count bump): judged only when the rest allows
    /// compression, as most small answers never need it.
    content_type: Option<HeaderValue>,
    /// A `Content-Encoding` other than `identity`.
    encoded: bool,
    /// `Cache-Control: no-transform`.
    no_transform: bool,
    /// A `Vary` field is present.
    pub vary: bool,
    /// An `Access-Control-*` field is present.
    pub access_control: bool,
}

impl ResponseFields {
    /// Reads `headers` once.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut fields = ResponseFields::default();
        for (name, value) in headers {
            if name == CONTENT_LENGTH {
                fields.length = digits(value.as_bytes());
            } else if name == CONTENT_TYPE {
                if fields.content_type.is_none() {
                    fields.content_type = Some(value.clone());
                }
            } else if name == CONTENT_ENCODING {
                fields.encoded |= !value.as_bytes().eq_ignore_ascii_case(b"identity");
            } else if name == CACHE_CONTROL {
                fields.no_transform |= value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"));
            } else if name == VARY {
                fields.vary = true;
            } else {
                fields.access_control |= name.as_str().starts_with("access-control-");
            }
        }
        fields
    }
}

/// A `Content-Length` of plain digits.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |length, &digit| {
        digit
            .is_ascii_digit()
            .then(|| length * 10 + u64::from(digit - b'0'))
    })
}

/// The q-values (thousandths) of one request's `Accept-Encoding`.
#[derive(Default)]
struct Qualities {
    /// By `Coding` order: zstd, br, gzip.
    own: [Option<u32>; 3],
    any: Option<u32>,
}

impl Qualities {
    /// A coding's own q-value, else `*`'s, else 0 (not acceptable).
    fn of(&self, coding: Coding) -> u32 {
        self.own[coding as usize].or(self.any).unwrap_or(0)
    }
}

fn qualities(headers: &HeaderMap) -> Qualities {
    let mut found = Qualities::default();
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for entry in text.split(',') {
            let mut parts = entry.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let q = parts
                .find_map(|param| {
                    let (name, value) = param.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| parse_q(value.trim()))
                })
                .unwrap_or(Some(1000));
            let Some(q) = q else { continue };
            if token == "*" {
                found.any = Some(q);
            } else if let Some(coding) = Coding::named(token) {
                let own = &mut found.own[coding as usize];
                *own = Some(own.map_or(q, |seen| seen.max(q)));
            }
        }
    }
    found
}

/// `0`, `0.5`, `1.000` as thousandths; anything else is not a q-value.
fn parse_q(text: &str) -> Option<u32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{fraction:0<3}");
    let thousandths: u32 = digits.parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there.
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !present {
        headers.append(VARY, VARY_ACCEPT_ENCODING.clone());
    }
}

/// `"x"` becomes `W/"x"` (the compressed bytes are another representation, RFC 9110 §8.8.1);
/// a malformed tag is dropped; a weak one stays.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(ETAG) else { return };
    let bytes = tag.as_bytes();
    if bytes.starts_with(b"W/") {
        return;
    }
    let weak = bytes
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/", bytes].concat()).ok())
        .flatten();
    match weak {
        Some(weak) => {
            headers.insert(ETAG, weak);
        }
        None => {
            headers.remove(ETAG);
        }
    }
}

/// Decides for one response of a compressing route: marks it as varying with
/// `Accept-Encoding` when its kind is compressed, and when the client gets a coding, rewrites
/// the headers for it and returns the encoder for the body. `body_len` is the body's length
/// when known otherwise (a stored body's); else its `Content-Length` tells, so the encoder
/// can end with the last byte.
pub fn prepare(
    policy: &CompressionPolicy,
    negotiated: Negotiated,
    status: StatusCode,
    headers: &mut HeaderMap,
    fields: &ResponseFields,
    body_len: Option<u64>,
) -> Option<Encoder> {
    let body_len = policy.decide(status, fields, body_len)?;
    vary_on_accept_encoding(headers);
    let (coding, level) = negotiated.coding?;
    let inner = coding.algorithm().compressor(level)?;
    headers.insert(CONTENT_ENCODING, coding.header_value());
    headers.remove(CONTENT_LENGTH);
    // Ranges of the compressed bytes are not offered.
    headers.remove(ACCEPT_RANGES);
    weaken_etag(headers);
    Some(Encoder {
        inner,
        coding,
        remaining: body_len,
        finished: false,
    })
}

/// Compresses one response body as it streams.
pub struct Encoder {
    inner: Box<dyn Encode + Send + Sync>,
    coding: Coding,
    /// Input bytes still to come, when the length is known: some paths end a body with a
    /// separate "done" the body filter never sees, so the last byte is the end.
    remaining: Option<u64>,
    finished: bool,
}

impl Encoder {
    /// Replaces the next piece of the body (`end`: it is the last) with its compressed bytes
    /// (`None` while the compressor holds them).
    pub fn filter(&mut self, body: &mut Option<Bytes>, end: bool) -> pingora_error::Result<()> {
        if self.finished {
            *body = None;
            return Ok(());
        }
        let input: &[u8] = body.as_deref().unwrap_or(&[]);
        let mut end = end;
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining = remaining.saturating_sub(input.len() as u64);
            end |= *remaining == 0;
        }
        let output = self.inner.encode(input, end)?;
        self.finished = end;
        *body = (!output.is_empty()).then_some(output);
        Ok(())
    }

    /// The whole body compressed at once.
    pub fn whole(mut self, body: &[u8]) -> pingora_error::Result<Bytes> {
        self.inner.encode(body, true)
    }

    /// The coding, and the body bytes that went in and came out so far.
    pub fn totals(&self) -> (Coding, u64, u64) {
        let (_, input, output, _) = self.inner.stat();
        (self.coding, input as u64, output as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(codings: &[Coding]) -> CompressionPolicy {
        CompressionPolicy {
            codings: codings.iter().map(|c| (*c, c.default_level())).collect(),
            min_size: 1024,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .filter_map(|t| MediaPattern::parse(t))
                .collect(),
        }
    }

    fn negotiate(policy: &CompressionPolicy, accept: &str) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
        policy.negotiate(&headers).map(|(coding, _)| coding)
    }

    #[test]
    fn the_best_q_wins_and_the_route_order_breaks_ties() {
        use Coding::*;
        let all = policy(&[Zstd, Brotli, Gzip]);
        assert_eq!(negotiate(&all, "gzip, deflate, br, zstd"), Some(Zstd));
        assert_eq!(negotiate(&all, "gzip, br"), Some(Brotli));
        assert_eq!(negotiate(&all, "gzip;q=1.0, br;q=0.8"), Some(Gzip));
        assert_eq!(negotiate(&all, "br;q=0, gzip;q=0.001"), Some(Gzip));
        assert_eq!(negotiate(&all, "*"), Some(Zstd));
        assert_eq!(negotiate(&all, "*;q=0.5, zstd;q=0"), Some(Brotli));
        assert_eq!(negotiate(&all, "identity"), None);
        assert_eq!(negotiate(&all, "deflate, compress"), None);
        assert_eq!(negotiate(&all, "gzip;q=0, br;q=0, zstd;q=0"), None);
        assert_eq!(negotiate(&all, "X-GZIP"), Some(Gzip));
        assert_eq!(negotiate(&all, "BR ; Q=0.5"), Some(Brotli));
        // A malformed q-value makes its entry count for nothing.
        assert_eq!(negotiate(&all, "br;q=2, gzip;q=abc"), None);
        let gzip_first = policy(&[Gzip, Brotli]);
        assert_eq!(negotiate(&gzip_first, "br, gzip, zstd"), Some(Gzip));
        assert_eq!(negotiate(&gzip_first, "zstd"), None);
        assert_eq!(gzip_first.negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn q_values_parse_as_rfc_9110_writes_them() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q(".5"), None);
    }

    fn response(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn which_responses_are_compressed() {
        let p = policy(&[Coding::Gzip]);
        let ok = StatusCode::OK;
        let json = [("content-type", "application/json; charset=utf-8")];
        assert!(p.applies(ok, &response(&json), None));
        assert!(p.applies(StatusCode::NOT_FOUND, &response(&json), None));
        for kind in [
            "text/html",
            "TEXT/CSS",
            "application/problem+json",
            "image/svg+xml",
            "application/atom+xml",
        ] {
            assert!(
                p.applies(ok, &response(&[("content-type", kind)]), None),
                "{kind}"
            );
        }
        for kind in [
            "image/png",
            "application/octet-stream",
            "text/event-stream",
            "bogus",
        ] {
            assert!(
                !p.applies(ok, &response(&[("content-type", kind)]), None),
                "{kind}"
            );
        }
        assert!(!p.applies(ok, &response(&[]), None), "no content type");
        let with = |extra: (&str, &str)| response(&[json[0], extra]);
        assert!(!p.applies(ok, &with(("content-encoding", "gzip")), None));
        assert!(p.applies(ok, &with(("content-encoding", "identity")), None));
        assert!(!p.applies(ok, &with(("cache-control", "public, No-Transform")), None));
        assert!(!p.applies(ok, &response(&json), Some(1023)));
        assert!(p.applies(ok, &response(&json), Some(1024)));
        let mut anything = p.clone();
        anything.min_size = 0;
        assert!(anything.applies(ok, &response(&json), Some(1)));
        assert!(
            !anything.applies(ok, &response(&json), Some(0)),
            "an empty body"
        );
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::NOT_MODIFIED,
        ] {
            assert!(!p.applies(status, &response(&json), None), "{status}");
        }
    }

    #[test]
    fn headers_change_only_for_a_client_that_gets_a_coding() {
        let p = policy(&[Coding::Gzip]);
        let original = [
            ("content-type", "text/html"),
            ("content-length", "5000"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
            ("vary", "Origin"),
        ];
        let mut plain = response(&original);
        let kept = prepared(
            &p,
            Negotiated {
                coding: None,
                accept_encoding_sent: true,
            },
            &mut plain,
            Some(5000),
        );
        assert!(kept.is_none());
        assert_eq!(plain.get("content-length").unwrap(), "5000");
        assert_eq!(plain.get("etag").unwrap(), "\"v1\"");
        let vary: Vec<_> = plain.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);

        let mut compressed = response(&original);
        let negotiated = Negotiated {
            coding: Some((Coding::Gzip, 6)),
            accept_encoding_sent: true,
        };
        let encoder = prepared(&p, negotiated, &mut compressed, Some(5000));
        assert!(encoder.is_some());
        assert_eq!(compressed.get("content-encoding").unwrap(), "gzip");
        assert_eq!(compressed.get("etag").unwrap(), "W/\"v1\"");
        assert!(compressed.get("content-length").is_none());
        assert!(compressed.get("accept-ranges").is_none());

        let mut weak = response(&[
            ("content-type", "text/html"),
            ("etag", "W/\"x\""),
            ("vary", "*"),
        ]);
        prepared(&p, negotiated, &mut weak, None);
        assert_eq!(weak.get("etag").unwrap(), "W/\"x\"");
        assert_eq!(weak.get_all(VARY).iter().count(), 1);
    }

    /// [`prepare`] for a 200 with the fields read from `headers`.
    fn prepared(
        p: &CompressionPolicy,
        negotiated: Negotiated,
        headers: &mut HeaderMap,
        body_len: Option<u64>,
    ) -> Option<Encoder> {
        let fields = ResponseFields::of(headers);
        prepare(p, negotiated, StatusCode::OK, headers, &fields, body_len)
    }

    /// Decodes with flate2's reader (not the encoder's writer side).
    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_known_length_ends_the_stream_without_an_end_flag() {
        let p = policy(&[Coding::Gzip]);
        let body = "edgegate ".repeat(400).into_bytes();
        let mut headers = response(&[("content-type", "text/plain")]);
        let negotiated = Negotiated {
            coding: Some((Coding::Gzip, 6)),
            accept_encoding_sent: true,
        };
        let mut encoder = prepared(&p, negotiated, &mut headers, Some(body.len() as u64)).unwrap();
        let mut out = Vec::new();
        for piece in body.chunks(1000) {
            let mut chunk = Some(Bytes::copy_from_slice(piece));
            encoder.filter(&mut chunk, false).unwrap();
            out.extend(chunk.unwrap_or_default());
        }
        // The "done" that follows adds nothing.
        let mut after = None;
        encoder.filter(&mut after, true).unwrap();
        assert!(after.is_none());
        assert_eq!(gunzip(&out), body);
    }
}
