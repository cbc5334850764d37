//! Request path normalization (RFC 3986 §6.2.2 and §5.2.4), as nginx and Envoy do before matching:
//! the path the router matches is the path the backend receives, so `/public/../admin`,
//! `//admin` or `/%61dmin` cannot reach `/admin` past the admin route's checks.
//!
//! An already normal path (the common case) is recognised by one scan and never copied.

use crate::config::{EncodedSlashes, PathRules};

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%2F` or `%5C` (or a raw `\`) while `path_encoded_slashes: reject`.
    EncodedSlash,
    /// A space or control byte, raw or encoded (`%00`..`%1F`, `%7F`).
    ControlByte,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `..` would climb above the root.
    AboveRoot,
    /// `..;x` or `.;x`: a dot segment with path parameters, which servlet containers resolve as `..`.
    DotSegmentParameters,
    /// The path does not start with `/`.
    NotAbsolute,
}

impl PathError {
    /// A sentence for the client.
    pub fn message(self) -> &'static str {
        match self {
            PathError::EncodedSlash => {
                "the request path contains an encoded slash or backslash (%2F, %5C) or a backslash"
            }
            PathError::ControlByte => "the request path contains a space or a control character",
            PathError::BadEscape => "the request path contains a malformed percent-encoding",
            PathError::AboveRoot => "the request path climbs above the root with `..`",
            PathError::DotSegmentParameters => {
                "the request path contains a dot segment with parameters (`..;`)"
            }
            PathError::NotAbsolute => "the request path does not start with /",
        }
    }
}

/// How a byte of a path is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Kept as is: unreserved, sub-delims, `:`, `@` and `/`.
    Plain,
    /// `%`: an escape follows.
    Percent,
    /// A raw `\`.
    Backslash,
    /// Space and control bytes.
    Control,
    /// Anything else (`"`, `<`, `{`, bytes >= 0x80 ...): percent-encoded.
    Encode,
}

const fn classify(byte: u8) -> Class {
    match byte {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => Class::Plain,
        b'-' | b'.' | b'_' | b'~' => Class::Plain,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => Class::Plain,
        b':' | b'@' | b'/' => Class::Plain,
        b'%' => Class::Percent,
        b'\\' => Class::Backslash,
        0..=0x20 | 0x7f => Class::Control,
        _ => Class::Encode,
    }
}

static CLASSES: [Class; 256] = {
    let mut table = [Class::Encode; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = classify(byte as u8);
        byte += 1;
    }
    table
};

/// Normalizes `path` (without its query); `Ok(None)` when it is already normal.
pub fn normalize(path: &[u8], rules: PathRules) -> Result<Option<Vec<u8>>, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path, rules) {
        return Ok(None);
    }
    rewrite(path, rules).map(Some)
}

/// One pass: only plain bytes and canonical escapes, no empty segment (when merging), no dot
/// segment.
fn is_normal(path: &[u8], rules: PathRules) -> bool {
    let mut previous = 0u8;
    let mut index = 0;
    while index < path.len() {
        let byte = path[index];
        match CLASSES[usize::from(byte)] {
            Class::Plain => {
                if previous == b'/' {
                    if byte == b'/' && rules.merge_slashes {
                        return false;
                    }
                    if byte == b'.' && is_dot_segment_start(&path[index..]) {
                        return false;
                    }
                }
                previous = byte;
            }
            Class::Percent if is_canonical_escape(&path[index + 1..], rules) => {
                index += 2;
                previous = b'%';
            }
            _ => return false,
        }
        index += 1;
    }
    true
}

/// `%XY` as the rewrite writes it: upper-case hex, not an unreserved character (those are
/// decoded), not a control byte, a slash or backslash only when they are kept.
fn is_canonical_escape(digits: &[u8], rules: PathRules) -> bool {
    let upper = |byte: u8| matches!(byte, b'0'..=b'9' | b'A'..=b'F');
    let [high, low, ..] = *digits else {
        return false;
    };
    if !upper(high) || !upper(low) {
        return false;
    }
    let decoded = hex_value(high).unwrap_or(0) << 4 | hex_value(low).unwrap_or(0);
    match decoded {
        _ if is_unreserved(decoded) => false,
        0..=0x1f | 0x7f => false,
        b'/' | b'\\' => rules.encoded_slashes == EncodedSlashes::Keep,
        _ => true,
    }
}

