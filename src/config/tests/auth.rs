//! `auth` (JWT providers, API keys) and route `auth`.

use super::*;
use crate::config::{AuthMethod, KeyMaterial, TokenSource};
use std::time::Duration;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// An `auth` section with one provider `p` whose fields are `fields`, and a route using it.
fn provider(fields: &str) -> String {
    format!("auth:\n  jwt:\n    providers:\n      p:\n{fields}routes:\n  - {{ name: r, upstream: app, auth: {{ jwt: p }} }}\n")
}

#[test]
fn jwt_provider_defaults() {
    let files = Files::new("auth-defaults");
    let secret = files.write("secret", format!("{SECRET}\n"));
    let model = model(&provider(&format!(
        "        algorithms: [HS256]\n        secret_file: {secret}\n"
    )));
    let spec = &model.auth.jwt_providers[0];
    assert_eq!(spec.name, "p");
    assert_eq!(
        spec.keys,
        KeyMaterial::Secret(SECRET.as_bytes().to_vec()),
        "the file's newline is not part of the secret"
    );
    assert_eq!(spec.clock_skew, Duration::from_secs(30));
    assert_eq!(spec.require_claims, ["exp"]);
    assert_eq!(
        spec.token_from,
        [TokenSource::Header(http::header::AUTHORIZATION)]
    );
    assert_eq!(
        (spec.tier_claim.as_str(), spec.strip_token),
        ("plan", false)
    );
    assert_eq!(
        (spec.issuer.as_deref(), spec.audiences.is_empty()),
        (None, true)
    );
    let route_auth = model.routes[0].auth.as_ref().unwrap();
    assert_eq!(route_auth.methods, [AuthMethod::Jwt(0)]);
}

#[test]
fn jwt_provider_values_are_read() {
    let model = model(&provider(
        "        algorithms: [RS256, ES256]\n        jwks_url: https://idp.test/keys\n        jwks_refresh: 5m\n        clock_skew: 0\n        token_from: [\"cookie:session\", \"query:token\"]\n        forward_claims: { sub: X-User }\n",
    ));
    let spec = &model.auth.jwt_providers[0];
    assert_eq!(
        spec.keys,
        KeyMaterial::JwksUrl {
            url: "https://idp.test/keys".parse().unwrap(),
            refresh: Duration::from_secs(300),
        }
    );
    assert_eq!(spec.clock_skew, Duration::ZERO);
    assert_eq!(
        spec.token_from,
        [
            TokenSource::Cookie("session".into()),
            TokenSource::Query("token".into())
        ]
    );
    assert_eq!(
        spec.forward_claims,
        [("sub".to_string(), http::HeaderName::from_static("x-user"))]
    );
}

#[test]
fn jwt_provider_problems() {
    expect_problems(&[
        (&provider("        algorithms: [HS256]\n"), &["4:7 auth.jwt.providers.p: needs exactly one key source: jwks_url, jwks_file, public_key_file, secret_file or secret_env"]),
        (&provider("        algorithms: [HS256]\n        secret_env: A\n        secret_file: /x\n"), &["4:7 auth.jwt.providers.p: needs exactly one key source: jwks_url, jwks_file, public_key_file, secret_file or secret_env", "7:9 auth.jwt.providers.p.secret_file: cannot read /x: No such file or directory (os error 2)"]),
        (&provider("        algorithms: [HS256]\n        secret_file: /nonexistent/secret\n        jwks_refresh: 1m\n"), &["7:9 auth.jwt.providers.p.jwks_refresh: only applies to jwks_url", "6:9 auth.jwt.providers.p.secret_file: cannot read /nonexistent/secret: No such file or directory (os error 2)"]),
        (&provider("        algorithms: [HS256]\n        secret_env: EDGEGATE_TEST_UNSET_SECRET\n"), &["6:9 auth.jwt.providers.p.secret_env: environment variable EDGEGATE_TEST_UNSET_SECRET is not set"]),
        (&provider("        algorithms: []\n        jwks_url: https://idp.test/keys\n"), &["5:9 auth.jwt.providers.p.algorithms: list the algorithms to accept, e.g. [RS256]"]),
        (&provider("        algorithms: [none, XY256, HS256]\n        jwks_url: https://idp.test/keys\n"), &["5:22 auth.jwt.providers.p.algorithms[0]: `none` is never accepted: unsigned tokens prove nothing", "5:28 auth.jwt.providers.p.algorithms[1]: `XY256` is not one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA", "5:22 auth.jwt.providers.p.algorithms[0]: HS256 needs a shared secret, which a published key set never holds"]),
        (&provider("        algorithms: [RS256]\n        jwks_url: ftp://idp.test/keys\n        jwks_refresh: 0s\n"), &["7:9 auth.jwt.providers.p.jwks_refresh: must be at least 1s"]),
        (&provider("        algorithms: [RS256]\n        jwks_url: https://idp.test/keys\n        clock_skew: a bit\n        token_from: [\"body:token\", \"header:bad name\"]\n        forward_claims: { sub: \"bad name\" }\n"), &["7:9 auth.jwt.providers.p.clock_skew: duration `a bit` must start with a whole number", "8:22 auth.jwt.providers.p.token_from[0]: `body:token` is not one of header:NAME, cookie:NAME, query:NAME", "8:36 auth.jwt.providers.p.token_from[1]: `bad name` is not a valid HTTP header name", "9:27 auth.jwt.providers.p.forward_claims.sub: `bad name` is not a valid HTTP header name"]),
        (&provider("        algorithms: [RS256]\n        jwks_url: https://idp.test/keys\n        token_from: []\n"), &["7:9 auth.jwt.providers.p.token_from: list at least one place to find the token"]),
    ]);
}

