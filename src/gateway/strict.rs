//! What a request must be before it is routed: framing that agrees with what was on the wire
//! (see `listener::framing`), `Host` on HTTP/1.1 (RFC 9112 §3.2), no `TRACE`, and a path that
//! normalizes (`routing::normalize`). The normalized path replaces the request's, so it is the
//! one routed, cached, logged and forwarded.

use crate::config::PathRules;
use crate::listener::framing::{BodyFraming, Violation};
use crate::listener::stream::ClientStream;
use crate::routing::normalize::{normalize, PathError};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    Framing(Violation),
    MissingHost,
    Trace,
    Path(PathError),
    /// The normalized target is not a valid URI (a query with bytes the URI grammar forbids).
    Target,
}

impl BadRequest {
    /// Every `reason` label of `edgegate_bad_requests_total`, in [`Self::index`] order.
    pub const REASONS: [&'static str; 5] = ["framing", "request_line", "host", "method", "path"];

    /// Index into [`Self::REASONS`].
    pub fn index(self) -> usize {
        match self {
            BadRequest::Framing(Violation::RequestLine) => 1,
            BadRequest::Framing(_) => 0,
            BadRequest::MissingHost => 2,
            BadRequest::Trace => 3,
            BadRequest::Path(_) | BadRequest::Target => 4,
        }
    }

    /// 405 for `TRACE`, 400 otherwise.
    pub fn status(self) -> u16 {
        match self {
            BadRequest::Trace => 405,
            _ => 400,
        }
    }

    /// A sentence for the client.
    pub fn message(self) -> &'static str {
        match self {
            BadRequest::Framing(violation) => violation.message(),
            BadRequest::MissingHost => "an HTTP/1.1 request must carry a Host header",
            BadRequest::Trace => "the TRACE method is not allowed",
            BadRequest::Path(error) => error.message(),
            BadRequest::Target => "the request target is not a valid URI",
        }
    }

    /// The answer, counted in `edgegate_bad_requests_total`.
    pub fn rejection(self) -> super::respond::Rejection {
        crate::observability::metrics::bad_request(self.index());
        super::respond::Rejection::new(self.status(), self.message())
    }

    /// Whether the connection can carry another request after the answer: not when the
    /// message boundaries themselves are in doubt.
    pub fn keeps_connection(self) -> bool {
        matches!(
            self,
            BadRequest::Trace | BadRequest::Path(_) | BadRequest::Target
        )
    }
}

/// The client connection under an HTTP/1 session (None for HTTP/2 and internal subrequests).
pub fn client_stream(session: &Session) -> Option<&ClientStream> {
    session.stream()?.as_any().downcast_ref::<ClientStream>()
}

/// What one pass over the request's header lines tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts {
    /// Size of the head as received: request line plus `name: value\r\n` lines.
    pub bytes: usize,
    pub has_host: bool,
    pub framing: BodyFraming,
}

impl HeadFacts {
    /// One walk over the headers (cheaper than a hashed lookup per fact).
    pub fn of(request: &RequestHeader) -> Self {
        let target = request
            .uri
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
        let mut facts = HeadFacts {
            bytes: request.method.as_str().len() + target + 12,
            has_host: false,
            framing: BodyFraming::None,
        };
        let mut chunked = false;
        let mut length = None;
        for (name, value) in &request.headers {
            facts.bytes += name.as_str().len() + value.len() + 4;
            if name == http::header::HOST {
                facts.has_host = true;
            } else if name == http::header::TRANSFER_ENCODING {
                chunked = true;
            } else if name == http::header::CONTENT_LENGTH && length.is_none() {
                length = Some(value);
            }
        }
        // RFC 9112 §6.3 for requests: chunked when `Transfer-Encoding` is present (Pingora
        // refuses any other final coding), else `Content-Length` (Pingora has reconciled
        // duplicates), else none.
        facts.framing = if chunked {
            BodyFraming::Chunked
        } else {
            length
                .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
                .and_then(|text| text.split(',').next())
                .and_then(|first| first.trim().parse().ok())
                .map_or(BodyFraming::None, BodyFraming::Length)
        };
        facts
    }
}

/// Checks the request and normalizes its path in place; returns the head's size either way.
pub fn inspect(session: &mut Session, rules: PathRules) -> (usize, Result<(), BadRequest>) {
    let facts = HeadFacts::of(session.req_header());
    (facts.bytes, check(session, rules, facts))
}

