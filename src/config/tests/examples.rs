//! Every configuration the project ships loads.

use super::*;

#[test]
fn shipped_configs_load() {
    for (name, text) in [
        (
            "conf/edgegate.yaml",
            include_str!("../../../conf/edgegate.yaml"),
        ),
        (
            "benches/proxybench.yaml",
            include_str!("../../../benches/proxybench.yaml"),
        ),
        (
            "benches/proxybench-cache.yaml",
            include_str!("../../../benches/proxybench-cache.yaml"),
        ),
        (
            "benches/proxybench-resilience.yaml",
            include_str!("../../../benches/proxybench-resilience.yaml"),
        ),
    ] {
        if let Err(error) = from_str(text, Path::new(name)) {
            panic!("{name} does not load:\n{error}");
        }
    }
}

#[test]
fn bench_configs_with_a_secret_from_the_environment_load() {
    std::env::set_var(
        "EDGEGATE_BENCH_JWT_SECRET",
        "a-bench-secret-of-at-least-32-bytes!",
    );
    for (name, text) in [
        (
            "benches/proxybench-jwt.yaml",
            include_str!("../../../benches/proxybench-jwt.yaml"),
        ),
        (
            "benches/proxybench-full.yaml",
            include_str!("../../../benches/proxybench-full.yaml"),
        ),
    ] {
        if let Err(error) = from_str(text, Path::new(name)) {
            panic!("{name} does not load:\n{error}");
        }
    }
}

#[test]
fn the_tls_example_loads_with_its_demo_certificate() {
    let files = Files::new("tls-example");
    let (cert, key) = files.certificate("localhost", &["localhost"]);
    let text = include_str!("../../../conf/edgegate-tls.yaml")
        .replace("target/demo-tls/localhost.pem", &cert)
        .replace("target/demo-tls/localhost.key", &key);
    assert!(
        text.contains(&cert),
        "the example no longer names the demo certificate"
    );
    if let Err(error) = from_str(&text, Path::new("conf/edgegate-tls.yaml")) {
        panic!("conf/edgegate-tls.yaml does not load:\n{error}");
    }
}
