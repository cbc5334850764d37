//! Header edits made on the `http` parts underneath Pingora's headers.
//!
//! Pingora sizes a header it parses or clones exactly full and keeps every name twice (the value
//! map and a case-preserving name map), so each header we add through `insert_header` regrows and
//! rehashes both maps and re-parses the name: ~2k instructions per header. Taking the parts out
//! reserves room once and inserts pre-built names into one map. The edited header is then written
//! with lower-case names (well-known ones in Title-Case), as HTTP/2 and Envoy do; HTTP field names
//! are case-insensitive (RFC 9110 section 5.1).

use http::request::Parts as RequestParts;
use http::response::Parts as ResponseParts;
use http::HeaderMap;
use pingora_http::{RequestHeader, ResponseHeader};

/// Runs `edit` on the request's parts with room for `additional` more headers reserved.
pub fn edit_request<T>(
    request: &mut RequestHeader,
    additional: usize,
    edit: impl FnOnce(&mut RequestParts) -> T,
) -> T {
    // A target the URI cannot reproduce (absolute-form, non-UTF-8) is carried over verbatim.
    let verbatim = {
        let raw = request.raw_path();
        let from_uri = request
            .uri
            .path_and_query()
            .map_or(&b""[..], |pq| pq.as_str().as_bytes());
        (raw != from_uri).then(|| (raw.to_vec(), request.uri.clone()))
    };
    let end_stream = request.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: RequestParts = std::mem::replace(request, placeholder).into();
    // Reserving can only fail past http's 32k-entry bound, which Pingora's parser never reaches.
    let _ = parts.headers.try_reserve(additional);
    let result = edit(&mut parts);
    let uri_unchanged = verbatim
        .as_ref()
        .is_some_and(|(_, before)| *before == parts.uri);
    *request = RequestHeader::from(parts);
    if let (Some((raw, _)), true) = (verbatim, uri_unchanged) {
        if let Err(error) = request.set_raw_path(&raw) {
            log::debug!("cannot restore the request target: {error}");
        }
    }
    if let Some(end_stream) = end_stream {
        request.set_send_end_stream(end_stream);
    }
    result
}

