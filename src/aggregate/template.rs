//! The templates of an aggregation part: its path (`/users/{claim.sub}/orders?limit={query.n}`)
//! and its header values. Parsed at load; a path value is percent-encoded so a caller's value
//! stays one path segment or one query value (`/`, `?`, `&`, `#` and `%` included, and `.`/`..`
//! never walk up the backend's path).

use crate::templates::Token;
use http::HeaderName;
use serde_json::{Map, Value};

/// The variables a part template may use, for error messages.
pub const VARIABLES: &str =
    "{claim.NAME}, {query.NAME}, {path.NAME}, {header.NAME}, {consumer}, {request_id}";

/// Literal text and variables, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTemplate {
    pieces: Box<[Piece]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Variable(Variable),
}

/// A value of the caller's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// A claim of the verified token (top level, else a dotted path through objects).
    Claim(Box<str>),
    /// The first value of a query parameter, percent-decoded.
    Query(Box<str>),
    /// A named segment of the route's `path_template`, percent-decoded.
    Path(Box<str>),
    /// A request header's first value.
    Header(HeaderName),
    Consumer,
    RequestId,
}

impl Variable {
    /// How the template wrote it (for `meta.failed` and logs).
    pub fn describe(&self) -> String {
        match self {
            Variable::Claim(name) => format!("claim.{name}"),
            Variable::Query(name) => format!("query.{name}"),
            Variable::Path(name) => format!("path.{name}"),
            Variable::Header(name) => format!("header.{name}"),
            Variable::Consumer => "consumer".into(),
            Variable::RequestId => "request_id".into(),
        }
    }
}

/// What went wrong parsing a part template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartTemplateError {
    #[error(
        "`{{{0}}}` is not a part variable; use one of {VARIABLES} (write {{{{ for a literal `{{`)"
    )]
    UnknownVariable(String),
    #[error("`{{path.{0}}}` names no segment of the route's match.path_template{1}")]
    UnknownSegment(String, String),
    #[error(
        "`{{` opens a variable that is never closed with `}}` (write {{{{ for a literal `{{`)"
    )]
    Unclosed,
    #[error("`{{{0}}}` is not a valid header name")]
    BadHeaderName(String),
}

/// The caller's request as part templates see it (`None`: no such value).
pub trait PartValues {
    fn claims(&self) -> Option<&Map<String, Value>>;
    fn consumer(&self) -> Option<&str>;
    fn request_id(&self) -> &str;
    /// The raw (still percent-encoded) first value of query parameter `name`.
    fn query(&self, name: &str) -> Option<&str>;
    /// The raw named segment `name` of the request path.
    fn path_segment(&self, name: &str) -> Option<&str>;
    fn header(&self, name: &HeaderName) -> Option<&[u8]>;
}

/// How rendered values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encoded: everything but RFC 3986's unreserved characters.
    Uri,
    /// As is (a header value; checked by the caller).
    Raw,
}

impl PartTemplate {
    /// Parses `text`; `segments` are the names the route's path template captures.
    pub fn parse<'a>(
        text: &str,
        segments: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Self, PartTemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let tokens = crate::templates::tokens(text).ok_or(PartTemplateError::Unclosed)?;
        for token in tokens {
            match token {
                Token::Literal(text) => literal.push_str(text),
                Token::Variable(name) => {
                    let variable = variable(name, segments.clone())?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(Piece::Variable(variable));
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Ok(PartTemplate {
            pieces: pieces.into(),
        })
    }

    /// The template with every variable written as `x`: what any rendering looks like to a
    /// URI parser (rendered values are percent-encoded, so they never change the verdict).
    pub fn sample(&self) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => &**text,
                Piece::Variable(_) => "x",
            })
            .collect()
    }

    /// The literal text before the first variable.
    pub fn literal_start(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Literal(text)) => text,
            _ => "",
        }
    }

    /// Appends the rendered template to `out`; a variable without a value (or with an empty
    /// one) is returned as the error: a half-filled path would reach the wrong resource.
    pub fn render<'t>(
        &'t self,
        values: &impl PartValues,
        encoding: Encoding,
        out: &mut Vec<u8>,
    ) -> Result<(), &'t Variable> {
        for piece in self.pieces.iter() {
            match piece {
                Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Variable(variable) => {
                    push_variable(out, variable, values, encoding).ok_or(variable)?
                }
            }
        }
        Ok(())
    }
}

