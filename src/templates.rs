//! Header value templates: `X-User: "{claim.sub}"`, `X-Trace: "{request_id}@{route}"`.
//! Parsed once at load into literal pieces and variables; a value without variables stays a
//! ready header value, so the request path clones it (a reference-count bump) and never
//! formats anything.

use http::HeaderValue;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The variables a template may use, for error messages.
pub const VARIABLES: &str =
    "{request_id}, {client_ip}, {route}, {upstream}, {consumer}, {claim.NAME}";

/// A header value as configured: ready as is, or rendered per request.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderTemplate {
    Static(HeaderValue),
    Dynamic(Template),
}

/// Literal text and variables, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Box<[Piece]>,
    /// Bytes of literal text, for sizing the rendered value.
    literal_len: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(Box<str>),
    Variable(Variable),
}

/// A value known only per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    RequestId,
    ClientIp,
    Upstream,
    Consumer,
    /// A claim of the verified token: a top-level claim named `name`, else (when the name has
    /// dots and no such claim) the path through nested objects, as `realm_access.roles`.
    Claim(Box<str>),
}

/// What went wrong parsing a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{0}}}` is not a template variable; use one of {VARIABLES} (write {{{{ for a literal `{{`)")]
    UnknownVariable(String),
    #[error(
        "`{{` opens a variable that is never closed with `}}` (write {{{{ for a literal `{{`)"
    )]
    Unclosed,
    #[error("`{{claim.}}` needs a claim name, as in {{claim.sub}}")]
    EmptyClaim,
    #[error("the text around the variables is not a valid HTTP header value")]
    InvalidText,
}

/// The request's values for the variables (`None`: this request has none).
pub trait Values {
    fn request_id(&self) -> &str;
    fn client_ip(&self) -> Option<IpAddr>;
    fn upstream(&self) -> Option<&str>;
    fn consumer(&self) -> Option<&str>;
    fn claims(&self) -> Option<&Map<String, Value>>;
}

impl HeaderTemplate {
    /// Parses `text`; `route` is known at load, so `{route}` becomes literal text. `{{` and
    /// `}}` are literal braces; a lone `}` is taken as written.
    pub fn parse(text: &str, route: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        for token in tokens(text).ok_or(TemplateError::Unclosed)? {
            let name = match token {
                Token::Literal(text) => {
                    literal.push_str(text);
                    continue;
                }
                Token::Variable(name) => name,
            };
            let variable = match name {
                "request_id" => Variable::RequestId,
                "client_ip" => Variable::ClientIp,
                "upstream" => Variable::Upstream,
                "consumer" => Variable::Consumer,
                "route" => {
                    literal.push_str(route);
                    continue;
                }
                _ => match name.strip_prefix("claim.") {
                    Some("") => return Err(TemplateError::EmptyClaim),
                    Some(claim) if !claim.contains('{') => Variable::Claim(claim.into()),
                    _ => return Err(TemplateError::UnknownVariable(name.to_string())),
                },
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
            }
            pieces.push(Piece::Variable(variable));
        }
        let valid = |text: &str| HeaderValue::from_str(text).is_ok();
        if pieces.is_empty() {
            return HeaderValue::from_str(&literal)
                .map(HeaderTemplate::Static)
                .map_err(|_| TemplateError::InvalidText);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        let mut literal_len = 0;
        for piece in &pieces {
            if let Piece::Literal(text) = piece {
                if !valid(text) {
                    return Err(TemplateError::InvalidText);
                }
                literal_len += text.len();
            }
        }
        Ok(HeaderTemplate::Dynamic(Template {
            pieces: pieces.into(),
            literal_len,
        }))
    }

    /// The value for this request; `None` when a variable has no value here (no token, no
    /// consumer, a missing claim) or the value is not valid in a header. Such a header is
    /// not sent at all: a half-filled value would be taken for a real one.
    pub fn render(&self, values: &impl Values) -> Option<HeaderValue> {
        match self {
            HeaderTemplate::Static(value) => Some(value.clone()),
            HeaderTemplate::Dynamic(template) => template.render(values),
        }
    }
}

/// One piece of a template's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Literal(&'a str),
    /// The name between `{` and `}`.
    Variable(&'a str),
}

/// Splits `text` into literal runs and `{name}` variables, in order: `{{` and `}}` are literal
/// braces, a lone `}` is taken as written. `None` when a `{` is never closed.
pub(crate) fn tokens(text: &str) -> Option<Vec<Token<'_>>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        if at > 0 {
            tokens.push(Token::Literal(&rest[..at]));
        }
        let tail = &rest[at..];
        if tail.starts_with("{{") || tail.starts_with("}}") || tail.starts_with('}') {
            tokens.push(Token::Literal(&tail[..1]));
            let doubled = tail.starts_with("{{") || tail.starts_with("}}");
            rest = &tail[if doubled { 2 } else { 1 }..];
            continue;
        }
        let end = tail.find('}')?;
        tokens.push(Token::Variable(&tail[1..end]));
        rest = &tail[end + 1..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Literal(rest));
    }
    Some(tokens)
}