/// Runs `edit` on the response's header map with room for `additional` more headers reserved.
pub fn edit_response<T>(
    response: &mut ResponseHeader,
    additional: usize,
    edit: impl FnOnce(&mut HeaderMap) -> T,
) -> T {
    let custom_reason = response
        .get_reason_phrase()
        .filter(|reason| Some(*reason) != response.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: ResponseParts = std::mem::replace(response, placeholder).into();
    let _ = parts.headers.try_reserve(additional);
    let result = edit(&mut parts.headers);
    *response = ResponseHeader::from(parts);
    if custom_reason.is_some() {
        if let Err(error) = response.set_reason_phrase(custom_reason.as_deref()) {
            log::debug!("cannot restore the reason phrase: {error}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn wire(request: &RequestHeader) -> String {
        let mut buf = Vec::new();
        request.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn request_edits_keep_every_header_and_add_ours() {
        let mut request = RequestHeader::build("POST", b"/a?b=1", None).unwrap();
        request.append_header("Host", "example.com").unwrap();
        request.append_header("X-Custom", "1").unwrap();
        request.append_header("X-Custom", "2").unwrap();
        edit_request(&mut request, 2, |parts| {
            parts.headers.insert(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("abc"),
            );
            parts.headers.remove("x-nothing");
        });
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.raw_path(), b"/a?b=1");
        let all: Vec<_> = request.headers.get_all("x-custom").iter().collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(request.headers["x-request-id"], "abc");
        let text = wire(&request);
        assert!(text.contains("Host: example.com\r\n"), "{text}");
        assert!(text.contains("x-custom: 1\r\nx-custom: 2\r\n"), "{text}");
    }

    #[test]
    fn a_target_the_uri_cannot_hold_survives_unless_the_edit_rewrites_it() {
        let mut request = RequestHeader::build("GET", b"/caf\xe9", None).unwrap();
        assert!(!request.raw_path_is_utf8());
        edit_request(&mut request, 1, |_| ());
        assert_eq!(request.raw_path(), b"/caf\xe9");

        let mut absolute = RequestHeader::build("GET", b"http://h.example/x?y", None).unwrap();
        edit_request(&mut absolute, 1, |_| ());
        assert_eq!(absolute.raw_path(), b"http://h.example/x?y");

        edit_request(&mut absolute, 1, |parts| {
            parts.uri = http::Uri::from_static("/z");
        });
        assert_eq!(absolute.raw_path(), b"/z");
    }

    #[test]
    fn response_edits_keep_status_headers_and_a_custom_reason() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        response
            .append_header("Content-Type", "text/plain")
            .unwrap();
        response.set_reason_phrase(Some("Fine")).unwrap();
        edit_response(&mut response, 1, |headers| {
            headers.insert(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("abc"),
            );
        });
        assert_eq!(response.status, 200);
        assert_eq!(response.get_reason_phrase(), Some("Fine"));
        assert_eq!(response.headers["content-type"], "text/plain");
        assert_eq!(response.headers["x-request-id"], "abc");

        let mut plain = ResponseHeader::build(404, None).unwrap();
        edit_response(&mut plain, 0, |_| ());
        assert_eq!(plain.get_reason_phrase(), Some("Not Found"));
    }

    /// What `edit_request`/`edit_response` assume of Pingora's header types. If a Pingora upgrade
    /// changes any of these, this fails first and names the assumption; the fix is in this file.
    #[test]
    fn pingora_header_conversions_behave_as_the_edits_assume() {
        let mut request = RequestHeader::build("GET", b"http://h.example/x?y", None).unwrap();
        request.set_version(http::Version::HTTP_2);
        request.set_send_end_stream(false);
        request.append_header("X-Custom", "1").unwrap();
        request.append_header("x-custom", "2").unwrap();
        let parts: RequestParts = request.clone().into();
        assert_eq!(parts.method, http::Method::GET, "parts carry the method");
        assert_eq!(
            parts.version,
            http::Version::HTTP_2,
            "parts carry the version"
        );
        let values: Vec<_> = parts.headers.get_all("x-custom").iter().collect();
        assert_eq!(values, ["1", "2"], "parts carry every value, in order");
        let back = RequestHeader::from(parts);
        assert_eq!(
            back.send_end_stream(),
            Some(true),
            "the parts lose the h2 end-of-stream flag (edit_request restores it)"
        );
        assert_eq!(
            back.raw_path(),
            b"/x?y",
            "the parts lose an absolute-form target (edit_request restores it)"
        );
        let mut wire_text = Vec::new();
        back.header_to_h1_wire(&mut wire_text);
        let wire_text = String::from_utf8(wire_text).unwrap();
        assert!(
            wire_text.contains("x-custom: 1\r\nx-custom: 2\r\n"),
            "names lose their case (the module doc says so): {wire_text}"
        );

        let mut restored = back;
        restored.set_raw_path(b"http://h.example/x?y").unwrap();
        assert_eq!(
            restored.raw_path(),
            b"http://h.example/x?y",
            "set_raw_path restores a target"
        );

        let mut response = ResponseHeader::build(200, None).unwrap();
        response.set_reason_phrase(Some("Fine")).unwrap();
        let parts: ResponseParts = response.into();
        assert_eq!(
            ResponseHeader::from(parts).get_reason_phrase(),
            Some("OK"),
            "the parts lose a custom reason phrase (edit_response restores it)"
        );
    }

    #[test]
    fn the_h2_end_of_stream_flag_survives_an_edit() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.set_version(http::Version::HTTP_2);
        request.set_send_end_stream(false);
        edit_request(&mut request, 1, |_| ());
        assert_eq!(request.send_end_stream(), Some(false));
    }
}
