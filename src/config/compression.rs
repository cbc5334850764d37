//! Validation of a route's `compression` section into a [`CompressionPolicy`].

use super::check::Checker;
use super::raw::RawCompression;
use crate::compression::{Coding, CompressionPolicy, MediaPattern, DEFAULT_CONTENT_TYPES};

/// The codings offered when `algorithms` is not given, best first.
const DEFAULT_CODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

/// The route's compression policy (reporting what is wrong with it).
pub(super) fn compression_policy(
    check: &mut Checker,
    key: &str,
    raw: RawCompression,
) -> CompressionPolicy {
    let RawCompression {
        algorithms,
        min_size,
        content_types,
        level,
    } = raw;
    let mut codings: Vec<Coding> = Vec::new();
    match algorithms {
        None => codings.extend(DEFAULT_CODINGS),
        Some(names) => {
            if names.is_empty() {
                check.fail(
                    format!("{key}.algorithms"),
                    "list at least one of zstd, br, gzip (or leave `compression` out)",
                );
            }
            for (index, name) in names.iter().enumerate() {
                let field = format!("{key}.algorithms[{index}]");
                match coding_named(name) {
                    Some(coding) if codings.contains(&coding) => {
                        check.fail(field, format!("`{name}` is listed twice"))
                    }
                    Some(coding) => codings.push(coding),
                    None => check.fail(field, format!("`{name}` is not one of: zstd, br, gzip")),
                }
            }
        }
    }
    for (name, value) in &level {
        let field = format!("{key}.level.{name}");
        match coding_named(name) {
            None => check.fail(field, format!("`{name}` is not one of: zstd, br, gzip")),
            Some(coding) if !codings.contains(&coding) => check.fail(
                field,
                format!(
                    "`{name}` is not among the route's algorithms, so its level would do nothing"
                ),
            ),
            Some(coding) if !coding.levels().contains(value) => check.fail(
                field,
                format!(
                    "{name} levels run from {} to {}",
                    coding.levels().start(),
                    coding.levels().end()
                ),
            ),
            Some(_) => {}
        }
    }
    let codings = codings
        .into_iter()
        .map(|coding| {
            let chosen = level
                .iter()
                .find(|(name, _)| coding_named(name) == Some(coding))
                .map(|(_, value)| *value);
            (coding, chosen.unwrap_or(coding.default_level()))
        })
        .collect();
    let min_size = check.size(format!("{key}.min_size"), min_size.as_deref(), 1024);
    let content_types = match content_types {
        None => DEFAULT_CONTENT_TYPES
            .iter()
            .filter_map(|text| MediaPattern::parse(text))
            .collect(),
        Some(texts) => {
            if texts.is_empty() {
                check.fail(
                    format!("{key}.content_types"),
                    "list at least one media type (or leave the key out for the defaults)",
                );
            }
            texts
                .iter()
                .enumerate()
                .filter_map(|(index, text)| {
                    let parsed = MediaPattern::parse(text);
                    if parsed.is_none() {
                        check.fail(
                            format!("{key}.content_types[{index}]"),
                            format!("`{text}` is not a media type (type/subtype, type/* or type/*+suffix)"),
                        );
                    }
                    parsed
                })
                .collect()
        }
    };
    CompressionPolicy {
        codings,
        min_size,
        content_types,
    }
}

fn coding_named(name: &str) -> Option<Coding> {
    Coding::ALL
        .iter()
        .find(|(_, token)| *token == name)
        .map(|(coding, _)| *coding)
}
