//! CORS per route: preflights answered at the gateway before authentication and never forwarded,
//! the allowed origins (exact, `*`, `*.domain`), credentials, `Vary: Origin` on every response
//! (cached ones too), the gateway's own errors readable by the page, unknown origins refused when
//! configured. Each exchange is the one a browser makes.

use crate::cache::{serve, x_cache};
use crate::support::{Gateway, Origin, Response};

const API_KEY: &str = "a-browser-app-key";
const APP: &str = "https://app.example.com";

fn gateway(origin: &Origin) -> Gateway {
    Gateway::start(&format!(
        "auth:\n  api_keys:\n    keys:\n      - {{ consumer: app, sha256: {} }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - name: api\n\
         \x20   match: {{ path_prefix: /api, methods: [GET, PUT] }}\n\
         \x20   upstream: app\n\
         \x20   auth: {{ api_key: true }}\n\
         \x20   cors: {{ allow_origins: [\"{APP}\", \"*.partner.test\"], allow_methods: [GET, PUT],\n\
         \x20           allow_headers: [X-API-Key, Content-Type], expose_headers: [X-Request-ID],\n\
         \x20           max_age: 10m, allow_credentials: true }}\n\
         \x20 - name: strict\n\
         \x20   match: {{ path_prefix: /strict }}\n\
         \x20   upstream: app\n\
         \x20   cors: {{ allow_origins: [\"{APP}\"], reject_unknown_origins: true }}\n\
         \x20 - name: public\n\
         \x20   match: {{ path_prefix: /public }}\n\
         \x20   upstream: app\n\
         \x20   cache: {{ ttl: 60s }}\n\
         \x20   cors: {{ allow_origins: [\"*\"] }}\n\
         \x20 - {{ name: plain, upstream: app }}\n",
        edgegate::auth::api_key::hash_key_hex(API_KEY),
        origin.addr
    ))
}

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str, headers: &str) -> Response {
    gw.request(
        "OPTIONS",
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", headers),
        ],
        b"",
    )
}

fn varies_on_origin(response: &Response) -> bool {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("vary"))
        .any(|(_, value)| {
            value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("origin"))
        })
}

#[test]
fn a_preflight_is_answered_before_authentication_and_never_forwarded() {
    let origin = Origin::start("app");
    let gw = gateway(&origin);

    // The route matches only GET and PUT: the preflight is routed as the PUT it announces.
    let allowed = preflight(&gw, "/api/items/7", APP, "PUT", "x-api-key, content-type");
    assert_eq!(allowed.status, 204, "{:?}", allowed.headers);
    assert!(allowed.body.is_empty());
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("X-API-Key, Content-Type")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(varies_on_origin(&allowed));
    assert!(allowed.header("x-request-id").is_some());

    let subdomain = preflight(
        &gw,
        "/api/items",
        "https://shop.partner.test",
        "GET",
        "x-api-key",
    );
    assert_eq!(
        subdomain.header("access-control-allow-origin"),
        Some("https://shop.partner.test")
    );

    // An origin not listed gets an answer the browser will refuse: no CORS fields.
    for stranger in [
        "https://evil.test",
        "https://partner.test",
        "http://app.example.com",
    ] {
        let refused = preflight(&gw, "/api/items", stranger, "PUT", "x-api-key");
        assert_eq!(refused.status, 204, "{stranger}");
        assert!(
            refused.header("access-control-allow-origin").is_none(),
            "{stranger}"
        );
        assert!(refused.header("access-control-allow-methods").is_none());
    }
    assert_eq!(origin.hits(), 0, "no preflight reached the backend");

    // An OPTIONS that is not a preflight, on a route without CORS, is proxied as ever.
    let plain = gw.request("OPTIONS", "/other", &[("Origin", APP)], b"");
    assert_eq!(plain.status, 200);
    assert_eq!(origin.hits(), 1);
}

