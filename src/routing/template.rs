//! `match.path_template`: a path whose segments are literal or named (`/users/{id}/dashboard`).
//! A named segment matches exactly one non-empty segment; aggregation parts read it as
//! `{path.id}`. Matching walks the segments once and allocates nothing.

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: Box<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Named(Box<str>),
}

/// Why a path template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathTemplateError {
    #[error("must start with /")]
    NoLeadingSlash,
    #[error(
        "segment `{0}`: a named segment is a whole segment `{{name}}` of letters, digits and `_`"
    )]
    BadSegment(String),
    #[error("`{{{0}}}` names two segments")]
    Duplicate(String),
    #[error("has no named segment; use path_exact")]
    NothingNamed,
}

impl PathTemplate {
    /// Parses `/a/{name}/b`.
    pub fn parse(text: &str) -> Result<Self, PathTemplateError> {
        let rest = text
            .strip_prefix('/')
            .ok_or(PathTemplateError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        for segment in rest.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let word = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !word {
                    return Err(PathTemplateError::BadSegment(segment.to_string()));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Named(n) if &**n == name))
                {
                    return Err(PathTemplateError::Duplicate(name.to_string()));
                }
                segments.push(Segment::Named(name.into()));
            } else if segment.contains(['{', '}']) {
                return Err(PathTemplateError::BadSegment(segment.to_string()));
            } else {
                segments.push(Segment::Literal(segment.into()));
            }
        }
        if !segments.iter().any(|s| matches!(s, Segment::Named(_))) {
            return Err(PathTemplateError::NothingNamed);
        }
        Ok(PathTemplate {
            text: text.into(),
            segments: segments.into(),
        })
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal segments before the first named one (what the route trie files it under).
    pub fn literal_prefix(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map_while(|segment| match segment {
            Segment::Literal(text) => Some(&**text),
            Segment::Named(_) => None,
        })
    }

    /// The names of its segments, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Named(name) => Some(&**name),
            Segment::Literal(_) => None,
        })
    }

    /// Whether `path` has the template's shape.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| false).is_some()
    }

    /// The segment of `path` named `name` (`None` when the path does not match).
    pub fn capture<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let mut found = None;
        self.walk(path, |named, value| {
            if named == name {
                found = Some(value);
                true
            } else {
                false
            }
        })?;
        found
    }

    /// Walks `path` against the segments, calling `named` for each named one until it returns
    /// true; `None` when the path does not match.
    fn walk<'p>(&self, path: &'p str, mut named: impl FnMut(&str, &'p str) -> bool) -> Option<()> {
        let mut rest = path.strip_prefix('/')?;
        let mut stop = false;
        for (index, segment) in self.segments.iter().enumerate() {
            let last = index + 1 == self.segments.len();
            let (value, after) = match rest.find('/') {
                Some(end) if !last => (&rest[..end], &rest[end + 1..]),
                Some(_) => return None,
                None if last => (rest, ""),
                None => return None,
            };
            match segment {
                Segment::Literal(text) if **text == *value => {}
                Segment::Literal(_) => return None,
                Segment::Named(_) if value.is_empty() => return None,
                Segment::Named(name) => {
                    if !stop {
                        stop = named(name, value);
                    }
                }
            }
            rest = after;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_segments_match_exactly_one_non_empty_segment() {
        let t = PathTemplate::parse("/api/v1/users/{id}/dashboard").unwrap();
        assert!(t.matches("/api/v1/users/42/dashboard"));
        assert_eq!(t.capture("/api/v1/users/42/dashboard", "id"), Some("42"));
        assert!(!t.matches("/api/v1/users//dashboard"));
        assert!(!t.matches("/api/v1/users/42/7/dashboard"));
        assert!(!t.matches("/api/v1/users/42/dashboard/"));
        assert!(!t.matches("/api/v1/users/42"));
        assert!(!t.matches("/api/v2/users/42/dashboard"));
        assert_eq!(
            t.literal_prefix().collect::<Vec<_>>(),
            ["api", "v1", "users"]
        );
    }

    #[test]
    fn several_names_and_a_trailing_one() {
        let t = PathTemplate::parse("/orgs/{org}/repos/{repo}").unwrap();
        let path = "/orgs/acme/repos/gate";
        assert_eq!(t.capture(path, "org"), Some("acme"));
        assert_eq!(t.capture(path, "repo"), Some("gate"));
        assert_eq!(t.capture(path, "other"), None);
        assert!(!t.matches("/orgs/acme/repos/"));
        assert_eq!(t.names().collect::<Vec<_>>(), ["org", "repo"]);
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert_eq!(
            PathTemplate::parse("users/{id}"),
            Err(PathTemplateError::NoLeadingSlash)
        );
        assert!(matches!(
            PathTemplate::parse("/users/x{id}"),
            Err(PathTemplateError::BadSegment(_))
        ));
        assert!(matches!(
            PathTemplate::parse("/users/{i-d}"),
            Err(PathTemplateError::BadSegment(_))
        ));
        assert_eq!(
            PathTemplate::parse("/a/{id}/b/{id}"),
            Err(PathTemplateError::Duplicate("id".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/b"),
            Err(PathTemplateError::NothingNamed)
        );
    }
}
