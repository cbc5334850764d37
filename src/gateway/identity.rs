//! Who the client is and how it reached us: the request id, the client's address (through
//! trusted proxies), the Host it asked for, and its transport (peer address, TLS).

use super::ctx::RequestId;
use http::HeaderName;
use ipnet::IpNet;
use pingora_core::protocols::tls::SslDigest;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Keeps the client's sane `X-Request-ID` or makes a new one.
pub fn request_id(request: &RequestHeader) -> RequestId {
    request
        .headers
        .get(&X_REQUEST_ID)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate)
}

/// The client's address: the peer, or from `X-Forwarded-For` when the peer is a trusted proxy
/// (walking right to left past every trusted hop).
pub fn client_ip(
    peer: Option<IpAddr>,
    request: &RequestHeader,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer.map(canonical)?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in request.headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !is_trusted(&client) {
                        return Some(client);
                    }
                }
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

/// The Host the client asked for (Host header, else the URI authority).
pub fn request_host(request: &RequestHeader) -> &str {
    request
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// How the client reached the gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport<'a> {
    /// The client's address (the TCP peer).
    pub peer: Option<IpAddr>,
    /// TLS from the client; `None` for plain HTTP.
    pub tls: Option<&'a SslDigest>,
}

/// IPv4-mapped IPv6 addresses are compared as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, xff: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        if let Some(xff) = xff {
            req.insert_header("x-forwarded-for", xff).unwrap();
        }
        req
    }

    #[test]
    fn client_ip_comes_from_xff_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = Some("10.1.1.1".parse().unwrap());
        let stranger = Some("203.0.113.9".parse().unwrap());
        let req = request("/", Some("198.51.100.7, 10.2.2.2"));
        assert_eq!(
            client_ip(proxy, &req, &trusted),
            "198.51.100.7".parse().ok()
        );
        assert_eq!(
            client_ip(stranger, &req, &trusted),
            stranger,
            "untrusted peers cannot spoof"
        );
        assert_eq!(client_ip(proxy, &req, &[]), proxy);
        let garbage = request("/", Some("not-an-ip"));
        assert_eq!(client_ip(proxy, &garbage, &trusted), proxy);
    }
}
