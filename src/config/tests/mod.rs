//! Table-driven tests of loading a configuration from a string: every validation message with
//! its position, the defaults of every section, and every example config the project ships.
//! Each case gives only the sections it is about; the minimal listeners, upstreams and routes
//! below fill in the rest, after the case's text, so a case's line numbers count from its own
//! first line.

mod aggregate;
mod auth;
mod cache;
mod documented;
mod examples;
mod listeners;
mod ratelimit;
mod routes;
mod server;
mod tracing;
mod upstreams;

use super::{from_str, ConfigError, Model};
use std::path::Path;

const MINIMAL: [(&str, &str); 3] = [
    (
        "listeners:",
        "listeners:\n  - { name: main, address: 127.0.0.1:18080 }\n",
    ),
    (
        "upstreams:",
        "upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:19000 }]\n",
    ),
    (
        "routes:",
        "routes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: app\n",
    ),
];

/// `sections` followed by whichever minimal section it does not give itself.
fn document(sections: &str) -> String {
    let mut text = sections.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (key, minimal) in MINIMAL {
        if !sections.lines().any(|line| line.starts_with(key)) {
            text.push_str(minimal);
        }
    }
    text
}

fn load(sections: &str) -> Result<Model, ConfigError> {
    from_str(&document(sections), Path::new("test.yaml"))
}

/// The model `sections` loads to; fails the test with the problems if it does not load.
fn model(sections: &str) -> Model {
    match load(sections) {
        Ok(model) => model,
        Err(error) => panic!(
            "expected to load, got:\n{error}\n--- document:\n{}",
            document(sections)
        ),
    }
}

/// Every error loading `sections` gives, each as `line:column key: message`.
fn problems(sections: &str) -> Vec<String> {
    match load(sections) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems
            .iter()
            .map(|p| format!("{}:{} {}: {}", p.line, p.column, p.key, p.message))
            .collect(),
        Err(ConfigError::Syntax {
            line,
            column,
            message,
            ..
        }) => vec![format!("{line}:{column} {message}")],
        Err(other) => vec![other.to_string()],
    }
}

/// Checks a table of (sections, the exact problems they give, in order).
fn expect_problems(cases: &[(&str, &[&str])]) {
    let mut wrong = Vec::new();
    for (sections, expected) in cases {
        let actual = problems(sections);
        if let Ok(record) = std::env::var("EDGEGATE_RECORD_PROBLEMS") {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(record)
                .unwrap();
            writeln!(file, "{sections:?}\t{actual:?}").unwrap();
        }
        if actual != *expected {
            wrong.push(format!(
                "--- for:\n{sections}\n--- expected: {expected:#?}\n--- got: {actual:#?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A directory of files for cases that name files (keys, certificates, secrets); removed on drop.
struct Files {
    dir: std::path::PathBuf,
}

impl Files {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("edgegate-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    /// Writes `name` and returns its path as YAML-ready text.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// A self-signed certificate for `names` and its key, made with the openssl crate.
    fn certificate(&self, stem: &str, names: &[&str]) -> (String, String) {
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let cert = crate::tls::testing::self_signed(&key, names, 90)
            .to_pem()
            .unwrap();
        (
            self.write(&format!("{stem}.crt"), cert),
            self.write(
                &format!("{stem}.key"),
                key.private_key_to_pem_pkcs8().unwrap(),
            ),
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_minimal_document_loads() {
    let model = model("");
    assert_eq!(model.listeners.len(), 1);
    assert_eq!(model.upstreams.len(), 1);
    assert_eq!(model.routes.len(), 1);
    assert_eq!(model.source, Path::new("test.yaml"));
}

#[test]
fn syntax_and_shape_errors_name_their_position() {
    expect_problems(&[
        ("server:\n  threds: 4\n", &["2:3 server: unknown field `threds`, expected one of `threads`, `pid_file`, `upgrade_sock`, `grace_period`, `shutdown_timeout`, `keepalive_timeout`, `max_request_header_size`, `trusted_proxies`, `header_read_timeout`, `body_read_timeout`, `merge_slashes`, `path_encoded_slashes`"]),
        ("server:\n  threads: four\n", &["2:12 server.threads: invalid type: string \"four\", expected usize"]),
        ("listeners: {}\n", &["1:12 listeners: invalid type: map, expected a sequence"]),
        ("server:\n  threads: 2\n threads: 3\n", &["3:2 did not find expected key"]),
        ("routes:\n  - match: { path_prefix: / }\n    upstream: app\n", &["2:5 routes[0]: missing field `name`"]),
    ]);
}

#[test]
fn files_too_large_or_not_utf8_are_refused_before_parsing() {
    let files = Files::new("read");
    let big = files.write("big.yaml", vec![b'#'; super::MAX_CONFIG_BYTES + 1]);
    let error = super::load(Path::new(&big)).unwrap_err().to_string();
    assert!(
        error.ends_with("bytes is larger than the 4194304-byte limit for a config file"),
        "{error}"
    );
    let binary = files.write("binary.yaml", b"server: \xff\n");
    let error = super::load(Path::new(&binary)).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{binary}:1:1: the file is not UTF-8")),
        "{error}"
    );
    let missing = files.dir.join("missing.yaml");
    let error = super::load(&missing).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{error}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let found = problems("server:\n  threads: 0\n  grace_period: soon\n");
    assert_eq!(found.len(), 2, "{found:?}");
}
