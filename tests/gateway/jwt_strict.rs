//! JWT checks as strict as PyJWT and jwcrypto, against a PEM-key provider and a JWK set mixing
//! RSA, EC and Ed25519 keys. Valid tokens come from the `edgegate token` command; malformed
//! ones are hand-built JSON signed with OpenSSL (not the gateway's JWT library).

use crate::support::{binary, temp_dir, wait_until, Gateway, Origin, Response};
use base64::Engine as _;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://auth.test/";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rsa,
    Ec,
    Ed,
}

/// A signing key, its PEM files and its JWK.
struct TestKey {
    kind: Kind,
    kid: &'static str,
    private: PKey<Private>,
    private_pem: PathBuf,
    public_pem: PathBuf,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl TestKey {
    fn generate(dir: &Path, kind: Kind, kid: &'static str) -> TestKey {
        let private = match kind {
            Kind::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
            Kind::Ec => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
                PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
            }
            Kind::Ed => PKey::generate_ed25519().unwrap(),
        };
        let private_pem = dir.join(format!("{kid}.key.pem"));
        std::fs::write(&private_pem, private.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let public_pem = dir.join(format!("{kid}.pub.pem"));
        std::fs::write(&public_pem, private.public_key_to_pem().unwrap()).unwrap();
        TestKey {
            kind,
            kid,
            private,
            private_pem,
            public_pem,
        }
    }

    fn alg(&self) -> &'static str {
        match self.kind {
            Kind::Rsa => "RS256",
            Kind::Ec => "ES256",
            Kind::Ed => "EdDSA",
        }
    }

    fn jwk(&self) -> Value {
        match self.kind {
            Kind::Rsa => {
                let rsa = self.private.rsa().unwrap();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig",
                       "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
            }
            Kind::Ec => {
                let ec = self.private.ec_key().unwrap();
                let mut ctx = BigNumContext::new().unwrap();
                let (mut x, mut y) = (
                    openssl::bn::BigNum::new().unwrap(),
                    openssl::bn::BigNum::new().unwrap(),
                );
                ec.public_key()
                    .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                    .unwrap();
                json!({"kty": "EC", "kid": self.kid, "crv": "P-256",
                       "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())})
            }
            Kind::Ed => json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519",
                               "x": b64(&self.private.raw_public_key().unwrap())}),
        }
    }