fn variable<'a>(
    name: &str,
    mut segments: impl Iterator<Item = &'a str> + Clone,
) -> Result<Variable, PartTemplateError> {
    let unknown = || PartTemplateError::UnknownVariable(name.to_string());
    if name == "consumer" {
        return Ok(Variable::Consumer);
    }
    if name == "request_id" {
        return Ok(Variable::RequestId);
    }
    let (kind, argument) = name.split_once('.').ok_or_else(unknown)?;
    if argument.is_empty() || argument.contains('{') {
        return Err(unknown());
    }
    match kind {
        "claim" => Ok(Variable::Claim(argument.into())),
        "query" => Ok(Variable::Query(argument.into())),
        "path" => {
            if segments.clone().any(|segment| segment == argument) {
                Ok(Variable::Path(argument.into()))
            } else {
                let known: Vec<&str> = segments.by_ref().collect();
                let hint = if known.is_empty() {
                    String::new()
                } else {
                    format!(" (it names: {})", known.join(", "))
                };
                Err(PartTemplateError::UnknownSegment(
                    argument.to_string(),
                    hint,
                ))
            }
        }
        "header" => HeaderName::from_bytes(argument.as_bytes())
            .map(Variable::Header)
            .map_err(|_| PartTemplateError::BadHeaderName(name.to_string())),
        _ => Err(unknown()),
    }
}

fn push_variable(
    out: &mut Vec<u8>,
    variable: &Variable,
    values: &impl PartValues,
    encoding: Encoding,
) -> Option<()> {
    let mut decoded = Vec::new();
    let bytes: &[u8] = match variable {
        Variable::Claim(name) => {
            let value = crate::templates::claim(values.claims()?, name)?;
            crate::templates::push_claim(&mut decoded, value)?;
            &decoded
        }
        Variable::Consumer => values.consumer()?.as_bytes(),
        Variable::RequestId => values.request_id().as_bytes(),
        Variable::Query(name) => {
            percent_decode(values.query(name)?.as_bytes(), true, &mut decoded);
            &decoded
        }
        Variable::Path(name) => {
            percent_decode(values.path_segment(name)?.as_bytes(), false, &mut decoded);
            &decoded
        }
        Variable::Header(name) => values.header(name)?,
    };
    if bytes.is_empty() {
        return None;
    }
    match encoding {
        Encoding::Raw => out.extend_from_slice(bytes),
        Encoding::Uri => percent_encode(bytes, out),
    }
    Some(())
}

/// RFC 3986 percent-decoding (`+` is a space in a query value); a malformed escape stays as is.
pub fn percent_decode(input: &[u8], plus_is_space: bool, out: &mut Vec<u8>) {
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte == b'%' {
            let hex = input.get(index + 1..index + 3).and_then(|pair| {
                let text = std::str::from_utf8(pair).ok()?;
                u8::from_str_radix(text, 16).ok()
            });
            if let Some(decoded) = hex {
                out.push(decoded);
                index += 3;
                continue;
            }
        }
        out.push(if plus_is_space && byte == b'+' {
            b' '
        } else {
            byte
        });
        index += 1;
    }
}

/// Everything but unreserved characters becomes `%XX`; a value of `.` or `..` has its dots
/// encoded too, so it can never be read as a relative path step.
pub fn percent_encode(input: &[u8], out: &mut Vec<u8>) {
    let dots_only = input.iter().all(|&b| b == b'.');
    for &byte in input {
        let unreserved =
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') || byte == b'.';
        if unreserved && !(dots_only && byte == b'.') {
            out.push(byte);
        } else {
            out.push(b'%');
            out.extend_from_slice(&crate::fastfmt::hex_pair(byte, crate::fastfmt::UPPER_HEX));
        }
    }
}

