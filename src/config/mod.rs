//! Configuration: read -> size guard -> parse (serde, unknown keys rejected) -> validate -> [`Model`].
//! Every error names file:line:column and the key path.

mod aggregate;
mod auth;
mod cache;
mod check;
mod compression;
mod cors;
#[cfg(test)]
mod fuzz;
mod listeners;
mod matching;
mod model;
mod ratelimit;
mod raw;
mod routes;
mod server;
mod source_map;
#[cfg(test)]
mod tests;
mod tracing;
pub mod units;
mod upstreams;
mod validate;

pub use model::*;

use source_map::SourceMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Larger files are refused before parsing: a gateway config is never this big, a mistake might be.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is larger than the {limit}-byte limit for a config file")]
    TooLarge {
        path: PathBuf,
        size: usize,
        limit: usize,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One validation failure: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The key path, e.g. `routes[2].upstream`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Loads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Model, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|error| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("the file is not UTF-8: {error}"),
    })?;
    from_str(&text, path)
}

/// Parses and validates YAML `text`; `path` is only used in messages and the model.
pub fn from_str(text: &str, path: &Path) -> Result<Model, ConfigError> {
    let raw: raw::RawConfig =
        serde_yaml::from_str(text).map_err(|error| syntax_error(&error, path))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let source_hash = hasher.finish();
    validate::validate(raw, path, source_hash).map_err(|problems| {
        let map = SourceMap::build(text);
        ConfigError::Invalid(
            problems
                .into_iter()
                .map(|(key, message)| {
                    let position = map.locate(&key);
                    Problem {
                        path: path.to_path_buf(),
                        line: position.map_or(1, |p| p.line),
                        column: position.map_or(1, |p| p.column),
                        key,
                        message,
                    }
                })
                .collect(),
        )
    })
}

fn syntax_error(error: &serde_yaml::Error, path: &Path) -> ConfigError {
    let (line, column) = error
        .location()
        .map_or((1, 1), |location| (location.line(), location.column()));
    let mut message = error.to_string();
    // serde_yaml appends its own " at line X column Y"; the prefix already says where.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}