impl Template {
    fn render(&self, values: &impl Values) -> Option<HeaderValue> {
        let mut out = Vec::with_capacity(self.literal_len + 40);
        for piece in self.pieces.iter() {
            match piece {
                Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Variable(variable) => push_variable(&mut out, variable, values)?,
            }
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    }
}

fn push_variable(out: &mut Vec<u8>, variable: &Variable, values: &impl Values) -> Option<()> {
    let text = match variable {
        Variable::RequestId => values.request_id(),
        Variable::ClientIp => {
            crate::fastfmt::push_ip(out, values.client_ip()?);
            return Some(());
        }
        Variable::Upstream => values.upstream()?,
        Variable::Consumer => values.consumer()?,
        Variable::Claim(name) => return push_claim(out, claim(values.claims()?, name)?),
    };
    (!text.is_empty()).then(|| out.extend_from_slice(text.as_bytes()))
}

/// The claim `name`: top-level first (names such as `https://example.com/roles` have dots),
/// then as a path through nested objects.
pub(crate) fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A string as is, an array of strings joined by commas, anything else as JSON; null or an
/// empty text is no value.
pub(crate) fn push_claim(out: &mut Vec<u8>, value: &Value) -> Option<()> {
    let start = out.len();
    match value {
        Value::Null => return None,
        Value::String(text) => out.extend_from_slice(text.as_bytes()),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                match item {
                    Value::String(text) => out.extend_from_slice(text.as_bytes()),
                    other => serde_json::to_writer(&mut *out, other).ok()?,
                }
            }
        }
        other => serde_json::to_writer(&mut *out, other).ok()?,
    }
    (out.len() > start).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Request {
        client_ip: Option<IpAddr>,
        upstream: Option<&'static str>,
        consumer: Option<&'static str>,
        claims: Option<Map<String, Value>>,
    }

    impl Values for Request {
        fn request_id(&self) -> &str {
            "req-1"
        }
        fn client_ip(&self) -> Option<IpAddr> {
            self.client_ip
        }
        fn upstream(&self) -> Option<&str> {
            self.upstream
        }
        fn consumer(&self) -> Option<&str> {
            self.consumer
        }
        fn claims(&self) -> Option<&Map<String, Value>> {
            self.claims.as_ref()
        }
    }

    fn render(text: &str, request: &Request) -> Option<String> {
        let template = HeaderTemplate::parse(text, "orders").unwrap();
        template
            .render(request)
            .map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap())
    }

    fn claims(value: Value) -> Option<Map<String, Value>> {
        value.as_object().cloned()
    }

    #[test]
    fn values_without_variables_are_ready_header_values() {
        let parsed = HeaderTemplate::parse("max-age=31536000", "r").unwrap();
        assert_eq!(
            parsed,
            HeaderTemplate::Static(HeaderValue::from_static("max-age=31536000"))
        );
        // The route name is known at load, so it does not make a value dynamic.
        let parsed = HeaderTemplate::parse("via {route} {{x}}", "orders").unwrap();
        assert_eq!(
            parsed,
            HeaderTemplate::Static(HeaderValue::from_static("via orders {x}"))
        );
        let parsed = HeaderTemplate::parse("a}b", "r").unwrap();
        assert_eq!(
            parsed,
            HeaderTemplate::Static(HeaderValue::from_static("a}b"))
        );
    }

    #[test]
    fn variables_are_filled_per_request() {
        let request = Request {
            client_ip: Some("2001:db8::7".parse().unwrap()),
            upstream: Some("orders-v2"),
            consumer: Some("alice"),
            claims: claims(json!({"sub": "alice", "tenant": 42})),
        };
        assert_eq!(
            render("{request_id}/{client_ip}/{route}/{upstream}", &request).as_deref(),
            Some("req-1/2001:db8::7/orders/orders-v2")
        );
        assert_eq!(
            render("user={consumer}; tenant={claim.tenant}", &request).as_deref(),
            Some("user=alice; tenant=42")
        );
        let v4 = Request {
            client_ip: Some("192.0.2.9".parse().unwrap()),
            ..Request::default()
        };
        assert_eq!(render("{client_ip}", &v4).as_deref(), Some("192.0.2.9"));
    }

    #[test]
    fn a_variable_without_a_value_means_no_header() {
        let anonymous = Request::default();
        assert_eq!(render("user={consumer}", &anonymous), None);
        assert_eq!(render("{claim.sub}", &anonymous), None);
        assert_eq!(render("{upstream}", &anonymous), None);
        let request = Request {
            claims: claims(json!({"sub": "", "nothing": null})),
            consumer: Some(""),
            ..Request::default()
        };
        assert_eq!(render("{claim.sub}", &request), None);
        assert_eq!(render("{claim.nothing}", &request), None);
        assert_eq!(render("{claim.missing}", &request), None);
        assert_eq!(render("x{consumer}", &request), None);
        // The request id always has a value.
        assert_eq!(render("{request_id}", &anonymous).as_deref(), Some("req-1"));
    }

    #[test]
    fn claims_are_found_by_name_then_by_path() {
        let request = Request {
            claims: claims(json!({
                "https://example.com/tenant": "acme",
                "realm_access": {"roles": ["admin", "ops"]},
                "flags": [1, true, "x"],
                "address": {"country": "FR"},
                "verified": true,
            })),
            ..Request::default()
        };
        assert_eq!(
            render("{claim.https://example.com/tenant}", &request).as_deref(),
            Some("acme")
        );
        assert_eq!(
            render("{claim.realm_access.roles}", &request).as_deref(),
            Some("admin,ops")
        );
        assert_eq!(
            render("{claim.flags}", &request).as_deref(),
            Some("1,true,x")
        );
        assert_eq!(
            render("{claim.address}", &request).as_deref(),
            Some(r#"{"country":"FR"}"#)
        );
        assert_eq!(
            render("{claim.verified}", &request).as_deref(),
            Some("true")
        );
        assert_eq!(render("{claim.address.city}", &request), None);
    }

    #[test]
    fn a_value_that_cannot_be_a_header_is_not_sent() {
        let request = Request {
            claims: claims(json!({"evil": "a\r\nX-Admin: 1", "name": "Zoë"})),
            ..Request::default()
        };
        assert_eq!(render("{claim.evil}", &request), None);
        assert_eq!(render("{claim.name}", &request).as_deref(), Some("Zoë"));
    }

    #[test]
    fn mistakes_are_refused_at_load() {
        let parse = |text| HeaderTemplate::parse(text, "r").unwrap_err();
        assert_eq!(
            parse("{user}"),
            TemplateError::UnknownVariable("user".to_string())
        );
        assert_eq!(parse("{}"), TemplateError::UnknownVariable(String::new()));
        assert_eq!(parse("{request_id"), TemplateError::Unclosed);
        assert_eq!(parse("{claim.}"), TemplateError::EmptyClaim);
        assert_eq!(
            parse("{claim.{sub}"),
            TemplateError::UnknownVariable("claim.{sub".to_string())
        );
        assert_eq!(parse("bad\u{7f}{consumer}"), TemplateError::InvalidText);
        assert_eq!(parse("bad\u{1}"), TemplateError::InvalidText);
        let message = parse("{user}").to_string();
        assert!(
            message.contains("`{user}` is not a template variable"),
            "{message}"
        );
        assert!(message.contains("{claim.NAME}"), "{message}");
        assert!(message.contains("write {{"), "{message}");
    }
}
