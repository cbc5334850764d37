//! Cross-origin resource sharing (the Fetch standard's CORS protocol) for the routes that
//! configure `cors`: which origins may read responses, the preflight answer, and the headers every
//! response of such a route carries. Compiled at load; a request compares its `Origin` with the
//! rules and copies prepared header values.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};

static ANY: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

/// How many headers [`CorsPolicy::write_response_headers`] adds at most.
pub const MAX_RESPONSE_HEADERS: usize = 4;

/// One entry of `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `*`: every origin.
    Any,
    /// `https://app.example.com[:port]`, lowercased.
    Exact(String),
    /// `[scheme://]*.example.com[:port]`: any host under the domain (not the domain itself).
    Subdomains {
        /// `None`: http or https.
        scheme: Option<String>,
        /// `.example.com`, lowercased.
        suffix: String,
        /// `None`: the scheme's default port only (an `Origin` without a port).
        port: Option<u16>,
    },
}

impl OriginRule {
    /// Parses one `allow_origins` entry; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<OriginRule, String> {
        if text == "*" {
            return Ok(OriginRule::Any);
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = match lower.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, lower.as_str()),
        };
        if let Some(scheme) = scheme {
            if scheme != "http" && scheme != "https" {
                return Err(format!("`{text}`: the scheme must be http or https"));
            }
        }
        let (host, port) = split_port(rest).ok_or_else(|| format!("`{text}`: bad port"))?;
        if let Some(domain) = host.strip_prefix("*.") {
            if !is_hostname(domain) {
                return Err(format!("`{text}`: `*.` must be followed by a domain"));
            }
            return Ok(OriginRule::Subdomains {
                scheme: scheme.map(str::to_string),
                suffix: format!(".{domain}"),
                port,
            });
        }
        if scheme.is_none() {
            return Err(format!(
                "`{text}`: an origin is scheme://host[:port] (https://app.example.com), \
                 `*.domain` or `*`"
            ));
        }
        if !is_hostname(host)
            && host.parse::<std::net::IpAddr>().is_err()
            && !is_bracketed_ipv6(host)
        {
            return Err(format!(
                "`{text}`: not an origin (no path, no trailing slash: https://app.example.com)"
            ));
        }
        Ok(OriginRule::Exact(lower))
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            OriginRule::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                let Some((origin_scheme, rest)) = origin.split_once("://") else {
                    return false;
                };
                let scheme_ok = match scheme {
                    Some(scheme) => origin_scheme.eq_ignore_ascii_case(scheme),
                    None => {
                        origin_scheme.eq_ignore_ascii_case("https")
                            || origin_scheme.eq_ignore_ascii_case("http")
                    }
                };
                let Some((host, origin_port)) = split_port(rest) else {
                    return false;
                };
                scheme_ok
                    && origin_port == *port
                    && host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// `host[:port]` -> the host and the port; `None` when the port is not a number.
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    // A bracketed IPv6 literal has colons of its own.
    let port_colon = match text.rfind(']') {
        Some(bracket) => text[bracket..].find(':').map(|i| bracket + i),
        None => text.rfind(':'),
    };
    match port_colon {
        Some(colon) => {
            let port = text[colon + 1..].parse().ok()?;
            Some((&text[..colon], Some(port)))
        }
        None => Some((text, None)),
    }
}

/// A DNS host name (the same rule as certificate names, without a wildcard).
fn is_hostname(text: &str) -> bool {
    !text.starts_with("*.") && crate::tls::certs::server_name(text).is_some()
}

fn is_bracketed_ipv6(text: &str) -> bool {
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A route's CORS policy, validated and with its header values prepared.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsPolicy {
    pub origins: Vec<OriginRule>,
    /// `Access-Control-Allow-Methods` of a preflight answer.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`: `None` lists nothing (only the safelisted headers);
    /// `Some("*")` without credentials allows any.
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
    /// A request whose `Origin` is not allowed is refused (403) instead of answered without CORS
    /// headers.
    pub reject_unknown_origins: bool,
}

/// What a request's `Origin` means on a CORS route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin`: a same-origin or non-browser request; only `Vary: Origin` is added.
    NoOrigin,
    /// The origin may read the response; the `Access-Control-Allow-Origin` value.
    Allowed(HeaderValue),
    /// The origin is not listed: no CORS headers (the browser keeps the response from it).
    Unknown,
}

