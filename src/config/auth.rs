//! Validation of `auth` and of route `auth`: key material is read and checked against the
//! provider's algorithms at load, so a token can never be verified with the wrong kind of key.

use super::check::{Checker, Names};
use super::model::*;
use super::raw::*;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use std::str::FromStr;
use std::time::Duration;

/// Validates the top-level `auth` section.
pub(super) fn auth_spec(check: &mut Checker, raw: Option<RawAuth>) -> AuthSpec {
    let Some(RawAuth { jwt, api_keys }) = raw else {
        return AuthSpec::default();
    };
    let mut spec = AuthSpec::default();
    for (name, provider) in jwt.map(|j| j.providers).unwrap_or_default() {
        if let Some(provider) = jwt_provider(check, &name, provider) {
            spec.jwt_providers.push(provider);
        }
    }
    spec.api_keys = api_keys.map(|raw| api_keys_spec(check, raw));
    spec
}

fn jwt_provider(check: &mut Checker, name: &str, raw: RawJwtProvider) -> Option<JwtProviderSpec> {
    let key = format!("auth.jwt.providers.{name}");
    let RawJwtProvider {
        issuer,
        audiences,
        algorithms,
        jwks_url,
        jwks_file,
        public_key_file,
        secret_file,
        secret_env,
        jwks_refresh,
        clock_skew,
        require_claims,
        token_from,
        forward_claims,
        tier_claim,
        strip_token,
    } = raw;
    let before = check.problem_count();
    if jwks_refresh.is_some() && jwks_url.is_none() {
        check.fail(format!("{key}.jwks_refresh"), "only applies to jwks_url");
    }
    let sources = KeySources {
        jwks_url,
        jwks_refresh,
        jwks_file,
        public_key_file,
        secret_file,
        secret_env,
    };
    let keys = sources.load(check, &key);
    let algorithms = algorithm_list(check, &key, &algorithms);
    if let (Some(keys), false) = (&keys, algorithms.is_empty()) {
        check_key_fits_algorithms(check, &key, keys, &algorithms);
    }
    let clock_skew = check.duration(
        format!("{key}.clock_skew"),
        clock_skew.as_deref(),
        Duration::from_secs(30),
    );
    let token_from = token_sources(check, &key, token_from);
    let mut forwarded = Vec::new();
    for (claim, header) in forward_claims.unwrap_or_default() {
        if let Some(name) = check.header_name(format!("{key}.forward_claims.{claim}"), &header) {
            forwarded.push((claim, name));
        }
    }
    if check.refused_since(before, &key) {
        return None;
    }
    Some(JwtProviderSpec {
        name: name.to_string(),
        issuer,
        audiences: audiences.unwrap_or_default(),
        algorithms,
        keys: keys?,
        clock_skew,
        require_claims: require_claims.unwrap_or_else(|| vec!["exp".into()]),
        token_from,
        forward_claims: forwarded,
        tier_claim: tier_claim.unwrap_or_else(|| "plan".into()),
        strip_token: strip_token.unwrap_or(false),
    })
}

/// Where a provider's keys come from: exactly one of these may be given.
struct KeySources {
    jwks_url: Option<String>,
    jwks_refresh: Option<String>,
    jwks_file: Option<String>,
    public_key_file: Option<String>,
    secret_file: Option<String>,
    secret_env: Option<String>,
}

impl KeySources {
    /// Reads the one source given (a remote key set is only parsed as a URL here).
    fn load(&self, check: &mut Checker, key: &str) -> Option<KeyMaterial> {
        let given = [
            self.jwks_url.is_some(),
            self.jwks_file.is_some(),
            self.public_key_file.is_some(),
            self.secret_file.is_some(),
            self.secret_env.is_some(),
        ];
        if given.iter().filter(|&&s| s).count() != 1 {
            check.fail(
                key.to_string(),
                "needs exactly one key source: jwks_url, jwks_file, public_key_file, secret_file or secret_env",
            );
        }
        let keys = if let Some(url) = &self.jwks_url {
            jwks_url_source(check, key, url, self.jwks_refresh.as_deref())
        } else if let Some(path) = &self.secret_file {
            read_file(check, &format!("{key}.secret_file"), path)
                .map(|bytes| KeyMaterial::Secret(trim_newline(bytes)))
        } else if let Some(variable) = &self.secret_env {
            match std::env::var(variable) {
                Ok(value) if !value.is_empty() => Some(KeyMaterial::Secret(value.into_bytes())),
                _ => {
                    check.fail(
                        format!("{key}.secret_env"),
                        format!("environment variable {variable} is not set"),
                    );
                    None
                }
            }
        } else if let Some(path) = &self.public_key_file {
            read_file(check, &format!("{key}.public_key_file"), path).map(KeyMaterial::PublicKeyPem)
        } else if let Some(path) = &self.jwks_file {
            let field = format!("{key}.jwks_file");
            read_file(check, &field, path).and_then(|bytes| match String::from_utf8(bytes) {
                Ok(text) => Some(KeyMaterial::Jwks(text)),
                Err(_) => {
                    check.fail(field, "is not UTF-8 JSON");
                    None
                }
            })
        } else {
            None
        };
        if let Some(KeyMaterial::Secret(secret)) = &keys {
            if secret.len() < 32 {
                check.fail(
                    key.to_string(),
                    format!("the HMAC secret is {} bytes; use at least 32", secret.len()),
                );
            }
        }
        keys
    }
}

