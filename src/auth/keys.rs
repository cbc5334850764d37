//! One decoder for every key source of a JWT provider (a shared secret, a PEM public key, a JWK
//! set from a file or a URL) and one rule for all of them: a key this provider cannot use is
//! skipped with a reason (logged and counted by the caller), and a source with no usable key is
//! an error. Each key carries the algorithms it may verify: its type and curve, narrowed by the
//! JWK's own `alg`, intersected with the provider's list.

use crate::config::KeyMaterial;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;

/// A key and the algorithms it verifies.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The usable keys of one source.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<String, usize>,
}

/// Why no key could be chosen for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The token's `kid` is not in the set.
    UnknownKid,
    /// The named key (or, without `kid`, every key) cannot verify the token's `alg`.
    AlgorithmMismatch,
}

/// At most this many keys are tried for a token that names none.
const MAX_UNNAMED_CANDIDATES: usize = 8;

impl KeySet {
    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every algorithm some key verifies.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> = Vec::new();
        for algorithm in self.keys.iter().flat_map(|k| k.algorithms.iter()) {
            if !all.contains(algorithm) {
                all.push(*algorithm);
            }
        }
        all
    }

    /// The keys that may verify a token signed with `algorithm` naming `kid`: the named key;
    /// else (no `kid`, or one this set does not know while it has keys without one, like a PEM
    /// key or a secret) every key without a `kid` fit for the algorithm, at most a few.
    pub fn candidates(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Vec<&DecodingKey>, Lookup> {
        if let Some(key) = kid
            .and_then(|kid| self.by_kid.get(kid))
            .map(|&i| &self.keys[i])
        {
            return if key.algorithms.contains(&algorithm) {
                Ok(vec![&key.key])
            } else {
                Err(Lookup::AlgorithmMismatch)
            };
        }
        let unnamed = kid.is_some();
        if unnamed && self.keys.iter().all(|k| k.kid.is_some()) {
            return Err(Lookup::UnknownKid);
        }
        let fit: Vec<&DecodingKey> = self
            .keys
            .iter()
            .filter(|k| !unnamed || k.kid.is_none())
            .filter(|k| k.algorithms.contains(&algorithm))
            .map(|k| &k.key)
            .take(MAX_UNNAMED_CANDIDATES + 1)
            .collect();
        match fit.len() {
            0 => Err(Lookup::AlgorithmMismatch),
            n if n > MAX_UNNAMED_CANDIDATES => Err(Lookup::UnknownKid),
            _ => Ok(fit),
        }
    }

    fn push(&mut self, key: VerifyingKey) {
        if let Some(kid) = &key.kid {
            self.by_kid.insert(kid.clone(), self.keys.len());
        }
        self.keys.push(key);
    }
}

/// A decoded source: its usable keys and why the others were skipped.
pub struct Decoded {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

impl Decoded {
    /// The keys, or an error naming every reason when none is usable.
    pub fn usable(self) -> Result<Self, String> {
        if self.keys.is_empty() {
            let why = if self.skipped.is_empty() {
                "the key set is empty".to_string()
            } else {
                self.skipped.join("; ")
            };
            return Err(format!("no usable key ({why})"));
        }
        Ok(self)
    }
}

fn keep(allowed: &[Algorithm], intrinsic: &[Algorithm]) -> Vec<Algorithm> {
    intrinsic
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect()
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// A provider's key source, decoded; `None` for a `jwks_url`, whose keys exist only once fetched
/// (see [`from_jwk_set`]).
pub fn from_material(
    material: &KeyMaterial,
    allowed: &[Algorithm],
) -> Option<Result<Decoded, String>> {
    Some(match material {
        KeyMaterial::Secret(secret) => Ok(from_secret(secret, allowed)),
        KeyMaterial::PublicKeyPem(pem) => from_pem(pem, allowed),
        KeyMaterial::Jwks(json) => from_jwk_set(json.as_bytes(), allowed, false),
        KeyMaterial::JwksUrl { .. } => return None,
    })
}

/// A shared secret: HS* only.
pub fn from_secret(secret: &[u8], allowed: &[Algorithm]) -> Decoded {
    single(
        None,
        DecodingKey::from_secret(secret),
        keep(allowed, HMAC),
        "the secret",
    )
}

/// A PEM public key: RSA (RS*, PS*), EC P-256 / P-384 (ES256 / ES384) or Ed25519 (EdDSA).
pub fn from_pem(pem: &[u8], allowed: &[Algorithm]) -> Result<Decoded, String> {
    let (key, intrinsic): (DecodingKey, &[Algorithm]) =
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, RSA)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let curve = ec_pem_curve(pem);
            let algorithms: &[Algorithm] = match curve {
                Some(EllipticCurve::P256) => &[Algorithm::ES256],
                Some(EllipticCurve::P384) => &[Algorithm::ES384],
                _ => &[Algorithm::ES256, Algorithm::ES384],
            };
            (key, algorithms)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, &[Algorithm::EdDSA])
        } else {
            return Err("not a PEM RSA, EC (P-256, P-384) or Ed25519 public key".into());
        };
    Ok(single(
        None,
        key,
        keep(allowed, intrinsic),
        "the public key",
    ))
}

