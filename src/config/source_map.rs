//! Where each key of a YAML document stands, so validation errors can name file:line:column.
//!
//! serde_yaml reports positions only for syntax and type errors; checks that run after
//! deserialisation (an unknown upstream, a bad CIDR) look their key path up here.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Key path (`routes[2].match.path_prefix`) -> position of that key (or sequence item).
#[derive(Debug, Default)]
pub struct SourceMap {
    positions: HashMap<String, Position>,
}

impl SourceMap {
    /// Indexes `text`; a document that does not parse yields an empty map (serde_yaml reports the syntax error).
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return SourceMap::default();
        }
        SourceMap {
            positions: builder.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> Option<Position> {
        let mut candidate = path;
        loop {
            if let Some(position) = self.positions.get(candidate) {
                return Some(*position);
            }
            let cut = candidate.rfind(['.', '['])?;
            candidate = &candidate[..cut];
        }
    }
}

enum Frame {
    /// `locate_item`: the mapping is a sequence item whose position is its first key's
    /// (the parser marks a block mapping's start after that key).
    Mapping {
        key: Option<String>,
        locate_item: bool,
    },
    Sequence {
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

impl Builder {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Mapping { key: Some(key), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Mapping { key: None, .. } => {}
                Frame::Sequence { index } => {
                    path.push('[');
                    path.push_str(&index.to_string());
                    path.push(']');
                }
            }
        }
        path
    }

    fn record(&mut self, mark: Marker) {
        let path = self.path();
        self.positions.entry(path).or_insert(Position {
            line: mark.line(),
            column: mark.col() + 1,
        });
    }

    /// Called when a value (scalar, alias or a whole collection) is complete.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key, .. }) => *key = None,
            Some(Frame::Sequence { index }) => *index += 1,
            None => {}
        }
    }

    /// Called when a value starts: sequence items are recorded at their first token.
    fn value_starts(&mut self, mark: Marker) {
        if matches!(self.stack.last(), Some(Frame::Sequence { .. })) {
            self.record(mark);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Mapping {
                    key: None,
                    locate_item,
                }) = self.stack.last_mut()
                {
                    let item_pending = std::mem::take(locate_item);
                    if item_pending {
                        let frame = self.stack.pop();
                        self.record(mark);
                        self.stack.extend(frame);
                    }
                    if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                        *key = Some(text);
                    }
                    self.record(mark);
                } else {
                    self.value_starts(mark);
                    self.value_done();
                }
            }
            Event::Alias(_) => {
                self.value_starts(mark);
                self.value_done();
            }
            Event::MappingStart(..) => {
                let locate_item = matches!(self.stack.last(), Some(Frame::Sequence { .. }));
                self.stack.push(Frame::Mapping {
                    key: None,
                    locate_item,
                });
            }
            Event::SequenceStart(..) => {
                self.value_starts(mark);
                self.stack.push(Frame::Sequence { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
server:
  threads: 2
routes:
  - name: a
    match: { path_prefix: /a }
  - name: b
    upstream: users
";

    #[test]
    fn keys_and_items_have_one_based_positions() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.locate("server"), Some(Position { line: 1, column: 1 }));
        assert_eq!(
            map.locate("server.threads"),
            Some(Position { line: 2, column: 3 })
        );
        assert_eq!(
            map.locate("routes[0]"),
            Some(Position { line: 4, column: 5 })
        );
        assert_eq!(
            map.locate("routes[0].match.path_prefix"),
            Some(Position {
                line: 5,
                column: 14
            })
        );
        assert_eq!(
            map.locate("routes[1].upstream"),
            Some(Position { line: 7, column: 5 })
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let map = SourceMap::build(DOC);
        assert_eq!(
            map.locate("routes[1].strip_prefix"),
            map.locate("routes[1]")
        );
        assert_eq!(map.locate("nothing"), None);
    }
}
