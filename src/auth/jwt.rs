//! JWT verification for one provider, as strict as PyJWT and jwcrypto: the token's header is
//! read here (a `crit` parameter is refused, RFC 7515 §4.1.11), its `alg` must be in the
//! provider's list and fit the chosen key, and the signature is checked with that one algorithm
//! (`jsonwebtoken::crypto::verify`). The claims are checked here too: `exp`/`nbf`/`iat` must be
//! numbers and hold with `clock_skew`, `iss` must be present and equal, `aud` present and (one of)
//! the audiences. Verified tokens are cached until `exp + clock_skew`, the same bound as uncached.

use super::cache::TokenCache;
use super::jwks::RemoteJwks;
use super::keys::{self, KeySet, Lookup};
use super::{Failure, Identity};
use crate::config::{JwtProviderSpec, KeyMaterial};
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest token accepted; anything larger is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

enum Keys {
    Static(KeySet),
    /// A JWKS fetched from a URL in the background.
    Remote(Arc<RemoteJwks>),
}

/// A provider ready to verify tokens.
pub struct JwtVerifier {
    pub spec: JwtProviderSpec,
    keys: Keys,
    cache: TokenCache,
    /// The remote key-set generation the cache was filled under.
    cache_generation: std::sync::atomic::AtomicU64,
}

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
#[error("JWT provider `{provider}`: {message}")]
pub struct BuildError {
    provider: String,
    message: String,
}

/// Decodes a provider's static key material with the rule of [`keys`]: unusable keys are
/// logged and counted, none usable is an error.
pub fn static_keys(spec: &JwtProviderSpec) -> Result<Option<KeySet>, String> {
    let Some(decoded) = keys::from_material(&spec.keys, &spec.algorithms) else {
        return Ok(None);
    };
    let decoded = decoded?;
    report_skipped(&spec.name, &decoded.skipped);
    decoded.usable().map(|decoded| Some(decoded.keys))
}

/// For `edgegate check`: how many keys of the provider's source are usable, and why others are
/// skipped (nothing is logged or counted).
pub fn describe_keys(spec: &JwtProviderSpec) -> Result<String, String> {
    let Some(decoded) = keys::from_material(&spec.keys, &spec.algorithms) else {
        if let KeyMaterial::JwksUrl { url, refresh } = &spec.keys {
            return Ok(format!("keys fetched from {url} every {refresh:?}"));
        }
        return Ok(String::new());
    };
    let decoded = decoded?;
    let mut description = format!("{} usable key(s)", decoded.keys.len());
    for why in &decoded.skipped {
        description.push_str(&format!("; skipped {why}"));
    }
    Ok(description)
}

/// Logs and counts the keys a provider could not use.
pub fn report_skipped(provider: &str, skipped: &[String]) {
    for why in skipped {
        log::warn!("JWT provider {provider}: skipping a key that cannot be used: {why}");
    }
    if !skipped.is_empty() {
        crate::observability::metrics::jwt_keys_skipped(provider, skipped.len());
    }
}

impl JwtVerifier {
    /// Parses the provider's keys.
    pub fn new(spec: &JwtProviderSpec) -> Result<Self, BuildError> {
        crate::observability::metrics::jwt_keys_skipped(&spec.name, 0);
        let keys = match &spec.keys {
            KeyMaterial::JwksUrl { url, refresh } => Keys::Remote(Arc::new(RemoteJwks::new(
                &spec.name,
                url.clone(),
                *refresh,
                spec.algorithms.clone(),
            ))),
            _ => match static_keys(spec) {
                Ok(Some(set)) => Keys::Static(set),
                Ok(None) => Keys::Static(KeySet::default()),
                Err(message) => {
                    return Err(BuildError {
                        provider: spec.name.clone(),
                        message,
                    })
                }
            },
        };
        Ok(JwtVerifier {
            spec: spec.clone(),
            keys,
            cache: TokenCache::new(),
            cache_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Verifies `token` (from the cache when it was verified before and has not expired).
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, Failure> {
        self.verify_noting_cache(token)
            .map(|(identity, _)| identity)
    }

    /// [`JwtVerifier::verify`], also saying whether the identity came from the cache.
    pub fn verify_noting_cache(&self, token: &str) -> Result<(Arc<Identity>, bool), Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Malformed("the token is larger than 16 KiB"));
        }
        let now = unix_now();
        if let Keys::Remote(remote) = &self.keys {
            // A reloaded key set may have dropped a key: tokens it verified must be checked again.
            use std::sync::atomic::Ordering::Relaxed;
            let generation = remote.generation();
            if self.cache_generation.swap(generation, Relaxed) != generation {
                self.cache.clear();
            }
        }
        if let Some(identity) = self.cache.get(token, now) {
            return Ok((identity, true));
        }
        let identity = self.verify_uncached(token)?;
        if let Some(valid_until) = identity.valid_until {
            self.cache.insert(token, valid_until, &identity);
        }
        Ok((identity, false))
    }

