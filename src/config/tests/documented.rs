//! Every YAML example in README.md and docs/ loads, so a documented example cannot rot.
//! An example is a fragment: the sections it leaves out come from a small context (a listener,
//! the pools the examples name, a route), and the files and hosts it names stand for real ones
//! (a generated certificate and key, loopback addresses).

use super::*;
use std::path::PathBuf;

/// The sections an example may leave out, with the pools the examples refer to.
const CONTEXT: [(&str, &str); 3] = [
    (
        "listeners:",
        "listeners:\n  - { name: main, address: 127.0.0.1:18080 }\n",
    ),
    (
        "upstreams:",
        "upstreams:\n  users: { targets: [{ address: 127.0.0.1:19001 }] }\n  catalog: { targets: [{ address: 127.0.0.1:19002 }] }\n",
    ),
    (
        "routes:",
        "routes:\n  - { name: r, match: { path_prefix: / }, upstream: users }\n",
    ),
];

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

/// (line of the fence, text) of every ```yaml block.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```yaml") => {
                current = Some((index + 1, String::new()))
            }
            (Some(_), fence) if fence.starts_with("```") => blocks.extend(current.take()),
            (Some((_, block)), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The example with its files made real and its private host names on loopback.
fn with_stand_ins(block: &str, files: &Files, cert: &str, key: &str) -> String {
    let mut text = String::with_capacity(block.len());
    let mut rest = block;
    while let Some(at) = rest.find("/etc/edgegate/") {
        text.push_str(&rest[..at]);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']'))
            .map_or(rest.len(), |end| at + end);
        let path = &rest[at..end];
        let name = path.replace('/', "_");
        let contents = if path.ends_with(".key") { key } else { cert };
        text.push_str(&files.write(&name, std::fs::read(contents).unwrap()));
        rest = &rest[end..];
    }
    text.push_str(rest);
    text.replace("users-b.internal", "127.0.0.1")
}

fn document_of(example: &str) -> String {
    let mut text = example.to_string();
    for (key, section) in CONTEXT {
        if !example.lines().any(|line| line.starts_with(key)) {
            text.push_str(section);
        }
    }
    text
}

#[test]
fn every_documented_yaml_example_loads() {
    let files = Files::new("documented");
    let (cert, key) = files.certificate("example", &["api.example.com", "www.example.com"]);
    let mut count = 0;
    let mut failures = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        for (line, block) in yaml_blocks(&text) {
            count += 1;
            let example = with_stand_ins(&block, &files, &cert, &key);
            if let Err(error) = from_str(&document_of(&example), Path::new("example.yaml")) {
                failures.push(format!("{}:{line}:\n{error}", document.display()));
            }
        }
    }
    assert!(
        count >= 7,
        "only {count} YAML examples found: is the scan broken?"
    );
    assert!(
        failures.is_empty(),
        "examples that do not load:\n{}",
        failures.join("\n")
    );
}
