//! What a part's answer contributes, and the merged body, written once into one buffer.

use super::Outcome;
use bytes::Bytes;
use std::time::Duration;

/// A part's value under `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A JSON document, embedded as the backend sent it (already validated).
    Json(Bytes),
    /// A UTF-8 text that is not JSON, embedded as a JSON string.
    Text(Bytes),
    Null,
}

impl Data {
    fn len_hint(&self) -> usize {
        match self {
            Data::Json(body) => body.len(),
            Data::Text(body) => body.len() + body.len() / 8 + 2,
            Data::Null => 4,
        }
    }
}

/// Judges a complete answer: a 2xx with a JSON body (or none) is good; a 2xx with text is
/// passed on as a string and reported `not_json`; any other status is null.
pub fn classify(status: u16, body: Bytes) -> (Outcome, Data) {
    if !(200..300).contains(&status) {
        return (Outcome::Status(status), Data::Null);
    }
    let content = body.trim_ascii();
    if content.is_empty() {
        return (Outcome::Ok, Data::Null);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(content).is_ok() {
        return (Outcome::Ok, Data::Json(body));
    }
    if std::str::from_utf8(&body).is_ok() {
        (Outcome::NotJson, Data::Text(body))
    } else {
        (Outcome::NotJson, Data::Null)
    }
}

/// One part of the merged answer.
pub struct Piece<'a> {
    pub name: &'a str,
    pub data: &'a Data,
    /// Set when the part failed.
    pub reason: Option<String>,
}

/// `{"data":{...},"meta":{"failed":[...],"duration_ms":N}}`, parts in configuration order.
pub fn assemble(pieces: &[Piece<'_>], duration: Duration) -> Vec<u8> {
    let size = 64
        + pieces
            .iter()
            .map(|p| p.name.len() * 2 + p.data.len_hint() + 48)
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"{\"data\":{");
    for (index, piece) in pieces.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_string(&mut out, piece.name);
        out.push(b':');
        match piece.data {
            Data::Json(body) => out.extend_from_slice(body.trim_ascii()),
            Data::Text(body) => push_string(&mut out, &String::from_utf8_lossy(body)),
            Data::Null => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"},\"meta\":{\"failed\":[");
    let failed = pieces
        .iter()
        .filter_map(|p| Some((p.name, p.reason.as_deref()?)));
    for (index, (name, reason)) in failed.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"part\":");
        push_string(&mut out, name);
        out.extend_from_slice(b",\"reason\":");
        push_string(&mut out, reason);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"duration_ms\":");
    crate::fastfmt::push_number(&mut out, duration.as_millis());
    out.extend_from_slice(b"}}");
    out
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn bodies_are_judged_by_status_then_content() {
        let ok = classify(200, Bytes::from_static(b" {\"a\": [1, 2]}\n"));
        assert_eq!(ok.0, Outcome::Ok);
        assert!(matches!(ok.1, Data::Json(_)));
        assert_eq!(classify(204, Bytes::new()), (Outcome::Ok, Data::Null));
        assert_eq!(
            classify(503, Bytes::from_static(b"{}")),
            (Outcome::Status(503), Data::Null)
        );
        assert_eq!(
            classify(200, Bytes::from_static(b"hello")),
            (Outcome::NotJson, Data::Text(Bytes::from_static(b"hello")))
        );
        assert_eq!(
            classify(200, Bytes::from_static(b"{\"unclosed\": 1")).0,
            Outcome::NotJson
        );
        assert_eq!(
            classify(200, Bytes::from_static(b"\xff\xfe")),
            (Outcome::NotJson, Data::Null)
        );
    }

    #[test]
    fn the_merged_answer_is_valid_json_in_part_order() {
        let profile = Data::Json(Bytes::from_static(b"{\"name\":\"Ada\"}\n"));
        let text = Data::Text(Bytes::from_static(b"line \"one\"\n\ttwo"));
        let pieces = [
            Piece {
                name: "profile",
                data: &profile,
                reason: None,
            },
            Piece {
                name: "notes",
                data: &text,
                reason: Some("not_json".into()),
            },
            Piece {
                name: "orders",
                data: &Data::Null,
                reason: Some("timeout".into()),
            },
        ];
        let body = assemble(&pieces, Duration::from_millis(1234));
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({
                "data": {"profile": {"name": "Ada"}, "notes": "line \"one\"\n\ttwo", "orders": null},
                "meta": {"failed": [
                    {"part": "notes", "reason": "not_json"},
                    {"part": "orders", "reason": "timeout"}
                ], "duration_ms": 1234}
            })
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.find("profile") < text.find("notes"));
        assert!(text.find("notes") < text.find("orders"));
    }
}