/// The raw first value of `name` in a query string (`a=1&b=2`), `""` for a bare `name`.
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Request {
        claims: Map<String, Value>,
        query: &'static str,
        path: &'static str,
        headers: http::HeaderMap,
    }

    impl PartValues for Request {
        fn claims(&self) -> Option<&Map<String, Value>> {
            Some(&self.claims)
        }
        fn consumer(&self) -> Option<&str> {
            None
        }
        fn request_id(&self) -> &str {
            "rid"
        }
        fn query(&self, name: &str) -> Option<&str> {
            query_value(self.query, name)
        }
        fn path_segment(&self, name: &str) -> Option<&str> {
            crate::routing::template::PathTemplate::parse("/u/{id}")
                .unwrap()
                .capture(self.path, name)
        }
        fn header(&self, name: &HeaderName) -> Option<&[u8]> {
            self.headers.get(name).map(|v| v.as_bytes())
        }
    }

    fn request() -> Request {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", "acme corp".parse().unwrap());
        Request {
            claims: json!({"sub": "u/7?x", "realm": {"id": 3}, "dots": ".."})
                .as_object()
                .cloned()
                .unwrap(),
            query: "limit=5&name=a%20b+c&empty=",
            path: "/u/4%2F2",
            headers,
        }
    }

    fn render(text: &str, encoding: Encoding) -> Result<String, String> {
        let template = PartTemplate::parse(text, ["id"].into_iter()).unwrap();
        let mut out = Vec::new();
        template
            .render(&request(), encoding, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
            .map_err(Variable::describe)
    }

    #[test]
    fn path_values_are_percent_encoded_and_stay_one_segment() {
        assert_eq!(
            render("/users/{claim.sub}/profile", Encoding::Uri).unwrap(),
            "/users/u%2F7%3Fx/profile"
        );
        assert_eq!(
            render("/orders?limit={query.limit}&n={query.name}", Encoding::Uri).unwrap(),
            "/orders?limit=5&n=a%20b%20c"
        );
        assert_eq!(
            render("/r/{claim.realm.id}", Encoding::Uri).unwrap(),
            "/r/3"
        );
        assert_eq!(render("/x/{path.id}", Encoding::Uri).unwrap(), "/x/4%2F2");
        assert_eq!(
            render("/x/{claim.dots}", Encoding::Uri).unwrap(),
            "/x/%2E%2E"
        );
        assert_eq!(
            render("/t/{header.x-tenant}", Encoding::Uri).unwrap(),
            "/t/acme%20corp"
        );
        assert_eq!(
            render("{header.x-tenant}", Encoding::Raw).unwrap(),
            "acme corp"
        );
        assert_eq!(render("/{{literal}}", Encoding::Uri).unwrap(), "/{literal}");
    }

    #[test]
    fn a_missing_or_empty_value_is_named() {
        assert_eq!(
            render("/a/{claim.nope}", Encoding::Uri),
            Err("claim.nope".into())
        );
        assert_eq!(
            render("/a?e={query.empty}", Encoding::Uri),
            Err("query.empty".into())
        );
        assert_eq!(
            render("/a/{consumer}", Encoding::Uri),
            Err("consumer".into())
        );
    }

    #[test]
    fn unknown_variables_are_refused_at_load() {
        let parse = |text: &str| PartTemplate::parse(text, ["id"].into_iter());
        assert_eq!(
            parse("/a/{nope}"),
            Err(PartTemplateError::UnknownVariable("nope".into()))
        );
        assert!(matches!(
            parse("/a/{path.other}"),
            Err(PartTemplateError::UnknownSegment(name, hint)) if name == "other" && hint.contains("id")
        ));
        assert_eq!(parse("/a/{claim.sub"), Err(PartTemplateError::Unclosed));
        assert_eq!(
            parse("/a/{claim.}"),
            Err(PartTemplateError::UnknownVariable("claim.".into()))
        );
    }

    #[test]
    fn decoding_and_encoding_round_trip_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut encoded = Vec::new();
        percent_encode(&all, &mut encoded);
        assert!(encoded
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
        let mut back = Vec::new();
        percent_decode(&encoded, false, &mut back);
        assert_eq!(back, all);
    }
}