/// The algorithms to accept; `none` never.
fn algorithm_list(check: &mut Checker, key: &str, names: &[String]) -> Vec<Algorithm> {
    let mut parsed = Vec::with_capacity(names.len());
    if names.is_empty() {
        check.fail(
            format!("{key}.algorithms"),
            "list the algorithms to accept, e.g. [RS256]",
        );
    }
    for (index, name) in names.iter().enumerate() {
        let field = format!("{key}.algorithms[{index}]");
        if name.eq_ignore_ascii_case("none") {
            check.fail(
                field,
                "`none` is never accepted: unsigned tokens prove nothing",
            );
            continue;
        }
        match Algorithm::from_str(name) {
            Ok(algorithm) => parsed.push(algorithm),
            Err(_) => check.fail(
                field,
                format!("`{name}` is not one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA"),
            ),
        }
    }
    parsed
}

fn jwks_url_source(
    check: &mut Checker,
    key: &str,
    url: &str,
    refresh: Option<&str>,
) -> Option<KeyMaterial> {
    let before = check.problem_count();
    let refresh = check.duration_at_least(
        format!("{key}.jwks_refresh"),
        refresh,
        Duration::from_secs(600),
        Duration::from_secs(1),
    );
    if check.problem_count() != before {
        return None;
    }
    match url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Some(KeyMaterial::JwksUrl { url: uri, refresh })
        }
        _ => {
            check.fail(
                format!("{key}.jwks_url"),
                format!("`{url}` is not an http:// or https:// URL"),
            );
            None
        }
    }
}

fn read_file(check: &mut Checker, key: &str, path: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            check.fail(key.to_string(), format!("cannot read {path}: {error}"));
            None
        }
    }
}

/// Secret files usually end with a newline that is not part of the secret.
fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    bytes
}

/// Decodes the keys with the request path's decoder (`auth::keys`): a source with no usable key is an
/// error, and so is an algorithm no key can verify (an HMAC secret never verifies RS256: no
/// algorithm confusion). Unusable keys of a JWK set are only warned about when the provider is
/// built.
fn check_key_fits_algorithms(
    check: &mut Checker,
    key: &str,
    keys: &KeyMaterial,
    algorithms: &[Algorithm],
) {
    use crate::auth::keys;
    let Some(decoded) = keys::from_material(keys, algorithms) else {
        // A remote set is unknown at load; it may only ever verify public-key algorithms.
        for (index, algorithm) in algorithms.iter().enumerate() {
            if algorithm.family() == AlgorithmFamily::Hmac {
                check.fail(
                    format!("{key}.algorithms[{index}]"),
                    format!("{algorithm:?} needs a shared secret, which a published key set never holds"),
                );
            }
        }
        return;
    };
    let at = match keys {
        KeyMaterial::PublicKeyPem(_) => format!("{key}.public_key_file"),
        KeyMaterial::Jwks(_) => format!("{key}.jwks_file"),
        _ => key.to_string(),
    };
    let decoded = match decoded.and_then(keys::Decoded::usable) {
        Ok(decoded) => decoded,
        Err(message) => {
            check.fail(at, message);
            return;
        }
    };
    let verifiable = decoded.keys.algorithms();
    for (index, algorithm) in algorithms.iter().enumerate() {
        if !verifiable.contains(algorithm) {
            check.fail(
                format!("{key}.algorithms[{index}]"),
                format!(
                    "{algorithm:?} cannot be verified with any of this provider's keys (they verify {verifiable:?})"
                ),
            );
        }
    }
}