/// The curve named in an EC public key's DER (the OIDs of P-256 and P-384), when recognizable.
fn ec_pem_curve(pem: &[u8]) -> Option<EllipticCurve> {
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    if contains(P256) {
        Some(EllipticCurve::P256)
    } else if contains(P384) {
        Some(EllipticCurve::P384)
    } else {
        None
    }
}

fn single(
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    what: &str,
) -> Decoded {
    let mut decoded = Decoded {
        keys: KeySet::default(),
        skipped: Vec::new(),
    };
    if algorithms.is_empty() {
        decoded
            .skipped
            .push(format!("{what} verifies none of the provider's algorithms"));
    } else {
        decoded.keys.push(VerifyingKey {
            kid,
            key,
            algorithms,
        });
    }
    decoded
}

/// A JWK set document. Every key is judged on its own: a key of an unknown type or curve, one
/// meant for encryption, one whose `alg` the provider does not accept, or (in a set fetched from
/// a URL, `remote`) a shared secret, is skipped. Only a document that is not a JWK set at all is
/// an error here.
pub fn from_jwk_set(
    document: &[u8],
    allowed: &[Algorithm],
    remote: bool,
) -> Result<Decoded, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(document).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut decoded = Decoded {
        keys: KeySet::default(),
        skipped: Vec::new(),
    };
    for (index, value) in document.keys.into_iter().enumerate() {
        let name = value
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| format!("key #{index}"), |kid| format!("key `{kid}`"));
        match jwk_key(value, allowed, remote) {
            Ok(key) => {
                if key
                    .kid
                    .as_ref()
                    .is_some_and(|kid| decoded.keys.by_kid.contains_key(kid))
                {
                    decoded
                        .skipped
                        .push(format!("{name}: its kid is used twice"));
                } else {
                    decoded.keys.push(key);
                }
            }
            Err(why) => decoded.skipped.push(format!("{name}: {why}")),
        }
    }
    Ok(decoded)
}