/// `segment` starts right after a `/`: is it `.`, `..`, or one of them followed by `;`?
fn is_dot_segment_start(segment: &[u8]) -> bool {
    let dots = if segment.starts_with(b"..") { 2 } else { 1 };
    matches!(segment.get(dots), None | Some(b'/' | b';'))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn push_escaped(out: &mut Vec<u8>, byte: u8) {
    let [high, low] = crate::fastfmt::hex_pair(byte, crate::fastfmt::UPPER_HEX);
    out.extend_from_slice(&[b'%', high, low]);
}

/// Appends `raw` (one segment, no `/`) to `out` in canonical form: unreserved characters
/// decoded, every other escape upper-case, bytes outside the path grammar encoded.
fn canonical_segment(raw: &[u8], out: &mut Vec<u8>, rules: PathRules) -> Result<(), PathError> {
    let mut index = 0;
    while index < raw.len() {
        let byte = raw[index];
        match CLASSES[usize::from(byte)] {
            Class::Plain => out.push(byte),
            Class::Percent => {
                let high = raw.get(index + 1).copied().and_then(hex_value);
                let low = raw.get(index + 2).copied().and_then(hex_value);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(PathError::BadEscape);
                };
                let decoded = high << 4 | low;
                match decoded {
                    _ if is_unreserved(decoded) => out.push(decoded),
                    0..=0x1f | 0x7f => return Err(PathError::ControlByte),
                    b'/' | b'\\' if rules.encoded_slashes == EncodedSlashes::Reject => {
                        return Err(PathError::EncodedSlash)
                    }
                    _ => push_escaped(out, decoded),
                }
                index += 2;
            }
            Class::Backslash => match rules.encoded_slashes {
                EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                EncodedSlashes::Keep => push_escaped(out, byte),
            },
            Class::Control => return Err(PathError::ControlByte),
            Class::Encode => push_escaped(out, byte),
        }
        index += 1;
    }
    Ok(())
}

