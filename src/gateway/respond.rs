//! The error responses the gateway itself produces (DESIGN.md "Behaviour every route shares"):
//! JSON, or on gRPC routes a gRPC status (HTTP 200, `grpc-status`, `grpc-message`).

use super::grpc;
use crate::fastfmt::push_json_str;
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::borrow::Cow;

/// A request the gateway answers itself instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: Cow<'static, str>,
    /// For 401: the `WWW-Authenticate` error description.
    pub challenge: Option<&'static str>,
    /// More headers (rate-limit headers on limited routes).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Rejection {
    /// A rejection with `status` and a human sentence.
    pub fn new(status: u16, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            message: message.into(),
            challenge: None,
            headers: Vec::new(),
        }
    }
}

/// The gateway's own refusals with a fixed text: status and message in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HeaderTooLarge,
    NoRoute,
    AddressForbidden,
    OriginForbidden,
    BodyTooLarge,
    RateLimited,
    QuotaUsedUp,
    RateLimitStoreUnavailable,
    BodyTimedOut,
    Unparseable,
    UpstreamConnectTimedOut,
    UpstreamTimedOut,
    UpstreamFailed,
    DeadlinePassed,
    Internal,
}

impl Refusal {
    /// The status and the sentence the client reads.
    pub const fn status_and_message(self) -> (u16, &'static str) {
        use Refusal::*;
        match self {
            HeaderTooLarge => (431, "the request header is larger than allowed"),
            NoRoute => (404, "no route matches this request"),
            AddressForbidden => (403, "this client address may not use this route"),
            OriginForbidden => (403, "this route does not accept requests from this origin"),
            BodyTooLarge => (413, "the request body is larger than allowed"),
            RateLimited => (
                429,
                "too many requests: a rate limit of this route is reached",
            ),
            QuotaUsedUp => (
                429,
                "too many requests: a quota of this route is used up until its period ends",
            ),
            RateLimitStoreUnavailable => (503, "the rate-limit store is unavailable"),
            BodyTimedOut => (408, "the request body was not received in time"),
            Unparseable => (400, "the request could not be parsed"),
            UpstreamConnectTimedOut => (504, "the upstream did not accept the connection in time"),
            UpstreamTimedOut => (504, "the upstream did not answer in time"),
            UpstreamFailed => (502, "the upstream failed to answer"),
            DeadlinePassed => (504, "the upstream exchange outlived its deadline"),
            Internal => (500, "internal gateway error"),
        }
    }

    pub const fn message(self) -> &'static str {
        self.status_and_message().1
    }
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        let (status, message) = refusal.status_and_message();
        Rejection::new(status, message)
    }
}

/// The machine-readable code for a status the gateway produces.
pub fn error_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        429 => "rate_limited",
        431 => "request_header_fields_too_large",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        500..=599 => "internal_error",
        _ => "error",
    }
}

/// Renders `{"error":..,"message":..,"request_id":..}`.
pub fn error_body(status: u16, message: &str, request_id: &str) -> String {
    let mut body = Vec::with_capacity(96 + message.len());
    body.extend_from_slice(b"{\"error\":\"");
    body.extend_from_slice(error_code(status).as_bytes());
    body.extend_from_slice(b"\",\"message\":");
    push_json_str(&mut body, message);
    body.extend_from_slice(b",\"request_id\":");
    push_json_str(&mut body, request_id);
    body.push(b'}');
    // Built from `&str`s and ASCII only.
    String::from_utf8(body).unwrap_or_default()
}

/// How the gateway writes its own errors for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorForm {
    Json,
    /// A trailers-only gRPC response.
    Grpc,
}

/// gRPC on routes marked `grpc: true`; for requests no route matched, whatever the client speaks.
pub fn error_form(route_grpc: Option<bool>, request: &RequestHeader) -> ErrorForm {
    let grpc = route_grpc.unwrap_or_else(|| {
        request
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    });
    if grpc {
        ErrorForm::Grpc
    } else {
        ErrorForm::Json
    }
}