    /// Full verification (header, signature, claims), bypassing the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<Arc<Identity>, Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Malformed("the token is larger than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Failure::Malformed("the token is not a JWT"));
        };
        let header = decode_json(header)
            .ok_or(Failure::Malformed("the token header is not base64url JSON"))?;
        if header.contains_key("crit") {
            return Err(Failure::Malformed(
                "the token has critical header parameters (crit) this gateway does not understand",
            ));
        }
        let algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|name| Algorithm::from_str(name).ok())
            .filter(|algorithm| self.spec.algorithms.contains(algorithm))
            .ok_or(Failure::BadSignature)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(Failure::Malformed("the token's kid is not a string")),
        };
        let remote_keys;
        let set = match &self.keys {
            Keys::Static(set) => set,
            Keys::Remote(remote) => {
                remote_keys = remote.keys().ok_or(Failure::KeysUnavailable)?;
                &remote_keys
            }
        };
        let candidates = set
            .candidates(kid, algorithm)
            .map_err(|lookup| match lookup {
                Lookup::UnknownKid => Failure::UnknownKid,
                Lookup::AlgorithmMismatch => Failure::BadSignature,
            })?;
        let message = &token[..header_and_payload_len(token)];
        if !candidates
            .iter()
            .any(|key| signature_holds(signature, message, key, algorithm))
        {
            return Err(Failure::BadSignature);
        }
        let claims = decode_json(payload).ok_or(Failure::Malformed(
            "the token claims are not base64url JSON",
        ))?;
        let valid_until = self.check_claims(&claims, unix_now())?;
        Ok(Arc::new(self.identity(claims, valid_until)))
    }

    /// The registered claims; returns until when (inclusive, whole seconds) the token is valid.
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<Option<u64>, Failure> {
        let skew = self.spec.clock_skew.as_secs_f64();
        let now = now as f64;
        let exp = numeric_date(claims, "exp", "the exp claim is not a number")?;
        let nbf = numeric_date(claims, "nbf", "the nbf claim is not a number")?;
        let iat = numeric_date(claims, "iat", "the iat claim is not a number")?;
        for claim in &self.spec.require_claims {
            if !claims.contains_key(claim) {
                return Err(Failure::Malformed("a required claim is missing"));
            }
        }
        if exp.is_some_and(|exp| now >= exp + skew) {
            return Err(Failure::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now + skew) {
            return Err(Failure::NotYetValid("the token is not valid yet (nbf)"));
        }
        if iat.is_some_and(|iat| iat > now + skew) {
            return Err(Failure::NotYetValid(
                "the token was issued in the future (iat)",
            ));
        }
        for (claim, message) in [
            ("sub", "the sub claim is not a string"),
            ("jti", "the jti claim is not a string"),
        ] {
            if claims.get(claim).is_some_and(|v| !v.is_string()) {
                return Err(Failure::Malformed(message));
            }
        }
        if let Some(issuer) = &self.spec.issuer {
            match claims.get("iss") {
                None => return Err(Failure::WrongIssuer("the token has no iss claim")),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(Value::String(_)) => {
                    return Err(Failure::WrongIssuer(
                        "the token was issued by an untrusted issuer",
                    ))
                }
                Some(_) => return Err(Failure::WrongIssuer("the iss claim is not a string")),
            }
        }
        if !self.spec.audiences.is_empty() {
            self.check_audience(claims.get("aud"))?;
        }
        // Valid while now < exp + skew, so through the last whole second before it.
        Ok(exp.map(|exp| ((exp + skew).ceil() as u64).saturating_sub(1)))
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), Failure> {
        let wanted = |candidate: &str| self.spec.audiences.iter().any(|a| a == candidate);
        let matches = match aud {
            None => return Err(Failure::WrongAudience("the token has no aud claim")),
            Some(Value::String(aud)) => wanted(aud),
            Some(Value::Array(items)) => {
                if !items.iter().all(Value::is_string) {
                    return Err(Failure::WrongAudience(
                        "the aud claim is not a string or an array of strings",
                    ));
                }
                items.iter().filter_map(Value::as_str).any(wanted)
            }
            Some(_) => {
                return Err(Failure::WrongAudience(
                    "the aud claim is not a string or an array of strings",
                ))
            }
        };
        if matches {
            Ok(())
        } else {
            Err(Failure::WrongAudience(
                "the token is not meant for this audience",
            ))
        }
    }

    fn identity(&self, claims: Map<String, Value>, valid_until: Option<u64>) -> Identity {
        let forwarded: Vec<(HeaderName, HeaderValue)> = self
            .spec
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let value = claim_text(claims.get(claim)?)?;
                Some((header.clone(), HeaderValue::from_str(&value).ok()?))
            })
            .collect();
        Identity {
            consumer: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            tier: claims.get(&self.spec.tier_claim).and_then(claim_text),
            roles: string_list(claims.get("roles")),
            scopes: match claims.get("scope") {
                Some(Value::String(scopes)) => {
                    scopes.split_whitespace().map(str::to_string).collect()
                }
                _ => string_list(claims.get("scp")),
            },
            forwarded,
            valid_until,
            claims,
        }
    }

    /// The remote key set, when this provider fetches one.
    pub fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        match &self.keys {
            Keys::Remote(remote) => Some(remote),
            Keys::Static(_) => None,
        }
    }
}