#[test]
fn actual_requests_carry_the_routes_cors_fields_and_errors_stay_readable() {
    let origin = Origin::start("app");
    // The backend's own CORS fields give way to the route's.
    serve(
        &origin,
        "{}",
        &[
            ("Access-Control-Allow-Origin", "*"),
            ("Vary", "Accept-Encoding"),
        ],
    );
    let gw = gateway(&origin);
    let key = ("X-API-Key", API_KEY);

    let allowed = gw.request("GET", "/api/items", &[("Origin", APP), key], b"");
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        allowed.header("access-control-expose-headers"),
        Some("X-Request-ID")
    );
    assert!(
        allowed.header("access-control-allow-methods").is_none(),
        "preflight only"
    );
    assert!(varies_on_origin(&allowed));
    assert!(
        allowed
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("vary") && v == "Accept-Encoding"),
        "the backend's Vary stays: {:?}",
        allowed.headers
    );

    // Same-origin and non-browser requests: nothing to allow, but caches must know it varies.
    let no_origin = gw.request("GET", "/api/items", &[key], b"");
    assert_eq!(no_origin.status, 200);
    assert!(no_origin.header("access-control-allow-origin").is_none());
    assert!(varies_on_origin(&no_origin));

    // An unknown origin still gets its answer (the browser keeps it from the page) ...
    let stranger = gw.request(
        "GET",
        "/api/items",
        &[("Origin", "https://evil.test"), key],
        b"",
    );
    assert_eq!(stranger.status, 200);
    assert!(stranger.header("access-control-allow-origin").is_none());

    // ... and the gateway's own errors carry the fields, so the page can read why.
    let unauthorized = gw.request("GET", "/api/items", &[("Origin", APP)], b"");
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        unauthorized.header("access-control-allow-origin"),
        Some(APP)
    );
    assert!(varies_on_origin(&unauthorized));
    assert_eq!(unauthorized.json()["error"], "unauthorized");
    assert_eq!(origin.hits(), 3);
}

#[test]
fn reject_unknown_origins_refuses_them_before_the_backend() {
    let origin = Origin::start("app");
    let gw = gateway(&origin);
    let refused = gw.request("GET", "/strict/x", &[("Origin", "https://evil.test")], b"");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "forbidden");
    assert!(refused.header("access-control-allow-origin").is_none());
    let refused_preflight = preflight(&gw, "/strict/x", "https://evil.test", "GET", "");
    assert_eq!(refused_preflight.status, 403);
    assert_eq!(origin.hits(), 0);

    let allowed = gw.request("GET", "/strict/x", &[("Origin", APP)], b"");
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(allowed.header("access-control-allow-credentials"), None);
    let same_origin = gw.get("/strict/x");
    assert_eq!(
        same_origin.status, 200,
        "no Origin is not an unknown origin"
    );
    assert_eq!(origin.hits(), 2);
}

#[test]
fn cached_responses_get_cors_fields_per_request_and_vary_on_origin() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "shared",
        &[("Cache-Control", "public, max-age=60")],
    );
    let gw = gateway(&origin);
    let first = gw.request("GET", "/public/doc", &[("Origin", APP)], b"");
    assert_eq!(
        (x_cache(&first), first.header("access-control-allow-origin")),
        ("MISS", Some("*"))
    );
    for from in [Some("https://other.test"), None] {
        let headers: Vec<(&str, &str)> = from.iter().map(|o| ("Origin", *o)).collect();
        let hit = gw.request("GET", "/public/doc", &headers, b"");
        assert_eq!(x_cache(&hit), "HIT");
        assert_eq!(hit.text(), "shared");
        assert!(varies_on_origin(&hit), "{:?}", hit.headers);
        assert_eq!(
            hit.header("access-control-allow-origin"),
            from.map(|_| "*"),
            "{from:?}"
        );
    }
    // Answered through Pingora's cache phases too (a condition that does not match).
    let phased = gw.request(
        "GET",
        "/public/doc",
        &[("Origin", APP), ("If-None-Match", "\"x\"")],
        b"",
    );
    assert_eq!(x_cache(&phased), "HIT");
    assert_eq!(phased.header("access-control-allow-origin"), Some("*"));
    assert!(varies_on_origin(&phased));
    assert_eq!(origin.hits(), 1, "one entry for every origin");
}