/// Writes the error response for `rejection` in `form`.
pub async fn send(
    session: &mut Session,
    request_id: &str,
    rejection: &Rejection,
    form: ErrorForm,
) -> pingora_error::Result<()> {
    if form == ErrorForm::Grpc {
        return send_grpc(session, request_id, rejection).await;
    }
    let body = error_body(rejection.status, &rejection.message, request_id);
    let mut header = ResponseHeader::build(rejection.status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header(&super::identity::X_REQUEST_ID, request_id)?;
    if rejection.status == 503 {
        header.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    for (name, value) in &rejection.headers {
        header.insert_header(name.clone(), value.clone())?;
    }
    if let Some(description) = rejection.challenge {
        header.insert_header(
            http::header::WWW_AUTHENTICATE,
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
        )?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

/// Answers a CORS preflight (204, no body): the route's CORS fields when the origin is allowed.
pub async fn preflight(
    session: &mut Session,
    ctx: &super::ctx::RequestCtx,
) -> pingora_error::Result<()> {
    let mut header = ResponseHeader::build(204, Some(8))?;
    if let Some((policy, verdict)) = ctx.cors() {
        for (name, value) in policy.preflight_headers(verdict, &session.req_header().headers) {
            header.append_header(name, value)?;
        }
    }
    header.insert_header(
        &super::identity::X_REQUEST_ID,
        ctx.request_id.header_value(),
    )?;
    session.write_response_header(Box::new(header), true).await
}

async fn send_grpc(
    session: &mut Session,
    request_id: &str,
    rejection: &Rejection,
) -> pingora_error::Result<()> {
    let mut header = ResponseHeader::build(200, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    header.insert_header("grpc-status", grpc::code(rejection.status).to_string())?;
    header.insert_header("grpc-message", grpc::message(&rejection.message))?;
    header.insert_header(&super::identity::X_REQUEST_ID, request_id)?;
    for (name, value) in &rejection.headers {
        header.insert_header(name.clone(), value.clone())?;
    }
    if session.req_header().version < http::Version::HTTP_2 {
        header.insert_header(http::header::CONTENT_LENGTH, "0")?;
    }
    // Trailers-only: the status travels in the one header block that ends the stream.
    session.write_response_header(Box::new(header), true).await
}

/// Maps a proxying failure to what the client is told; None when the client is gone.
pub fn classify(error: &Error) -> Option<Rejection> {
    use ErrorType::*;
    let etype = error.etype();
    if let HTTPStatus(status) = etype {
        let message = error
            .context
            .as_ref()
            .map_or(Cow::Borrowed("the request could not be served"), |c| {
                Cow::Owned(c.as_str().to_string())
            });
        return Some(Rejection::new(*status, message));
    }
    match error.esource() {
        ErrorSource::Upstream => Some(
            match etype {
                ConnectTimedout | TLSHandshakeTimedout => Refusal::UpstreamConnectTimedOut,
                ReadTimedout | WriteTimedout => Refusal::UpstreamTimedOut,
                _ => Refusal::UpstreamFailed,
            }
            .into(),
        ),
        ErrorSource::Downstream => match etype {
            // Only a body read can time out here: a slow head is cut before the request exists.
            ReadTimedout => Some(Refusal::BodyTimedOut.into()),
            ReadError | WriteError | ConnectionClosed | WriteTimedout => None,
            _ => Some(Refusal::Unparseable.into()),
        },
        ErrorSource::Internal | ErrorSource::Unset => Some(Refusal::Internal.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_the_documented_codes() {
        let body = error_body(404, "no route for \"/x\"", "id1");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["error"], "not_found");
        assert_eq!(value["message"], "no route for \"/x\"");
        assert_eq!(value["request_id"], "id1");
    }

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        let timeout = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(classify(&timeout).map(|r| r.status), Some(504));
        let refused = Error::new_up(ErrorType::ConnectRefused);
        assert_eq!(classify(&refused).map(|r| r.status), Some(502));
        let gone = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(classify(&gone), None);
        let stalled = Error::new_down(ErrorType::ReadTimedout);
        assert_eq!(classify(&stalled).map(|r| r.status), Some(408));
        let ours = Error::explain(
            ErrorType::HTTPStatus(503),
            "no healthy backend in upstream `u`",
        );
        let rejection = classify(&ours).unwrap();
        assert_eq!(
            (rejection.status, rejection.message.as_ref()),
            (503, "no healthy backend in upstream `u`")
        );
    }
}