/// Length of `header.payload` (the signed part) in a token known to have two dots.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn signature_holds(
    signature: &str,
    message: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
) -> bool {
    jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, algorithm).unwrap_or(false)
}

/// A base64url (unpadded) JSON object.
fn decode_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A NumericDate claim (RFC 7519 §2): absent, or a JSON number; anything else is refused.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
    not_a_number: &'static str,
) -> Result<Option<f64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => number
            .as_f64()
            .filter(|value| value.is_finite())
            .map(Some)
            .ok_or(Failure::Malformed(not_a_number)),
        Some(_) => Err(Failure::Malformed(not_a_number)),
    }
}

/// A claim as header text: strings as is, arrays joined with commas, other values as JSON.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(claim_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `["a","b"]` or `"a b"` / `"a,b"` as a list.
fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(text)) => text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSource;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(issuer: Option<&str>, audiences: &[&str]) -> JwtVerifier {
        JwtVerifier::new(&JwtProviderSpec {
            name: "t".into(),
            issuer: issuer.map(str::to_string),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            algorithms: vec![Algorithm::HS256],
            keys: KeyMaterial::Secret(SECRET.to_vec()),
            clock_skew: Duration::from_secs(10),
            require_claims: vec![],
            token_from: vec![TokenSource::Header(http::header::AUTHORIZATION)],
            forward_claims: vec![],
            tier_claim: "plan".into(),
            strip_token: false,
        })
        .unwrap()
    }

    fn claims(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn numeric_dates_hold_with_the_skew_and_must_be_numbers() {
        let v = verifier(None, &[]);
        let now = 1_000_000;
        let check = |c: serde_json::Value| v.check_claims(&claims(c), now);
        assert_eq!(
            check(serde_json::json!({"exp": now + 5})),
            Ok(Some(now + 14))
        );
        assert_eq!(check(serde_json::json!({"exp": now - 9})), Ok(Some(now)));
        assert_eq!(
            check(serde_json::json!({"exp": now - 10})),
            Err(Failure::Expired)
        );
        assert_eq!(
            check(serde_json::json!({"exp": now as f64 - 9.5})),
            Ok(Some(now))
        );
        assert!(matches!(
            check(serde_json::json!({"exp": "9999999999"})),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            check(serde_json::json!({"iat": (now + 11) as f64})),
            Err(Failure::NotYetValid(_))
        ));
        assert!(matches!(
            check(serde_json::json!({"iat": "1"})),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            check(serde_json::json!({"nbf": now + 11})),
            Err(Failure::NotYetValid(_))
        ));
        assert_eq!(
            check(serde_json::json!({"nbf": now + 10, "iat": now + 10})),
            Ok(None)
        );
        assert!(matches!(
            check(serde_json::json!({"nbf": null})),
            Err(Failure::Malformed(_))
        ));
    }

    #[test]
    fn issuer_and_audience_must_be_present_and_well_typed() {
        let v = verifier(Some("https://issuer/"), &["api"]);
        let check = |c: serde_json::Value| v.check_claims(&claims(c), 0);
        assert_eq!(
            check(serde_json::json!({"iss": "https://issuer/", "aud": "api"})),
            Ok(None)
        );
        assert_eq!(
            check(serde_json::json!({"iss": "https://issuer/", "aud": ["x", "api"]})),
            Ok(None)
        );
        for bad in [
            serde_json::json!({"aud": "api"}),
            serde_json::json!({"iss": ["https://issuer/"], "aud": "api"}),
            serde_json::json!({"iss": 7, "aud": "api"}),
            serde_json::json!({"iss": "https://other/", "aud": "api"}),
        ] {
            assert!(
                matches!(check(bad.clone()), Err(Failure::WrongIssuer(_))),
                "{bad}"
            );
        }
        for bad in [
            serde_json::json!({"iss": "https://issuer/"}),
            serde_json::json!({"iss": "https://issuer/", "aud": 7}),
            serde_json::json!({"iss": "https://issuer/", "aud": {"api": true}}),
            serde_json::json!({"iss": "https://issuer/", "aud": ["api", 1]}),
            serde_json::json!({"iss": "https://issuer/", "aud": "other"}),
        ] {
            assert!(
                matches!(check(bad.clone()), Err(Failure::WrongAudience(_))),
                "{bad}"
            );
        }
    }

    mod fuzz {
        use super::*;
        use base64::Engine;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                prop::sample::select(vec!["HS256", "none", "RS256", "hs256", "", "a", "k1"])
                    .prop_map(Value::from),
                ".{0,10}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec(
                        (
                            prop::sample::select(vec![
                                "alg", "kid", "typ", "crit", "exp", "nbf", "iat", "iss", "aud",
                                "sub", "jti", "plan", "roles", "scope", "x",
                            ]),
                            inner
                        ),
                        0..6
                    )
                    .prop_map(|pairs| Value::Object(
                        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )),
                ]
            })
        }

        fn b64(value: &Value) -> String {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        }

        proptest! {
            #[test]
            fn fuzz_jwt_random_text_never_panics(token in "[A-Za-z0-9_.=+/-]{0,200}") {
                let _ = verifier(Some("iss"), &["aud"]).verify_uncached(&token);
            }

            #[test]
            fn fuzz_jwt_random_headers_and_claims_never_panic(
                header in json(),
                claims in json(),
                alg_hs256 in any::<bool>(),
                sign in any::<bool>(),
            ) {
                let mut header = header;
                if alg_hs256 {
                    if let Value::Object(map) = &mut header {
                        map.insert("alg".into(), Value::from("HS256"));
                    }
                }
                let message = format!("{}.{}", b64(&header), b64(&claims));
                let signature = if sign {
                    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
                    jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap()
                } else {
                    "c2lnbmF0dXJl".to_string()
                };
                let token = format!("{message}.{signature}");
                for v in [verifier(None, &[]), verifier(Some("iss"), &["aud"])] {
                    if let Ok(identity) = v.verify_uncached(&token) {
                        prop_assert!(sign, "an unsigned token was accepted");
                        let sub = claims.get("sub").and_then(Value::as_str).map(str::to_string);
                        prop_assert_eq!(&identity.consumer, &sub);
                    }
                }
            }
        }
    }
}
