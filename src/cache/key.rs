//! The cache key: host + path + query, the route, and the values of the route's `vary` headers.
//! The method is not part of it (HEAD is answered from GET's entry; nothing else is cached).

use crate::hashing::Keyed128;
use http::{HeaderMap, HeaderName};
use pingora_cache::CacheKey;
use std::sync::LazyLock;

/// Keys live only in this process's memory, so a keyed SipHash does (about 4x cheaper than
/// Pingora's BLAKE2 here) and clients cannot aim for a collision.
static KEY_HASH: LazyLock<Keyed128> = LazyLock::new(Keyed128::new);

/// Separates the key's fields; a URL, a route name and header values never contain it.
const FIELD: u8 = 0;
/// Separates repeated values of one header.
const VALUE: u8 = 1;

/// The purgeable address of an entry: lower-case host, then path and query as requested.
pub fn url(host: &str, path_and_query: &str) -> String {
    let mut url = String::with_capacity(host.len() + path_and_query.len());
    url.push_str(host);
    url.make_ascii_lowercase();
    url.push_str(path_and_query);
    url
}

/// The key of a request; its hash is computed once here, not at every use.
pub fn build(
    host: &str,
    path_and_query: &str,
    route: &str,
    vary: &[HeaderName],
    headers: &HeaderMap,
) -> CacheKey {
    let mut primary = Vec::with_capacity(host.len() + path_and_query.len() + route.len() + 8);
    write_fields(host, path_and_query, route, vary, headers, &mut |bytes| {
        primary.extend_from_slice(bytes)
    });
    let hash = KEY_HASH.hash(|write| write(&primary)).to_be_bytes();
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// The store's hash of the key [`build`] makes for the same request, computed without building
/// the key: what a fresh hit looks up before Pingora's cache phases.
pub fn hash(
    host: &str,
    path_and_query: &str,
    route: &str,
    vary: &[HeaderName],
    headers: &HeaderMap,
) -> u128 {
    hash_with(host, path_and_query, route, vary, headers, &[])
}

/// [`hash`] with `extra` bytes after the route's fields (an aggregation route's rendered
/// parts); the purge URL stays the request's.
pub fn hash_with(
    host: &str,
    path_and_query: &str,
    route: &str,
    vary: &[HeaderName],
    headers: &HeaderMap,
    extra: &[u8],
) -> u128 {
    let mut len = 0;
    let mut count = |bytes: &[u8]| len += bytes.len();
    write_fields(host, path_and_query, route, vary, headers, &mut count);
    if !extra.is_empty() {
        len += 1 + extra.len();
    }
    KEY_HASH.hash_pieces(len, |write| {
        write_fields(host, path_and_query, route, vary, headers, write);
        if !extra.is_empty() {
            write(&[FIELD]);
            write(extra);
        }
    })
}

/// The key's bytes, in order: the lower-cased host, the path and query, the route, and each
/// `vary` header's values, fields and repeated values framed by separators.
fn write_fields(
    host: &str,
    path_and_query: &str,
    route: &str,
    vary: &[HeaderName],
    headers: &HeaderMap,
    write: &mut dyn FnMut(&[u8]),
) {
    write_lowercase(host.as_bytes(), write);
    write(path_and_query.as_bytes());
    write(&[FIELD]);
    write(route.as_bytes());
    for name in vary {
        write(&[FIELD]);
        for (index, value) in headers.get_all(name).iter().enumerate() {
            if index > 0 {
                write(&[VALUE]);
            }
            write(value.as_bytes());
        }
    }
}

/// Feeds `bytes` lowercased, through a small stack buffer (hosts are rarely not lowercase).
fn write_lowercase(bytes: &[u8], write: &mut dyn FnMut(&[u8])) {
    if !bytes.iter().any(u8::is_ascii_uppercase) {
        return write(bytes);
    }
    let mut buffer = [0u8; 64];
    for chunk in bytes.chunks(buffer.len()) {
        let lower = &mut buffer[..chunk.len()];
        lower.copy_from_slice(chunk);
        lower.make_ascii_lowercase();
        write(lower);
    }
}

/// The URL part of a key built by [`build`].
pub fn url_of(key: &CacheKey) -> &[u8] {
    let primary = key.primary_key();
    let end = primary
        .iter()
        .position(|b| *b == FIELD)
        .unwrap_or(primary.len());
    &primary[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn hash(host: &str, target: &str, route: &str, vary: &[&str], pairs: &[(&str, &str)]) -> u128 {
        let vary: Vec<HeaderName> = vary
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect();
        u128::from_be_bytes(build(host, target, route, &vary, &headers(pairs)).primary_bin())
    }

    #[test]
    fn every_part_of_the_key_matters() {
        let base = hash("a.example", "/p?q=1", "r", &["accept"], &[("accept", "x")]);
        assert_eq!(
            base,
            hash("A.Example", "/p?q=1", "r", &["accept"], &[("accept", "x")])
        );
        assert_ne!(
            base,
            hash("b.example", "/p?q=1", "r", &["accept"], &[("accept", "x")])
        );
        assert_ne!(
            base,
            hash("a.example", "/p?q=2", "r", &["accept"], &[("accept", "x")])
        );
        assert_ne!(
            base,
            hash("a.example", "/P?q=1", "r", &["accept"], &[("accept", "x")])
        );
        assert_ne!(
            base,
            hash("a.example", "/p?q=1", "s", &["accept"], &[("accept", "x")])
        );
        assert_ne!(
            base,
            hash("a.example", "/p?q=1", "r", &["accept"], &[("accept", "y")])
        );
        assert_ne!(base, hash("a.example", "/p?q=1", "r", &["accept"], &[]));
        // Values are framed, so moving a byte between fields changes the key.
        assert_ne!(
            hash("h", "/", "r", &["a", "b"], &[("a", "xy")]),
            hash("h", "/", "r", &["a", "b"], &[("a", "x"), ("b", "y")])
        );
        assert_ne!(
            hash("h", "/", "r", &["a"], &[("a", "x"), ("a", "y")]),
            hash("h", "/", "r", &["a"], &[("a", "xy")])
        );
    }

    #[test]
    fn the_hash_without_a_key_is_the_keys_hash() {
        let long_host = "Very-Long-Host-Name-".repeat(8) + ".Example";
        /// host, target, route, the route's vary headers, the request's headers
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
        );
        let cases: &[Case] = &[
            ("a.example", "/p?q=1", "r", &[], &[]),
            ("A.Example", "/", "route", &[], &[]),
            (&long_host, "/x", "r", &[], &[]),
            ("h", "/", "r", &["accept"], &[]),
            ("h", "/", "r", &["accept"], &[("accept", "x")]),
            (
                "h",
                "/",
                "r",
                &["a", "b"],
                &[("a", "x"), ("a", "yy"), ("b", "")],
            ),
            ("h", "/", "r", &["a", "b"], &[("b", "z")]),
        ];
        for (host, target, route, vary, pairs) in cases {
            let vary: Vec<HeaderName> = vary
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect();
            let headers = headers(pairs);
            let key = build(host, target, route, &vary, &headers);
            assert_eq!(
                super::hash(host, target, route, &vary, &headers),
                u128::from_be_bytes(key.primary_bin()),
                "{host} {target} {route} {vary:?} {pairs:?}"
            );
        }
    }

    #[test]
    fn the_url_is_recoverable_for_purging() {
        let key = build("Api.Example", "/v1/x?y=1", "r", &[], &HeaderMap::new());
        assert_eq!(url_of(&key), b"api.example/v1/x?y=1");
        assert_eq!(url("Api.Example", "/v1/x?y=1").as_bytes(), url_of(&key));
    }
}