fn jwk_key(
    value: serde_json::Value,
    allowed: &[Algorithm],
    remote: bool,
) -> Result<VerifyingKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a usable JWK ({e})"))?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("its `use` is not `sig`".into());
    }
    if let Some(operations) = &jwk.common.key_operations {
        if !operations.contains(&KeyOperations::Verify) {
            return Err("its `key_ops` do not include `verify`".into());
        }
    }
    let intrinsic: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err(format!("curve {:?} is not supported", ec.curve)),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return Err(format!("curve {:?} is not supported", okp.curve)),
        },
        AlgorithmParameters::OctetKey(_) if remote => {
            return Err("a shared secret has no place in a published key set".into())
        }
        AlgorithmParameters::OctetKey(_) => HMAC,
        _ => return Err("its key type is not supported".into()),
    };
    let mut algorithms = keep(allowed, intrinsic);
    if let Some(declared) = &jwk.common.key_algorithm {
        let declared = key_algorithm(declared);
        algorithms.retain(|a| Some(*a) == declared);
    }
    if algorithms.is_empty() {
        return Err("it verifies none of the provider's algorithms".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot be decoded ({e})"))?;
    Ok(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

fn key_algorithm(declared: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];

    fn rsa() -> serde_json::Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        json!({"kty": "RSA", "kid": "r", "n": b64.encode(rsa.n().to_vec()), "e": b64.encode(rsa.e().to_vec())})
    }

    fn ec() -> serde_json::Value {
        json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    fn set(keys: &[serde_json::Value]) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn a_mixed_set_keeps_each_key_for_its_own_family() {
        let decoded = from_jwk_set(&set(&[rsa(), ec()]), ALL, true).unwrap();
        assert!(decoded.skipped.is_empty(), "{:?}", decoded.skipped);
        let keys = decoded.keys;
        assert_eq!(keys.len(), 2);
        assert!(keys.candidates(Some("r"), Algorithm::RS256).is_ok());
        assert!(keys.candidates(Some("e"), Algorithm::ES256).is_ok());
        assert_eq!(
            keys.candidates(Some("r"), Algorithm::ES256).err(),
            Some(Lookup::AlgorithmMismatch)
        );
        assert_eq!(
            keys.candidates(Some("x"), Algorithm::RS256).err(),
            Some(Lookup::UnknownKid)
        );
        assert_eq!(
            keys.candidates(None, Algorithm::ES256).map(|c| c.len()),
            Ok(1)
        );
        assert_eq!(
            keys.candidates(None, Algorithm::EdDSA).err(),
            Some(Lookup::AlgorithmMismatch)
        );
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason_and_never_hide_the_others() {
        let mut encryption = rsa();
        encryption["kid"] = json!("enc");
        encryption["use"] = json!("enc");
        let mut narrowed = rsa();
        narrowed["kid"] = json!("rs512-only");
        narrowed["alg"] = json!("RS512");
        let unknown_curve =
            json!({"kty": "EC", "kid": "k", "crv": "secp256k1", "x": "AA", "y": "AA"});
        let unknown_alg =
            json!({"kty": "RSA", "kid": "u", "alg": "RSA-OAEP-512", "n": "AQAB", "e": "AQAB"});
        let secret = json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"});
        let document = set(&[
            encryption,
            narrowed,
            unknown_curve,
            unknown_alg,
            secret.clone(),
            ec(),
        ]);
        let decoded = from_jwk_set(&document, ALL, true).unwrap();
        assert_eq!(
            decoded.keys.len(),
            1,
            "only the EC key: {:?}",
            decoded.skipped
        );
        assert_eq!(decoded.skipped.len(), 5, "{:?}", decoded.skipped);
        let from_file = from_jwk_set(&set(&[secret]), ALL, false).unwrap();
        assert_eq!(from_file.keys.len(), 1, "a file may hold a shared secret");
        assert!(from_jwk_set(b"{\"nokeys\":1}", ALL, true).is_err());
        assert!(from_jwk_set(&set(&[]), ALL, true)
            .unwrap()
            .usable()
            .is_err());
    }

    #[test]
    fn a_secret_or_pem_key_verifies_only_its_own_family() {
        let secret = from_secret(b"0123456789abcdef0123456789abcdef", &[Algorithm::RS256]);
        assert!(secret.usable().is_err(), "a secret never verifies RS256");
        let secret = from_secret(b"0123456789abcdef0123456789abcdef", ALL);
        assert_eq!(secret.keys.algorithms(), [Algorithm::HS256]);
        assert_eq!(
            secret
                .keys
                .candidates(Some("any"), Algorithm::HS256)
                .map(|c| c.len()),
            Ok(1),
            "a key without kid serves tokens naming one"
        );
        assert!(from_pem(b"not a key", ALL).is_err());
    }
}