fn check(session: &mut Session, rules: PathRules, facts: HeadFacts) -> Result<(), BadRequest> {
    if let Some(client) = client_stream(session) {
        let head_len = session
            .as_downstream()
            .as_http1()
            .map_or(0, |h1| h1.get_headers_raw_bytes().len());
        client
            .announce(head_len, facts.framing)
            .map_err(BadRequest::Framing)?;
    }
    let request = session.req_header_mut();
    if request.version == http::Version::HTTP_11 && !facts.has_host {
        return Err(BadRequest::MissingHost);
    }
    if request.method == http::Method::TRACE {
        return Err(BadRequest::Trace);
    }
    normalize_target(request, rules)
}

/// Replaces the request's path with its normal form (the query is kept byte for byte).
fn normalize_target(request: &mut RequestHeader, rules: PathRules) -> Result<(), BadRequest> {
    let raw = request.raw_path();
    if raw == b"*" && request.method == http::Method::OPTIONS {
        return Ok(());
    }
    let rewritten = if raw.first() == Some(&b'/') && !request.raw_path_is_utf8() {
        // Not UTF-8: the URI holds a lossy copy, so the raw bytes are normalized (and encoded).
        let (path, query) = match memchr::memchr(b'?', raw) {
            Some(mark) => (&raw[..mark], &raw[mark..]),
            None => (raw, &b""[..]),
        };
        normalize(path, rules)
            .map_err(BadRequest::Path)?
            .map(|mut target| {
                target.extend_from_slice(query);
                target
            })
    } else {
        // Origin-form (the URI is the target) or absolute-form (Pingora has checked its
        // authority against Host; the path is the URI's).
        let uri = &request.uri;
        normalize(uri.path().as_bytes(), rules)
            .map_err(BadRequest::Path)?
            .map(|mut target| {
                if let Some(query) = uri.query() {
                    target.push(b'?');
                    target.extend_from_slice(query.as_bytes());
                }
                target
            })
    };
    if let Some(target) = rewritten {
        let uri = http::Uri::from_maybe_shared(bytes::Bytes::from(target))
            .map_err(|_| BadRequest::Target)?;
        request.set_uri(uri);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncodedSlashes;

    const RULES: PathRules = PathRules {
        merge_slashes: true,
        encoded_slashes: EncodedSlashes::Reject,
    };

    fn target(raw: &[u8]) -> Result<Vec<u8>, BadRequest> {
        let mut request = RequestHeader::build("GET", raw, None).unwrap();
        normalize_target(&mut request, RULES)?;
        Ok(request.raw_path().to_vec())
    }

    #[test]
    fn the_path_is_normalized_and_the_query_kept_verbatim() {
        assert_eq!(target(b"/a/../b?x=/../%2F&y").unwrap(), b"/b?x=/../%2F&y");
        assert_eq!(target(b"//a?").unwrap(), b"/a?");
        assert_eq!(target(b"/plain?q=1").unwrap(), b"/plain?q=1");
        assert_eq!(target(b"/caf\xc3\xa9").unwrap(), b"/caf%C3%A9");
        assert_eq!(
            target(b"/a%2Fb?x").unwrap_err(),
            BadRequest::Path(PathError::EncodedSlash)
        );
    }

    #[test]
    fn absolute_form_targets_become_origin_form_when_rewritten() {
        assert_eq!(
            target(b"http://h.example/a/../b?q").unwrap(),
            b"/b?q".to_vec()
        );
        assert_eq!(
            target(b"http://h.example/ok").unwrap(),
            b"http://h.example/ok".to_vec(),
            "a normal one is left to Pingora"
        );
    }

    #[test]
    fn one_pass_over_the_headers_finds_size_host_and_framing() {
        let mut request = RequestHeader::build("POST", b"/ab", None).unwrap();
        let facts = HeadFacts::of(&request);
        assert_eq!(
            (facts.bytes, facts.has_host, facts.framing),
            (19, false, BodyFraming::None)
        );
        request.insert_header("Host", "x").unwrap();
        request.insert_header("Content-Length", "12").unwrap();
        let facts = HeadFacts::of(&request);
        assert_eq!(
            facts.bytes,
            19 + 9 + 20,
            "the request line and two header lines"
        );
        assert!(facts.has_host);
        assert_eq!(facts.framing, BodyFraming::Length(12));
        request
            .insert_header("Transfer-Encoding", "chunked")
            .unwrap();
        assert_eq!(HeadFacts::of(&request).framing, BodyFraming::Chunked);
    }
}
