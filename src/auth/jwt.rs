//! JWT verification for one provider: the token's `alg` must be one the provider lists and fit
//! its key; `exp`/`nbf`/`iat` are checked with `clock_skew`, `iss`/`aud` when configured.
//! Verified tokens are cached until their `exp`, so hot clients skip signature checks.

use super::cache::TokenCache;
use super::jwks::RemoteJwks;
use super::{Failure, Identity};
use crate::config::{JwtProviderSpec, KeyMaterial};
use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest token accepted; anything larger is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

enum Keys {
    One(DecodingKey),
    /// JWKS: by `kid`; a token without `kid` is tried against the only key when there is one.
    ByKid(HashMap<String, DecodingKey>),
    /// A JWKS fetched from a URL in the background.
    Remote(Arc<RemoteJwks>),
}

/// A provider ready to verify tokens.
pub struct JwtVerifier {
    pub spec: JwtProviderSpec,
    keys: Keys,
    validation: Validation,
    cache: TokenCache,
    /// The remote key-set generation the cache was filled under.
    cache_generation: std::sync::atomic::AtomicU64,
}

/// Why a provider could not be built (validation already checked the keys, so this is rare).
#[derive(Debug, thiserror::Error)]
#[error("JWT provider `{provider}`: {message}")]
pub struct BuildError {
    provider: String,
    message: String,
}

impl JwtVerifier {
    /// Parses the provider's keys and prepares its validation rules.
    pub fn new(spec: &JwtProviderSpec) -> Result<Self, BuildError> {
        let error = |message: String| BuildError {
            provider: spec.name.clone(),
            message,
        };
        let keys = match &spec.keys {
            KeyMaterial::Secret(secret) => Keys::One(DecodingKey::from_secret(secret)),
            KeyMaterial::PublicKeyPem(pem) => Keys::One(
                DecodingKey::from_rsa_pem(pem)
                    .or_else(|_| DecodingKey::from_ec_pem(pem))
                    .or_else(|_| DecodingKey::from_ed_pem(pem))
                    .map_err(|e| error(format!("public key: {e}")))?,
            ),
            KeyMaterial::Jwks(json) => {
                let set: JwkSet =
                    serde_json::from_str(json).map_err(|e| error(format!("JWKS: {e}")))?;
                let mut by_kid = HashMap::new();
                for (index, jwk) in set.keys.iter().enumerate() {
                    let key =
                        DecodingKey::from_jwk(jwk).map_err(|e| error(format!("JWKS key: {e}")))?;
                    let kid = jwk
                        .common
                        .key_id
                        .clone()
                        .unwrap_or_else(|| format!("#{index}"));
                    by_kid.insert(kid, key);
                }
                Keys::ByKid(by_kid)
            }
            KeyMaterial::JwksUrl { url, refresh } => {
                Keys::Remote(Arc::new(RemoteJwks::new(&spec.name, url.clone(), *refresh)))
            }
        };
        let mut validation = Validation::new(spec.algorithms.first().copied().unwrap_or_default());
        validation.algorithms = spec.algorithms.clone();
        validation.leeway = spec.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.required_spec_claims = spec
            .require_claims
            .iter()
            .filter(|c| matches!(c.as_str(), "exp" | "nbf" | "aud" | "iss" | "sub"))
            .cloned()
            .collect();
        validation.validate_aud = !spec.audiences.is_empty();
        if !spec.audiences.is_empty() {
            validation.set_audience(&spec.audiences);
        }
        if let Some(issuer) = &spec.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(JwtVerifier {
            spec: spec.clone(),
            keys,
            validation,
            cache: TokenCache::new(),
            cache_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Verifies `token` (from the cache when it was verified before and has not expired).
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Malformed("the token is larger than 16 KiB"));
        }
        let now = unix_now();
        let skew = self.spec.clock_skew.as_secs();
        if let Keys::Remote(remote) = &self.keys {
            // A reloaded key set may have dropped a key: tokens it verified must be checked again.
            use std::sync::atomic::Ordering::Relaxed;
            let generation = remote.generation();
            if self.cache_generation.swap(generation, Relaxed) != generation {
                self.cache.clear();
            }
        }
        if let Some(identity) = self.cache.get(token, now.saturating_sub(skew)) {
            return Ok(identity);
        }
        let identity = self.verify_uncached(token)?;
        if let Some(exp) = identity.expires {
            self.cache
                .insert(token, exp.saturating_add(skew), &identity);
        }
        Ok(identity)
    }

    /// Full verification (signature and claims), bypassing the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<Arc<Identity>, Failure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Malformed("the token is larger than 16 KiB"));
        }
        let now = unix_now();
        let skew = self.spec.clock_skew.as_secs();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Failure::Malformed("the token is not a JWT"))?;
        let remote_keys;
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::ByKid(keys) => by_kid(keys, header.kid.as_deref())?,
            Keys::Remote(remote) => {
                remote_keys = remote.keys().ok_or(Failure::KeysUnavailable)?;
                by_kid(&remote_keys, header.kid.as_deref())?
            }
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(classify)?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64) {
            if iat > now + skew {
                return Err(Failure::NotYetValid);
            }
        }
        for claim in &self.spec.require_claims {
            if !claims.contains_key(claim) {
                return Err(Failure::Malformed("a required claim is missing"));
            }
        }
        Ok(Arc::new(self.identity(claims)))
    }

    fn identity(&self, claims: Map<String, Value>) -> Identity {
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
            expires: claims.get("exp").and_then(Value::as_u64),
            claims,
        }
    }
}

impl JwtVerifier {
    /// The remote key set, when this provider fetches one.
    pub fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        match &self.keys {
            Keys::Remote(remote) => Some(remote),
            _ => None,
        }
    }
}

fn by_kid<'k>(
    keys: &'k HashMap<String, DecodingKey>,
    kid: Option<&str>,
) -> Result<&'k DecodingKey, Failure> {
    match kid {
        Some(kid) => keys.get(kid).ok_or(Failure::UnknownKid),
        None if keys.len() == 1 => keys.values().next().ok_or(Failure::UnknownKid),
        None => Err(Failure::UnknownKid),
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

fn classify(error: jsonwebtoken::errors::Error) -> Failure {
    match error.kind() {
        ErrorKind::InvalidSignature => Failure::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => Failure::BadSignature,
        ErrorKind::ExpiredSignature => Failure::Expired,
        ErrorKind::ImmatureSignature => Failure::NotYetValid,
        ErrorKind::InvalidIssuer => Failure::WrongIssuer,
        ErrorKind::InvalidAudience => Failure::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => Failure::Malformed("a required claim is missing"),
        _ => Failure::Malformed("the token could not be decoded"),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
