//! Authentication (JWT providers, API keys) and authorization (roles, scopes) for routes with an
//! `auth` block. Everything is prepared at load: keys parsed, the spoofable header list built.

pub mod api_key;
mod cache;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod mint;

use crate::config::{AuthMethod, AuthSpec, RouteAuthSpec, TokenSource};
use api_key::ApiKeys;
use http::{HeaderName, HeaderValue};
use jwt::JwtVerifier;
use pingora_http::RequestHeader;
use std::sync::Arc;

/// The longest a request waits for a key-set refetch its unknown `kid` set off; after it, the
/// request is answered with the keys there are (the fetch goes on).
const UNKNOWN_KID_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Who the request is, once authenticated.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// JWT `sub` or the API key's consumer.
    pub consumer: Option<String>,
    /// JWT `tier_claim` or the API key's tier.
    pub tier: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Headers sent upstream (`forward_claims`), built once per verified token.
    pub forwarded: Vec<(HeaderName, HeaderValue)>,
    /// The last second (Unix time) the token is valid, clock skew included: `exp + clock_skew`.
    pub valid_until: Option<u64>,
    /// Every claim of the JWT (empty for API keys), for `claim:NAME` rate-limit keys.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Missing,
    Malformed(&'static str),
    BadSignature,
    Expired,
    NotYetValid(&'static str),
    WrongIssuer(&'static str),
    WrongAudience(&'static str),
    UnknownKid,
    UnknownApiKey,
    Forbidden(&'static str),
    /// The provider's remote key set has not loaded yet (503, not the client's fault).
    KeysUnavailable,
}

impl Failure {
    /// Every `reason` label, in a fixed order.
    pub const REASONS: [&'static str; 11] = [
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "unknown_api_key",
        "forbidden",
        "keys_unavailable",
    ];

    /// Index into `REASONS`.
    pub fn reason_index(self) -> usize {
        match self {
            Failure::Missing => 0,
            Failure::Malformed(_) => 1,
            Failure::BadSignature => 2,
            Failure::Expired => 3,
            Failure::NotYetValid(_) => 4,
            Failure::WrongIssuer(_) => 5,
            Failure::WrongAudience(_) => 6,
            Failure::UnknownKid => 7,
            Failure::UnknownApiKey => 8,
            Failure::Forbidden(_) => 9,
            Failure::KeysUnavailable => 10,
        }
    }

    /// 401 for authentication failures, 403 for authorization ones.
    pub fn status(self) -> u16 {
        match self {
            Failure::Forbidden(_) => 403,
            Failure::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// A sentence for the client: says what is wrong, never echoes the token or a secret.
    pub fn description(self) -> &'static str {
        match self {
            Failure::Missing => "no credentials were presented",
            Failure::Malformed(why)
            | Failure::Forbidden(why)
            | Failure::NotYetValid(why)
            | Failure::WrongIssuer(why)
            | Failure::WrongAudience(why) => why,
            Failure::BadSignature => "the token signature or algorithm is not accepted",
            Failure::Expired => "the token has expired",
            Failure::UnknownKid => "the token was signed with an unknown key",
            Failure::UnknownApiKey => "the API key is not valid",
            Failure::KeysUnavailable => {
                "the signing keys to verify this token are not available yet"
            }
        }
    }

    /// How telling this failure is: a bad presented credential beats a missing one.
    fn weight(self) -> u8 {
        match self {
            Failure::Missing => 0,
            _ => 1,
        }
    }
}

/// A successful authentication and where its token was found.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Arc<Identity>,
    /// The JWT provider that verified it (None: API key).
    pub provider: Option<usize>,
    /// Where the token was (for `strip_token`).
    pub source: Option<TokenSource>,
    /// A JWT verified before and taken from the verified-token cache.
    pub from_cache: bool,
}

/// Every provider and key of the configuration.
pub struct Authenticator {
    providers: Vec<JwtVerifier>,
    api_keys: Option<ApiKeys>,
    /// Headers that only the gateway may set upstream (every `forward_claims` target).
    spoofable: Vec<HeaderName>,
}

impl Authenticator {
    /// Prepares every provider of `spec`.
    pub fn new(spec: &AuthSpec) -> Result<Self, jwt::BuildError> {
        let providers = spec
            .jwt_providers
            .iter()
            .map(JwtVerifier::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut spoofable: Vec<HeaderName> = spec
            .jwt_providers
            .iter()
            .flat_map(|p| p.forward_claims.iter().map(|(_, header)| header.clone()))
            .collect();
        spoofable.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        spoofable.dedup();
        Ok(Authenticator {
            providers,
            api_keys: spec.api_keys.as_ref().map(ApiKeys::new),
            spoofable,
        })
    }

    /// Headers stripped from every request before it goes upstream.
    pub fn spoofable_headers(&self) -> &[HeaderName] {
        &self.spoofable
    }

    /// Every remote key set (for the background refresher).
    pub fn remote_key_sets(&self) -> Vec<Arc<jwks::RemoteJwks>> {
        self.providers
            .iter()
            .filter_map(|p| p.remote().cloned())
            .collect()
    }

    /// After an unknown `kid`: refetch the route's remote key sets (rate-limited, single-flight).
    /// True when any of them has newer keys, so verification is worth trying again. The request
    /// waits at most `UNKNOWN_KID_WAIT`; a slower fetch goes on in the background and serves the
    /// requests after it.
    pub async fn refetch_for_unknown_kid(&self, route: &RouteAuthSpec) -> bool {
        let sets: Vec<Arc<jwks::RemoteJwks>> = route
            .methods
            .iter()
            .filter_map(|method| match method {
                AuthMethod::Jwt(index) => self.providers.get(*index)?.remote().cloned(),
                _ => None,
            })
            .collect();
        if sets.is_empty() {
            return false;
        }
        let fetch = tokio::spawn(async move {
            let mut refreshed = false;
            for set in sets {
                refreshed |= set.refetch_for_unknown_kid().await;
            }
            refreshed
        });
        matches!(
            tokio::time::timeout(UNKNOWN_KID_WAIT, fetch).await,
            Ok(Ok(true))
        )
    }

    /// The provider with this index.
    pub fn provider(&self, index: usize) -> Option<&JwtVerifier> {
        self.providers.get(index)
    }

    /// Authenticates by any of the route's methods, then checks roles and scopes.
    pub fn check(
        &self,
        route: &RouteAuthSpec,
        request: &RequestHeader,
    ) -> Result<Authenticated, Failure> {
        let mut worst = Failure::Missing;
        for method in &route.methods {
            let attempt = match *method {
                AuthMethod::Jwt(index) => self.try_jwt(index, request),
                AuthMethod::ApiKey => self.try_api_key(request),
            };
            match attempt {
                Ok(authenticated) => {
                    authorize(route, &authenticated.identity)?;
                    return Ok(authenticated);
                }
                Err(failure) if failure.weight() > worst.weight() => worst = failure,
                Err(_) => {}
            }
        }
        Err(worst)
    }

    fn try_jwt(&self, index: usize, request: &RequestHeader) -> Result<Authenticated, Failure> {
        let provider = self.providers.get(index).ok_or(Failure::Missing)?;
        let (token, source) =
            find_token(&provider.spec.token_from, request).ok_or(Failure::Missing)?;
        let (identity, from_cache) = provider.verify_noting_cache(token)?;
        Ok(Authenticated {
            identity,
            provider: Some(index),
            source: Some(source.clone()),
            from_cache,
        })
    }

    fn try_api_key(&self, request: &RequestHeader) -> Result<Authenticated, Failure> {
        let keys = self.api_keys.as_ref().ok_or(Failure::Missing)?;
        let presented = request.headers.get(&keys.header).ok_or(Failure::Missing)?;
        let identity = keys
            .identify(presented.as_bytes())
            .ok_or(Failure::UnknownApiKey)?;
        Ok(Authenticated {
            identity,
            provider: None,
            source: None,
            from_cache: false,
        })
    }
}

fn authorize(route: &RouteAuthSpec, identity: &Identity) -> Result<(), Failure> {
    if !route
        .require_roles
        .iter()
        .all(|role| identity.roles.contains(role))
    {
        return Err(Failure::Forbidden("a required role is missing"));
    }
    if !route
        .require_scopes
        .iter()
        .all(|scope| identity.scopes.contains(scope))
    {
        return Err(Failure::Forbidden("a required scope is missing"));
    }
    Ok(())
}

/// The first token found in `sources`, in order.
pub fn find_token<'a, 's>(
    sources: &'s [TokenSource],
    request: &'a RequestHeader,
) -> Option<(&'a str, &'s TokenSource)> {
    sources.iter().find_map(|source| {
        let token = match source {
            TokenSource::Header(name) => request.headers.get_all(name).iter().find_map(|value| {
                // Checked a word at a time (`to_str` goes byte by byte); a token that is not
                // ASCII fails verification like any other bad token.
                let value = std::str::from_utf8(value.as_bytes()).ok()?.trim();
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            }),
            TokenSource::Cookie(name) => cookie(request, name),
            TokenSource::Query(name) => request.uri.query().and_then(|query| {
                query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key == name).then_some(value)
                })
            }),
        }?;
        (!token.is_empty()).then_some((token, source))
    })
}

/// The value of the cookie `name` (the first, over every `Cookie` line).
pub fn cookie<'a>(request: &'a RequestHeader, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Removes the token from where it was found (`strip_token`).
pub fn strip_token(
    request: &mut http::request::Parts,
    source: &TokenSource,
) -> pingora_error::Result<()> {
    match source {
        TokenSource::Header(name) => {
            request.headers.remove(name);
        }
        TokenSource::Cookie(cookie) => {
            let kept: Vec<String> = request
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(key, _)| key != cookie))
                .map(str::to_string)
                .collect();
            request.headers.remove(http::header::COOKIE);
            if !kept.is_empty() {
                let value = http::HeaderValue::from_str(&kept.join("; ")).map_err(|e| {
                    pingora_error::Error::because(
                        pingora_error::ErrorType::InvalidHTTPHeader,
                        "strip_token",
                        e,
                    )
                })?;
                request.headers.insert(http::header::COOKIE, value);
            }
        }
        TokenSource::Query(parameter) => {
            let Some(query) = request.uri.query() else {
                return Ok(());
            };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != parameter)
                .collect();
            let mut target = request.uri.path().to_string();
            if !kept.is_empty() {
                target.push('?');
                target.push_str(&kept.join("&"));
            }
            request.uri = http::Uri::try_from(target).map_err(|e| {
                pingora_error::Error::because(
                    pingora_error::ErrorType::InternalError,
                    "strip_token",
                    e,
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn tokens_are_found_in_order_of_sources() {
        let sources = vec![
            TokenSource::Header(http::header::AUTHORIZATION),
            TokenSource::Cookie("access_token".into()),
            TokenSource::Query("access_token".into()),
        ];
        let r = request(
            "/?a=1&access_token=q.q.q",
            &[("Cookie", "x=1; access_token=c.c.c")],
        );
        assert_eq!(find_token(&sources, &r).map(|(t, _)| t), Some("c.c.c"));
        let r = request("/?access_token=q.q.q", &[("Authorization", "bearer h.h.h")]);
        assert_eq!(
            find_token(&sources, &r).map(|(t, _)| t),
            Some("h.h.h"),
            "scheme is case-insensitive"
        );
        let r = request(
            "/?access_token=q.q.q",
            &[("Authorization", "Basic Zm9vOmJhcg==")],
        );
        assert_eq!(find_token(&sources, &r).map(|(t, _)| t), Some("q.q.q"));
        assert!(find_token(&sources, &request("/", &[])).is_none());
    }

    #[test]
    fn stripping_removes_only_the_token() {
        let mut r = request("/p?a=1&access_token=t&b=2", &[]).as_owned_parts();
        strip_token(&mut r, &TokenSource::Query("access_token".into())).unwrap();
        assert_eq!(r.uri.to_string(), "/p?a=1&b=2");
        let mut r = request("/", &[("Cookie", "x=1; access_token=t; y=2")]).as_owned_parts();
        strip_token(&mut r, &TokenSource::Cookie("access_token".into())).unwrap();
        assert_eq!(r.headers.get("cookie").unwrap(), "x=1; y=2");
    }

    #[test]
    fn roles_and_scopes_must_all_be_present() {
        let route = RouteAuthSpec {
            methods: vec![],
            require_roles: vec!["admin".into()],
            require_scopes: vec!["read:users".into()],
        };
        let mut identity = Identity {
            roles: vec!["admin".into()],
            scopes: vec!["read:users".into(), "write:users".into()],
            ..Identity::default()
        };
        assert_eq!(authorize(&route, &identity), Ok(()));
        identity.roles.clear();
        assert_eq!(
            authorize(&route, &identity).map_err(Failure::status),
            Err(403)
        );
    }
}
