//! `edgegate token`: signs a token for operators' tests.

use jsonwebtoken::{encode, Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::time::Duration;

/// What to put in the token and how to sign it.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    pub algorithm: String,
    /// HS* secret, or a PEM private key for RS/PS/ES/EdDSA.
    pub key: Vec<u8>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `NAME=VALUE`; a value with commas becomes an array, numbers and booleans keep their type.
    pub claims: Vec<String>,
    pub ttl: Duration,
    pub kid: Option<String>,
}

/// Signs the token described by `request`.
pub fn mint(request: &MintRequest) -> Result<String, String> {
    if request.algorithm.eq_ignore_ascii_case("none") {
        return Err("`none` tokens are never accepted by edgegate; pick a real algorithm".into());
    }
    let algorithm = Algorithm::from_str(&request.algorithm)
        .map_err(|_| format!("unknown algorithm {}", request.algorithm))?;
    let key = match algorithm.family() {
        AlgorithmFamily::Hmac => Ok(EncodingKey::from_secret(&request.key)),
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&request.key),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&request.key),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&request.key),
    }
    .map_err(|e| format!("the key does not fit {algorithm:?}: {e}"))?;
    let now = super::jwt::unix_now();
    let mut claims = Map::new();
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + request.ttl.as_secs()).into());
    for (name, value) in [
        ("sub", &request.subject),
        ("iss", &request.issuer),
        ("aud", &request.audience),
    ] {
        if let Some(value) = value {
            claims.insert(name.into(), Value::String(value.clone()));
        }
    }
    for claim in &request.claims {
        let (name, value) = claim
            .split_once('=')
            .ok_or_else(|| format!("--claim `{claim}` is not NAME=VALUE"))?;
        claims.insert(name.to_string(), claim_value(value));
    }
    let mut header = Header::new(algorithm);
    header.kid = request.kid.clone();
    encode(&header, &claims, &key).map_err(|e| format!("cannot sign: {e}"))
}

fn claim_value(text: &str) -> Value {
    if text.contains(',') {
        return Value::Array(
            text.split(',')
                .map(|s| Value::String(s.trim().to_string()))
                .collect(),
        );
    }
    if let Ok(number) = text.parse::<i64>() {
        return number.into();
    }
    match text {
        "true" => true.into(),
        "false" => false.into(),
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_carry_the_claims() {
        let token = mint(&MintRequest {
            algorithm: "HS256".into(),
            key: b"0123456789abcdef0123456789abcdef".to_vec(),
            subject: Some("alice".into()),
            claims: vec!["roles=a,b".into(), "plan=premium".into(), "n=3".into()],
            ttl: Duration::from_secs(60),
            ..MintRequest::default()
        })
        .unwrap();
        let claims: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["roles"], serde_json::json!(["a", "b"]));
        assert_eq!(claims["plan"], "premium");
        assert_eq!(claims["n"], 3);
        assert!(mint(&MintRequest {
            algorithm: "none".into(),
            ..MintRequest::default()
        })
        .is_err());
    }
}