/// The slow path: canonical segments, dot segments resolved, empty ones merged.
fn rewrite(path: &[u8], rules: PathRules) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len() + 8);
    // Where each kept segment starts in `out` (its `/` included), to pop on `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push(b'/');
        canonical_segment(raw, &mut out, rules)?;
        let segment = &out[start + 1..];
        let parameterless = segment.split(|&b| b == b';').next().unwrap_or(segment);
        let is_dot = parameterless == b"." || parameterless == b"..";
        if is_dot && parameterless.len() != segment.len() {
            return Err(PathError::DotSegmentParameters);
        }
        trailing_slash = false;
        if segment == b"." {
            out.truncate(start);
            trailing_slash = last;
        } else if segment == b".." {
            out.truncate(start);
            let parent = starts.pop().ok_or(PathError::AboveRoot)?;
            out.truncate(parent);
            trailing_slash = last;
        } else if segment.is_empty() && (last || rules.merge_slashes) {
            out.truncate(start);
            trailing_slash = last;
        } else {
            starts.push(start);
        }
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGE: PathRules = PathRules {
        merge_slashes: true,
        encoded_slashes: EncodedSlashes::Reject,
    };
    const KEEP: PathRules = PathRules {
        merge_slashes: false,
        encoded_slashes: EncodedSlashes::Keep,
    };

    fn norm(path: &str, rules: PathRules) -> Result<String, PathError> {
        normalize(path.as_bytes(), rules).map(|rewritten| match rewritten {
            Some(bytes) => String::from_utf8(bytes).unwrap(),
            None => path.to_string(),
        })
    }

    #[test]
    fn normal_paths_are_left_alone_without_copying() {
        for path in [
            "/",
            "/a",
            "/a/b/c",
            "/a/",
            "/api/v1/users/7",
            "/a.b/c..d/.e/..f/...",
            "/a;b=c/d:e@f/~x-y_z/!$&'()*+,=",
        ] {
            assert_eq!(normalize(path.as_bytes(), MERGE), Ok(None), "{path}");
        }
        assert_eq!(normalize(b"//a", KEEP), Ok(None), "no merging asked for");
        assert_eq!(
            normalize(b"/a%20b/%E2%82%AC", MERGE),
            Ok(None),
            "canonical escapes"
        );
        assert_eq!(normalize(b"/a%2Fb", KEEP), Ok(None), "kept slashes");
    }

    #[test]
    fn dot_segments_are_resolved_per_rfc_3986() {
        // RFC 3986 section 5.2.4 and its examples, in a request path.
        let cases = [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/public/../admin", "/admin"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/./a", "/a"),
            ("/.", "/"),
            ("/a/./b/", "/a/b/"),
        ];
        for (input, expected) in cases {
            assert_eq!(norm(input, MERGE).as_deref(), Ok(expected), "{input}");
        }
        assert_eq!(norm("/..", MERGE), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../..", MERGE), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../../b", MERGE), Err(PathError::AboveRoot));
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_dot_segments_are_resolved() {
        assert_eq!(norm("/%61dmin", MERGE).as_deref(), Ok("/admin"));
        assert_eq!(norm("/public/%2e%2e/admin", MERGE).as_deref(), Ok("/admin"));
        assert_eq!(norm("/public/%2E./admin", MERGE).as_deref(), Ok("/admin"));
        assert_eq!(norm("/%7euser/%41", MERGE).as_deref(), Ok("/~user/A"));
        assert_eq!(
            norm("/a%3ab/%e2%82%ac", MERGE).as_deref(),
            Ok("/a%3Ab/%E2%82%AC"),
            "other escapes stay, upper-cased"
        );
        assert_eq!(norm("/a%20b", MERGE).as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn slashes_are_merged_unless_told_not_to() {
        assert_eq!(norm("//admin", MERGE).as_deref(), Ok("/admin"));
        assert_eq!(norm("/a///b//", MERGE).as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/a//../b", MERGE).as_deref(), Ok("/b"));
        assert_eq!(norm("//a/./b", KEEP).as_deref(), Ok("//a/b"));
        assert_eq!(norm("/a//../b", KEEP).as_deref(), Ok("/a/b"), "RFC 3986");
    }

    #[test]
    fn encoded_slashes_backslashes_and_controls_are_refused_or_kept_encoded() {
        for path in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a%5cb",
            "/a\\b",
            "/..%2Fadmin",
        ] {
            assert_eq!(norm(path, MERGE), Err(PathError::EncodedSlash), "{path}");
        }
        assert_eq!(norm("/a%2fb", KEEP).as_deref(), Ok("/a%2Fb"));
        assert_eq!(norm("/a\\b", KEEP).as_deref(), Ok("/a%5Cb"));
        assert_eq!(
            norm("/x/..%2F..%2Fadmin", KEEP).as_deref(),
            Ok("/x/..%2F..%2Fadmin"),
            "kept encoded, so never a separator"
        );
        for path in ["/a%00", "/a%0a", "/a%7F", "/a b", "/a\tb", "/a\x01"] {
            assert_eq!(norm(path, KEEP), Err(PathError::ControlByte), "{path:?}");
        }
        for path in ["/a%", "/a%4", "/a%zz", "/%g1"] {
            assert_eq!(norm(path, MERGE), Err(PathError::BadEscape), "{path}");
        }
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for path in [
            "/public/..;/admin",
            "/a/.;x/b",
            "/%2e%2e;jsessionid=1/admin",
            "/..;",
        ] {
            assert_eq!(
                norm(path, MERGE),
                Err(PathError::DotSegmentParameters),
                "{path}"
            );
        }
        assert_eq!(norm("/a;b/...;c", MERGE).as_deref(), Ok("/a;b/...;c"));
    }

    #[test]
    fn bytes_outside_the_path_grammar_are_percent_encoded() {
        assert_eq!(
            norm("/caf\u{e9}/{x}", MERGE).as_deref(),
            Ok("/caf%C3%A9/%7Bx%7D")
        );
        let raw = b"/caf\xe9";
        assert_eq!(
            normalize(raw, MERGE).unwrap().unwrap(),
            b"/caf%E9".to_vec(),
            "not UTF-8"
        );
        assert_eq!(norm("relative", MERGE), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normalizing_is_idempotent() {
        let inputs = [
            "/a/b/../c/%2e/%61%62",
            "//x//y/.././z/",
            "/%e2%82%ac/%7b/",
            "/a/b/c/./../../g",
        ];
        for rules in [MERGE, KEEP] {
            for input in inputs {
                let once = norm(input, rules).unwrap();
                assert_eq!(
                    normalize(once.as_bytes(), rules),
                    Ok(None),
                    "{input} -> {once} is not normal"
                );
            }
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn rules() -> impl Strategy<Value = PathRules> {
            (any::<bool>(), any::<bool>()).prop_map(|(merge_slashes, keep)| PathRules {
                merge_slashes,
                encoded_slashes: if keep {
                    EncodedSlashes::Keep
                } else {
                    EncodedSlashes::Reject
                },
            })
        }

        /// Paths made of the pieces that matter (dots, slashes, escapes, odd bytes), and raw bytes.
        fn path() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    "/", "//", ".", "..", "/./", "/../", "%2e", "%2E%2e", "%2F", "%5c", "\\", "%",
                    "%4", "%41", "%zz", "%00", "%7f", ";", "..;", "a", "Z", "~", "%C3%A9", "é",
                    " ", "?", "#", "%25",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 1..4),
            ];
            prop::collection::vec(piece, 0..16).prop_map(|pieces| {
                let mut path = vec![b'/'];
                pieces.into_iter().for_each(|p| path.extend(p));
                path
            })
        }

        proptest! {
            #[test]
            fn fuzz_normalizing_twice_is_normalizing_once(path in path(), rules in rules()) {
                match normalize(&path, rules) {
                    Ok(None) => {}
                    Ok(Some(normal)) => {
                        prop_assert_eq!(normal.first(), Some(&b'/'));
                        prop_assert_eq!(normalize(&normal, rules), Ok(None), "{:?}", String::from_utf8_lossy(&normal));
                        prop_assert!(normal.iter().all(|b| b.is_ascii_graphic()));
                    }
                    Err(_) => {}
                }
            }

            #[test]
            fn fuzz_normalize_never_panics_on_any_bytes(path in prop::collection::vec(any::<u8>(), 0..64), rules in rules()) {
                let _ = normalize(&path, rules);
            }
        }
    }
}