#[test]
fn key_material_must_fit_the_algorithms() {
    let files = Files::new("auth-keys");
    let short = files.write("short", "too short");
    let (_, rsa_key) = files.certificate("rsa", &["idp.test"]);
    let public = {
        let key =
            openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&rsa_key).unwrap()).unwrap();
        files.write("public.pem", key.public_key_to_pem().unwrap())
    };
    let garbage = files.write(
        "garbage.pem",
        "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
    );
    let not_utf8 = files.write("jwks.json", b"\xff\xfe");
    let empty_set = files.write("empty.json", r#"{"keys": []}"#);
    let cases = [
        provider(&format!(
            "        algorithms: [HS256]\n        secret_file: {short}\n"
        )),
        provider(&format!(
            "        algorithms: [HS256, RS256]\n        public_key_file: {public}\n"
        )),
        provider(&format!(
            "        algorithms: [RS256]\n        public_key_file: {garbage}\n"
        )),
        provider(&format!(
            "        algorithms: [RS256]\n        jwks_file: {not_utf8}\n"
        )),
        provider(&format!(
            "        algorithms: [RS256]\n        jwks_file: {empty_set}\n"
        )),
    ];
    let found: Vec<Vec<String>> = cases
        .iter()
        .map(|case| {
            problems(case)
                .into_iter()
                .map(|p| p.replace(&files.dir.display().to_string(), "DIR"))
                .collect()
        })
        .collect();
    let expected: [&[&str]; 5] = [&["4:7 auth.jwt.providers.p: the HMAC secret is 9 bytes; use at least 32"], &["5:22 auth.jwt.providers.p.algorithms[0]: HS256 cannot be verified with any of this provider's keys (they verify [RS256])"], &["6:9 auth.jwt.providers.p.public_key_file: not a PEM RSA, EC (P-256, P-384) or Ed25519 public key"], &["6:9 auth.jwt.providers.p.jwks_file: is not UTF-8 JSON"], &["6:9 auth.jwt.providers.p.jwks_file: no usable key (the key set is empty)"]];
    assert_eq!(found, expected);
    model(&provider(&format!(
        "        algorithms: [RS256]\n        public_key_file: {public}\n"
    )));
}

#[test]
fn api_keys() {
    let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // sha256("test")
    let model = model(&format!(
        "auth:\n  api_keys:\n    keys: [{{ consumer: alice, sha256: {digest}, tier: gold }}]\nroutes:\n  - {{ name: r, upstream: app, auth: {{ api_key: true }} }}\n"
    ));
    let keys = model.auth.api_keys.as_ref().unwrap();
    assert_eq!(keys.header, "x-api-key");
    assert_eq!(keys.keys[0].consumer, "alice");
    assert_eq!(keys.keys[0].sha256[..2], [0x9f, 0x86]);
    assert_eq!(keys.keys[0].tier.as_deref(), Some("gold"));
    expect_problems(&[
        ("auth:\n  api_keys:\n    header: \"bad name\"\n    keys:\n      - { consumer: a, sha256: abc }\n      - { consumer: b, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 }\n      - { consumer: c, sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08 }\n", &["3:5 auth.api_keys.header: `bad name` is not a valid HTTP header name", "5:24 auth.api_keys.keys[0].sha256: must be 64 hex digits (`edgegate hash-key KEY` prints them)", "7:24 auth.api_keys.keys[2].sha256: the same key is listed twice"]),
    ]);
}

#[test]
fn route_auth_problems() {
    let files = Files::new("route-auth");
    let secret = files.write("secret", SECRET);
    let auth = format!("auth:\n  jwt:\n    providers:\n      p: {{ algorithms: [HS256], secret_file: {secret} }}\n");
    let routes = [
        "routes:\n  - { name: r, upstream: app, auth: { jwt: q } }\n",
        "routes:\n  - { name: r, upstream: app, auth: { api_key: true } }\n",
        "routes:\n  - { name: r, upstream: app, auth: {} }\n",
        "routes:\n  - { name: r, upstream: app, auth: { any_of: [\"jwt:p\", basic] } }\n",
        "routes:\n  - { name: r, upstream: app, auth: { any_of: [\"jwt:p\", api_key], require_roles: [admin] } }\n",
    ];
    let found: Vec<Vec<String>> = routes
        .iter()
        .map(|routes| problems(&format!("{auth}{routes}")))
        .collect();
    let expected: [&[&str]; 5] = [&["6:39 routes[0].auth.jwt: no JWT provider named `q` under auth.jwt.providers"], &["6:31 routes[0].auth: uses API keys but auth.api_keys is not configured"], &["6:31 routes[0].auth: needs `jwt: PROVIDER`, `api_key: true` or `any_of`"], &["6:57 routes[0].auth.any_of[1]: `basic` is not jwt:PROVIDER or api_key"], &["6:31 routes[0].auth: uses API keys but auth.api_keys is not configured", "6:31 routes[0].auth: require_roles / require_scopes come from JWT claims; API-key requests could never have them"]];
    assert_eq!(found, expected);
    let model = model(&format!("{auth}routes:\n  - {{ name: r, upstream: app, auth: {{ any_of: [\"jwt:p\"], require_scopes: [read] }} }}\n"));
    assert_eq!(
        model.routes[0].auth.as_ref().unwrap().require_scopes,
        ["read"]
    );
}