impl CorsPolicy {
    /// Whether `origin` is allowed, and what `Access-Control-Allow-Origin` then says.
    pub fn verdict(&self, headers: &HeaderMap) -> Verdict {
        self.verdict_for(headers.get(ORIGIN))
    }

    /// What the request's `Origin` value (found by the caller) means on this route.
    pub fn verdict_for(&self, origin: Option<&HeaderValue>) -> Verdict {
        let Some(origin) = origin else {
            return Verdict::NoOrigin;
        };
        let Ok(text) = origin.to_str() else {
            return Verdict::Unknown;
        };
        match self.origins.iter().find(|rule| rule.matches(text)) {
            // Without credentials a wildcard answer is the same for everyone.
            Some(OriginRule::Any) if !self.allow_credentials => Verdict::Allowed(ANY.clone()),
            Some(_) => Verdict::Allowed(origin.clone()),
            None => Verdict::Unknown,
        }
    }

    /// The headers of the preflight answer (a 204): the CORS fields when the origin is allowed,
    /// and `Vary` either way.
    pub fn preflight_headers(
        &self,
        verdict: &Verdict,
        request: &HeaderMap,
    ) -> Vec<(http::HeaderName, HeaderValue)> {
        let mut headers = vec![(VARY, VARY_PREFLIGHT.clone())];
        let Verdict::Allowed(allow_origin) = verdict else {
            return headers;
        };
        headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.clone()));
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone()));
        let allow_headers = match &self.allow_headers {
            // `*` is answered with what was asked, which also works where a client ignores `*`.
            Some(any) if any == ANY => request.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
            listed => listed.clone(),
        };
        if let Some(allow_headers) = allow_headers {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, allow_headers));
        }
        if let Some(max_age) = &self.max_age {
            headers.push((ACCESS_CONTROL_MAX_AGE, max_age.clone()));
        }
        if self.allow_credentials {
            headers.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone()));
        }
        headers
    }

    /// Makes the response's CORS fields the route's: the backend's own are removed, `Vary:
    /// Origin` is added (the answer depends on it, for every cache after us), and an allowed
    /// origin gets `Access-Control-Allow-Origin`, `-Allow-Credentials`, `-Expose-Headers`.
    pub fn write_response_headers(&self, verdict: &Verdict, headers: &mut HeaderMap) {
        // One pass over the names finds whether the backend sent any CORS field (it rarely
        // does) and any `Vary`: cheaper than a hashed lookup for each.
        let (mut backend_cors, mut vary) = (false, false);
        for name in headers.keys() {
            backend_cors |= name.as_str().starts_with("access-control-");
            vary |= *name == VARY;
        }
        self.write_response_headers_seen(verdict, headers, backend_cors, vary);
    }

    /// [`Self::write_response_headers`] when the caller's own pass over the names found
    /// whether any `Access-Control-*` field and any `Vary` are there.
    pub fn write_response_headers_seen(
        &self,
        verdict: &Verdict,
        headers: &mut HeaderMap,
        backend_cors: bool,
        vary: bool,
    ) {
        if backend_cors {
            for name in [
                &ACCESS_CONTROL_ALLOW_ORIGIN,
                &ACCESS_CONTROL_ALLOW_CREDENTIALS,
                &ACCESS_CONTROL_EXPOSE_HEADERS,
                &ACCESS_CONTROL_ALLOW_METHODS,
                &ACCESS_CONTROL_ALLOW_HEADERS,
                &ACCESS_CONTROL_MAX_AGE,
            ] {
                headers.remove(name);
            }
        }
        if !vary || !varies_on_origin(headers) {
            headers.append(VARY, VARY_ORIGIN.clone());
        }
        let Verdict::Allowed(allow_origin) = verdict else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.clone());
        if self.allow_credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// The same fields as a list, for the gateway's own error answers.
    pub fn error_headers(&self, verdict: &Verdict) -> Vec<(http::HeaderName, HeaderValue)> {
        let mut map = HeaderMap::new();
        self.write_response_headers(verdict, &mut map);
        map.into_iter()
            .filter_map(|(name, value)| name.map(|name| (name, value)))
            .collect()
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Adds `Origin` to `Vary` unless it is there already (or `Vary: *` says everything).
/// Whether `Vary` already covers `Origin` (or is `*`).
fn varies_on_origin(headers: &HeaderMap) -> bool {
    headers.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .map(str::trim)
                .any(|name| name == "*" || name.eq_ignore_ascii_case("origin"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy {
            origins: origins
                .iter()
                .map(|o| OriginRule::parse(o).unwrap())
                .collect(),
            allow_methods: HeaderValue::from_static("GET, POST"),
            allow_headers: Some(HeaderValue::from_static("Authorization")),
            expose_headers: Some(HeaderValue::from_static("X-Request-ID")),
            max_age: Some(HeaderValue::from_static("600")),
            allow_credentials: credentials,
            reject_unknown_origins: false,
        }
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers
    }

    #[test]
    fn origin_rules_parse_or_say_why_not() {
        assert_eq!(OriginRule::parse("*"), Ok(OriginRule::Any));
        assert_eq!(
            OriginRule::parse("HTTPS://App.Example.com"),
            Ok(OriginRule::Exact("https://app.example.com".into()))
        );
        assert_eq!(
            OriginRule::parse("*.example.com"),
            Ok(OriginRule::Subdomains {
                scheme: None,
                suffix: ".example.com".into(),
                port: None
            })
        );
        assert!(OriginRule::parse("http://localhost:8080").is_ok());
        assert!(OriginRule::parse("http://[::1]:8080").is_ok());
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://app.example.com",
            "https://app.example.com:port",
            "*.",
            "https://*.",
            "",
        ] {
            assert!(OriginRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_with_the_port_in_mind() {
        let p = policy(
            &[
                "https://app.example.com",
                "*.partner.test",
                "https://*.cdn.test:8443",
            ],
            false,
        );
        let allowed = |o: &str| matches!(p.verdict(&with_origin(o)), Verdict::Allowed(_));
        assert!(allowed("https://app.example.com"));
        assert!(allowed("https://APP.example.com"));
        assert!(!allowed("http://app.example.com"), "the scheme counts");
        assert!(!allowed("https://app.example.com:8443"), "the port counts");
        assert!(!allowed("https://app.example.com.evil.test"));
        assert!(allowed("http://a.partner.test"));
        assert!(allowed("https://a.b.partner.test"));
        assert!(
            !allowed("https://partner.test"),
            "the domain itself is not a subdomain"
        );
        assert!(!allowed("https://evilpartner.test"));
        assert!(!allowed("https://a.partner.test:444"));
        assert!(allowed("https://x.cdn.test:8443"));
        assert!(!allowed("http://x.cdn.test:8443"));
        assert!(!allowed("https://x.cdn.test"));
        assert!(!allowed("null"));
        assert_eq!(p.verdict(&HeaderMap::new()), Verdict::NoOrigin);
    }

    #[test]
    fn a_wildcard_answers_star_unless_credentials_make_it_echo() {
        let open = policy(&["*"], false);
        assert_eq!(
            open.verdict(&with_origin("https://any.test")),
            Verdict::Allowed(HeaderValue::from_static("*"))
        );
        let mut echo = policy(&["*.example.com"], true);
        echo.origins.push(OriginRule::Any);
        assert_eq!(
            echo.verdict(&with_origin("https://a.example.com")),
            Verdict::Allowed(HeaderValue::from_static("https://a.example.com"))
        );
    }

    #[test]
    fn responses_get_the_routes_fields_and_vary_once() {
        let p = policy(&["https://app.example.com"], true);
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        let verdict = p.verdict(&with_origin("https://app.example.com"));
        p.write_response_headers(&verdict, &mut headers);
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[ACCESS_CONTROL_EXPOSE_HEADERS], "X-Request-ID");
        let vary: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        p.write_response_headers(&verdict, &mut headers);
        assert_eq!(headers.get_all(VARY).iter().count(), 2, "added once");

        let mut unknown = HeaderMap::new();
        unknown.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        p.write_response_headers(&Verdict::Unknown, &mut unknown);
        assert!(
            !unknown.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
            "the backend's is removed"
        );
        assert_eq!(unknown[VARY], "Origin");
    }
}