    /// `header.claims` signed with OpenSSL.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match self.kind {
            Kind::Rsa => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.private).unwrap();
                signer.sign_oneshot_to_vec(message.as_bytes()).unwrap()
            }
            Kind::Ec => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.private).unwrap();
                let der = signer.sign_oneshot_to_vec(message.as_bytes()).unwrap();
                let signature = EcdsaSig::from_der(&der).unwrap();
                let mut raw = signature.r().to_vec_padded(32).unwrap();
                raw.extend(signature.s().to_vec_padded(32).unwrap());
                raw
            }
            Kind::Ed => {
                let mut signer = Signer::new_without_digest(&self.private).unwrap();
                signer.sign_oneshot_to_vec(message.as_bytes()).unwrap()
            }
        };
        format!("{message}.{}", b64(&signature))
    }

    /// A hand-built token with `claims` (the header names this key).
    fn token(&self, claims: Value) -> String {
        self.sign(
            &json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            &claims,
        )
    }

    /// A token from `edgegate token`.
    fn minted(&self, extra: &[&str]) -> String {
        let mut command = Command::new(binary());
        command
            .args(["token", "--alg", self.alg(), "--key-file"])
            .arg(&self.private_pem)
            .args([
                "--kid", self.kid, "--sub", "alice", "--iss", ISSUER, "--aud", "api",
            ])
            .args(extra);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Setup {
    gw: Gateway,
    origin: Origin,
    pem: TestKey,
    set: Vec<TestKey>,
}

/// `/pem` is guarded by a provider with one EC PEM key, `/set` by a JWK set of RSA, EC and
/// Ed25519 keys plus one encryption key it must skip. Both want `iss` and `aud`, 2 s of skew.
fn setup() -> Setup {
    let origin = Origin::start("app");
    let dir = temp_dir();
    let pem = TestKey::generate(&dir, Kind::Ec, "pem");
    let set = vec![
        TestKey::generate(&dir, Kind::Rsa, "rsa"),
        TestKey::generate(&dir, Kind::Ec, "ec"),
        TestKey::generate(&dir, Kind::Ed, "ed"),
    ];
    let mut encryption = set[0].jwk();
    encryption["kid"] = json!("encryption");
    encryption["use"] = json!("enc");
    let mut keys: Vec<Value> = set.iter().map(TestKey::jwk).collect();
    keys.push(encryption);
    let jwks = write(&dir, "jwks.json", &json!({ "keys": keys }).to_string());
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n\
         \x20     pem: {{ issuer: \"{ISSUER}\", audiences: [api], algorithms: [ES256], public_key_file: {pem}, clock_skew: 2s }}\n\
         \x20     set: {{ issuer: \"{ISSUER}\", audiences: [api, other], algorithms: [RS256, ES256, EdDSA], jwks_file: {jwks}, clock_skew: 2s }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: pem, match: {{ path_prefix: /pem }}, upstream: app, auth: {{ jwt: pem }} }}\n\
         \x20 - {{ name: set, match: {{ path_prefix: /set }}, upstream: app, auth: {{ jwt: set }} }}\n",
        origin.addr,
        pem = pem.public_pem.display(),
        jwks = jwks.display(),
    ));
    Setup {
        gw,
        origin,
        pem,
        set,
    }
}

fn call(gw: &Gateway, path: &str, token: &str) -> Response {
    gw.request(
        "GET",
        path,
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
}

fn assert_refused(response: &Response, why: &str, description: &str) {
    assert_eq!(response.status, 401, "{why}: {}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(description),
        "{why}: expected {description:?} in {challenge:?}"
    );
}

fn valid_claims() -> Value {
    json!({"sub": "alice", "iss": ISSUER, "aud": "api", "iat": now(), "exp": now() + 600})
}

/// Every malformed-claims case, as (why, claims, expected error description).
fn claim_cases() -> Vec<(&'static str, Value, &'static str)> {
    let with = |changes: Value| {
        let mut claims = valid_claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    vec![
        (
            "no iss",
            with(json!({"iss": null})),
            "the token has no iss claim",
        ),
        (
            "array iss",
            with(json!({"iss": [ISSUER]})),
            "the iss claim is not a string",
        ),
        (
            "number iss",
            with(json!({"iss": 42})),
            "the iss claim is not a string",
        ),
        (
            "other iss",
            with(json!({"iss": "https://evil/"})),
            "untrusted issuer",
        ),
        (
            "no aud",
            with(json!({"aud": null})),
            "the token has no aud claim",
        ),
        (
            "number aud",
            with(json!({"aud": 42})),
            "not a string or an array of strings",
        ),
        (
            "object aud",
            with(json!({"aud": {"api": true}})),
            "not a string or an array of strings",
        ),
        (
            "aud array with a number",
            with(json!({"aud": ["api", 1]})),
            "not a string or an array of strings",
        ),
        (
            "other aud",
            with(json!({"aud": ["nobody"]})),
            "not meant for this audience",
        ),
        (
            "float iat in the future",
            with(json!({"iat": now() as f64 + 3600.5})),
            "issued in the future",
        ),
        (
            "string iat",
            with(json!({"iat": (now() + 3600).to_string()})),
            "the iat claim is not a number",
        ),
        (
            "string exp",
            with(json!({"exp": (now() + 3600).to_string()})),
            "the exp claim is not a number",
        ),
        (
            "string nbf",
            with(json!({"nbf": now().to_string()})),
            "the nbf claim is not a number",
        ),
        (
            "nbf in the future",
            with(json!({"nbf": now() + 3600})),
            "not valid yet",
        ),
        (
            "expired",
            with(json!({"exp": now() - 60})),
            "the token has expired",
        ),
        (
            "no exp",
            with(json!({"exp": null})),
            "a required claim is missing",
        ),
    ]
}

#[test]
fn tokens_from_the_cli_pass_for_every_key_of_a_mixed_set_and_the_pem_key() {
    let s = setup();
    assert_eq!(call(&s.gw, "/pem", &s.pem.minted(&[])).status, 200);
    for key in &s.set {
        let response = call(&s.gw, "/set", &key.minted(&["--ttl", "10m"]));
        assert_eq!(response.status, 200, "{}: {}", key.alg(), response.text());
        let hand_built = key.token(valid_claims());
        assert_eq!(
            call(&s.gw, "/set", &hand_built).status,
            200,
            "{} by OpenSSL",
            key.alg()
        );
    }
    assert_eq!(s.origin.hits(), 7);
    let multi_aud = s.set[1].token({
        let mut claims = valid_claims();
        claims["aud"] = json!(["nobody", "other"]);
        claims
    });
    assert_eq!(
        call(&s.gw, "/set", &multi_aud).status,
        200,
        "one audience of an array"
    );
}

#[test]
fn malformed_claims_are_refused_for_a_pem_key_and_a_jwk_set() {
    let s = setup();
    for (why, claims, description) in claim_cases() {
        let pem_token = s.pem.token(claims.clone());
        assert_refused(&call(&s.gw, "/pem", &pem_token), why, description);
        for key in &s.set {
            let token = key.token(claims.clone());
            assert_refused(&call(&s.gw, "/set", &token), why, description);
        }
    }
    assert_eq!(s.origin.hits(), 0);
}

#[test]
fn headers_are_checked_before_any_key_is_used() {
    let s = setup();
    let claims = valid_claims();
    let rsa = &s.set[0];
    for (why, header, description) in [
        (
            "crit",
            json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"], "exp": 1}),
            "crit",
        ),
        (
            "alg not listed",
            json!({"alg": "RS512", "kid": "rsa"}),
            "signature or algorithm",
        ),
        (
            "alg of another family than the key",
            json!({"alg": "ES256", "kid": "rsa"}),
            "signature or algorithm",
        ),
        (
            "kid not a string",
            json!({"alg": "RS256", "kid": 7}),
            "kid is not a string",
        ),
        (
            "unknown kid",
            json!({"alg": "RS256", "kid": "nope"}),
            "unknown key",
        ),
        (
            "skipped encryption key",
            json!({"alg": "RS256", "kid": "encryption"}),
            "unknown key",
        ),
    ] {
        let token = rsa.sign(&header, &claims);
        assert_refused(&call(&s.gw, "/set", &token), why, description);
    }
    let no_kid = rsa.sign(&json!({"alg": "RS256"}), &claims);
    assert_eq!(
        call(&s.gw, "/set", &no_kid).status,
        200,
        "without kid, the one key fit for RS256 is used"
    );
    let crit = s.pem.sign(
        &json!({"alg": "ES256", "crit": ["b64"], "b64": true}),
        &claims,
    );
    assert_refused(
        &call(&s.gw, "/pem", &crit),
        "crit on a PEM provider",
        "crit",
    );
}

#[test]
fn a_cached_token_expires_at_exp_plus_skew_like_an_uncached_one() {
    let s = setup();
    let exp = now() + 2;
    let token = s.set[1].token(json!({"sub": "a", "iss": ISSUER, "aud": "api", "exp": exp}));
    assert_eq!(
        call(&s.gw, "/set", &token).status,
        200,
        "verified and cached"
    );
    assert_eq!(call(&s.gw, "/set", &token).status, 200, "from the cache");
    // skew is 2 s: the token is good through exp + 1, refused from exp + 2 on.
    assert!(wait_until(Duration::from_secs(10), || now() >= exp + 2));
    assert_refused(
        &call(&s.gw, "/set", &token),
        "cached, past exp + skew",
        "expired",
    );
    let fresh = s.set[1].token(json!({"sub": "b", "iss": ISSUER, "aud": "api", "exp": exp}));
    assert_refused(
        &call(&s.gw, "/set", &fresh),
        "uncached, past exp + skew",
        "expired",
    );
}

#[test]
fn unusable_keys_are_skipped_with_a_warning_and_a_metric() {
    let s = setup();
    assert_eq!(
        s.gw.metric("edgegate_jwt_keys_skipped_total{provider=\"set\"}"),
        Some(1.0)
    );
    assert_eq!(
        s.gw.metric("edgegate_jwt_keys_skipped_total{provider=\"pem\"}"),
        Some(0.0)
    );
    assert!(
        s.gw.stderr()
            .contains("JWT provider set: skipping a key that cannot be used: key `encryption`"),
        "{}",
        s.gw.stderr()
    );
}

#[test]
fn a_key_set_without_a_usable_key_fails_check_or_answers_503() {
    let dir = temp_dir();
    let useless = write(
        &dir,
        "useless.json",
        &json!({"keys": [{"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}]})
            .to_string(),
    );
    let config = write(
        &dir,
        "edgegate.yaml",
        &format!(
            "listeners: [{{ name: http, address: 127.0.0.1:1 }}]\n\
             auth: {{ jwt: {{ providers: {{ main: {{ algorithms: [ES256], jwks_file: {} }} }} }} }}\n\
             upstreams: {{ u: {{ targets: [{{ address: 127.0.0.1:2 }}] }} }}\n\
             routes: [{{ name: r, upstream: u, auth: {{ jwt: main }} }}]\n",
            useless.display()
        ),
    );
    let (ok, _, stderr) = crate::support::check(&config);
    assert!(!ok);
    assert!(
        stderr.contains("auth.jwt.providers.main.jwks_file: no usable key (key `p521`"),
        "{stderr}"
    );

    // The same set served from a URL: the gateway runs and says the keys are unavailable.
    let keys_server = Origin::start("keys");
    keys_server.set(|b| {
        b.body = Some(std::fs::read_to_string(&useless).unwrap());
    });
    let app = Origin::start("app");
    let gw = Gateway::start(&format!(
        "auth: {{ jwt: {{ providers: {{ remote: {{ algorithms: [ES256], jwks_url: \"http://{}/jwks\" }} }} }} }}\n\
         upstreams: {{ app: {{ targets: [{{ address: \"{}\" }}] }} }}\n\
         routes: [{{ name: r, upstream: app, auth: {{ jwt: remote }} }}]\n",
        keys_server.addr, app.addr
    ));
    let key = TestKey::generate(&dir, Kind::Ec, "p521");
    let response = call(&gw, "/", &key.token(valid_claims()));
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        response.text().contains("not available"),
        "{}",
        response.text()
    );
    assert_eq!(app.hits(), 0);
}
