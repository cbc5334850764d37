//! API keys: the presented key's SHA-256 is compared, in constant time, with every stored digest.

use super::Identity;
use crate::config::ApiKeysSpec;
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The configured keys, as identities ready to hand out.
pub struct ApiKeys {
    pub header: HeaderName,
    keys: Vec<([u8; 32], Arc<Identity>)>,
}

impl ApiKeys {
    /// Prepares the keys of `spec`.
    pub fn new(spec: &ApiKeysSpec) -> Self {
        ApiKeys {
            header: spec.header.clone(),
            keys: spec
                .keys
                .iter()
                .map(|key| {
                    let identity = Identity {
                        consumer: Some(key.consumer.clone()),
                        tier: key.tier.clone(),
                        ..Identity::default()
                    };
                    (key.sha256, Arc::new(identity))
                })
                .collect(),
        }
    }

    /// The identity owning `presented`, comparing against every key so timing says nothing.
    pub fn identify(&self, presented: &[u8]) -> Option<Arc<Identity>> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for (stored, identity) in &self.keys {
            if constant_time_eq(stored, &digest) {
                found = Some(Arc::clone(identity));
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// SHA-256 of `key` as lower-case hex (what `auth.api_keys.keys[].sha256` holds).
pub fn hash_key_hex(key: &str) -> String {
    let mut hex = String::new();
    crate::fastfmt::push_hex(&mut hex, &Sha256::digest(key.as_bytes()));
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeySpec;

    #[test]
    fn keys_are_found_by_digest() {
        let digest = Sha256::digest(b"secret-key").into();
        let keys = ApiKeys::new(&ApiKeysSpec {
            header: HeaderName::from_static("x-api-key"),
            keys: vec![ApiKeySpec {
                consumer: "partner-a".into(),
                sha256: digest,
                tier: Some("premium".into()),
            }],
        });
        let identity = keys.identify(b"secret-key").unwrap();
        assert_eq!(identity.consumer.as_deref(), Some("partner-a"));
        assert_eq!(identity.tier.as_deref(), Some("premium"));
        assert!(keys.identify(b"secret-kez").is_none());
        assert_eq!(
            hash_key_hex("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