fn token_sources(check: &mut Checker, key: &str, raw: Option<Vec<String>>) -> Vec<TokenSource> {
    let raw = raw.unwrap_or_else(|| vec!["header:Authorization".into()]);
    let mut sources = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let field = format!("{key}.token_from[{index}]");
        match text.split_once(':') {
            Some(("header", name)) => {
                if let Some(name) = check.header_name(field, name) {
                    sources.push(TokenSource::Header(name));
                }
            }
            Some(("cookie", name)) if !name.is_empty() => {
                sources.push(TokenSource::Cookie(name.into()))
            }
            Some(("query", name)) if !name.is_empty() => {
                sources.push(TokenSource::Query(name.into()))
            }
            _ => check.fail(
                field,
                format!("`{text}` is not one of header:NAME, cookie:NAME, query:NAME"),
            ),
        }
    }
    if sources.is_empty() && raw.is_empty() {
        check.fail(
            format!("{key}.token_from"),
            "list at least one place to find the token",
        );
    }
    sources
}

fn api_keys_spec(check: &mut Checker, raw: RawApiKeys) -> ApiKeysSpec {
    let RawApiKeys { header, keys } = raw;
    let header = header.unwrap_or_else(|| "X-API-Key".into());
    let header = check
        .header_name("auth.api_keys.header".into(), &header)
        .unwrap_or(http::HeaderName::from_static("x-api-key"));
    let mut specs = Vec::with_capacity(keys.len());
    for (
        index,
        RawApiKey {
            consumer,
            sha256,
            tier,
        },
    ) in keys.into_iter().enumerate()
    {
        let field = format!("auth.api_keys.keys[{index}]");
        match parse_sha256(&sha256) {
            Some(digest) => {
                if specs.iter().any(|k: &ApiKeySpec| k.sha256 == digest) {
                    check.fail(format!("{field}.sha256"), "the same key is listed twice");
                }
                specs.push(ApiKeySpec {
                    consumer,
                    sha256: digest,
                    tier,
                });
            }
            None => check.fail(
                format!("{field}.sha256"),
                "must be 64 hex digits (`edgegate hash-key KEY` prints them)",
            ),
        }
    }
    ApiKeysSpec {
        header,
        keys: specs,
    }
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// Validates a route's `auth`.
pub(super) fn route_auth(
    check: &mut Checker,
    key: &str,
    raw: Option<RawRouteAuth>,
    auth: &AuthSpec,
) -> Option<RouteAuthSpec> {
    let RawRouteAuth {
        jwt,
        api_key,
        any_of,
        require_roles,
        require_scopes,
    } = raw?;
    let providers =
        Names::of(&auth.jwt_providers, |p| p.name.as_str()).of_section("auth.jwt.providers");
    let listed_nothing =
        jwt.is_none() && api_key != Some(true) && any_of.iter().flatten().next().is_none();
    let mut methods = Vec::new();
    let jwt_method = |check: &mut Checker, field: String, name: &str| {
        check
            .resolve(field, &providers, name, |_| {
                format!("no JWT provider named `{name}` under auth.jwt.providers")
            })
            .map(AuthMethod::Jwt)
    };
    if let Some(name) = &jwt {
        methods.extend(jwt_method(check, format!("{key}.jwt"), name));
    }
    if api_key == Some(true) {
        methods.push(AuthMethod::ApiKey);
    }
    for (index, entry) in any_of.iter().flatten().enumerate() {
        let field = format!("{key}.any_of[{index}]");
        match entry.split_once(':') {
            Some(("jwt", name)) => methods.extend(jwt_method(check, field, name)),
            None if entry == "api_key" => methods.push(AuthMethod::ApiKey),
            _ => check.fail(field, format!("`{entry}` is not jwt:PROVIDER or api_key")),
        }
    }
    if methods.contains(&AuthMethod::ApiKey) && auth.api_keys.is_none() {
        check.fail(
            key.to_string(),
            "uses API keys but auth.api_keys is not configured",
        );
    }
    if methods.is_empty() {
        // A method that was named but refused is reported where it was named.
        if listed_nothing {
            check.fail(
                key.to_string(),
                "needs `jwt: PROVIDER`, `api_key: true` or `any_of`",
            );
        }
        return None;
    }
    let jwt_only = methods.iter().all(|m| matches!(m, AuthMethod::Jwt(_)));
    if (!require_roles.is_empty() || !require_scopes.is_empty()) && !jwt_only {
        check.fail(
            key.to_string(),
            "require_roles / require_scopes come from JWT claims; API-key requests could never have them",
        );
    }
    Some(RouteAuthSpec {
        methods,
        require_roles,
        require_scopes,
    })
}
