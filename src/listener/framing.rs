//! A strict shadow of HTTP/1.1 message framing (RFC 9112) over the bytes a client sends.
//!
//! Pingora parses requests leniently where a front-end must not: it percent-encodes a request
//! line with a space or control byte in its target and proxies it, and its chunk parser takes any
//! byte (a bare LF included) inside a chunk extension. Neither has a switch, so every byte a client
//! sends also passes through this tracker on its way to Pingora. It checks each request line where
//! the request starts; the rest of the head is held until the proxy has parsed it and says how
//! long it was and how its body is framed (Pingora's parser is the one authority on where a head
//! ends); then it walks the body (chunked bodies strictly: hex size, well-formed extensions, CRLF
//! only) to find where the next request starts. The common request (a whole head in one read, no
//! body) costs one vector search and a table lookup per byte of its request line, and a copy of
//! its header lines.

/// How the body of the request whose head was just parsed is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// What is wrong with what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A request line that is not `method SP target SP HTTP/x.y` (a space or control byte in the
    /// target, two spaces...): Pingora would have repaired it.
    RequestLine,
    /// The head Pingora parsed is not the head seen on the wire.
    HeadMismatch,
    /// A chunk-size line, chunk extension or chunk delimiter breaks RFC 9112 §7.1 (a bare LF, a
    /// control byte, a size that is not hex...).
    Chunk,
    /// A trailer line of a chunked body that does not end with CRLF.
    Trailer,
}

impl Violation {
    /// A sentence for the client.
    pub fn message(self) -> &'static str {
        match self {
            Violation::RequestLine => {
                "the request line is malformed (a space or control character in the target?)"
            }
            Violation::HeadMismatch => "the request head is ambiguous",
            Violation::Chunk => "the chunked request body is malformed (RFC 9112 section 7.1)",
            Violation::Trailer => "a trailer line of the chunked request body is malformed",
        }
    }
}

/// The framing tracker of one client connection.
pub struct Tracker {
    state: State,
    /// Bytes after a request line that the proxy has not placed yet, from `held_start` on.
    held: Vec<u8>,
    held_start: usize,
    /// Request heads the proxy has announced so far (a head deadline belongs to one head).
    heads: u64,
}

enum State {
    /// Reading a request line.
    Line(LineScan),
    /// The request line is read; the rest of the head is held until the proxy announces it.
    Rest {
        /// Bytes of the head before this state (leading empty lines and the request line).
        line_len: usize,
        line_ok: bool,
    },
    Length(u64),
    Chunked(Chunk),
    /// Not HTTP/1 any more (an upgrade, an h2c preface) or after a violation.
    Off,
}

#[derive(Default)]
struct LineScan {
    len: usize,
    phase: LinePhase,
    ok: bool,
    /// The bytes so far are the start of an HTTP/2 prior-knowledge preface (first request only).
    maybe_preface: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum LinePhase {
    /// Empty lines before the request line (RFC 9112 §2.2).
    #[default]
    Leading,
    LeadingCr,
    Method,
    /// Bytes of the target so far (none or some).
    Target(bool),
    /// Index into `HTTP/x.y`.
    Version(u8),
    VersionCr,
    /// A broken request line: skip to its end.
    SkipLine,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { digits: u8, value: u64 },
    SizeSpace { value: u64 },
    ExtBeforeName { value: u64 },
    ExtName { value: u64 },
    ExtAfterName { value: u64 },
    ExtBeforeValue { value: u64 },
    ExtToken { value: u64 },
    ExtQuoted { value: u64 },
    ExtQuotedEscape { value: u64 },
    ExtAfterValue { value: u64 },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

/// RFC 9110 `tchar`.
fn is_tchar(byte: u8) -> bool {
    LINE_BYTES[usize::from(byte)] & 1 != 0
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// A tracker at the start of a connection.
    pub fn new() -> Self {
        Tracker {
            state: State::Line(LineScan {
                maybe_preface: true,
                ok: true,
                ..LineScan::default()
            }),
            held: Vec::new(),
            held_start: 0,
            heads: 0,
        }
    }

    /// Request heads announced so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// A request head has started and has not been announced yet.
    pub fn head_in_progress(&self) -> bool {
        match &self.state {
            State::Line(scan) => scan.len > 0,
            State::Rest { .. } => true,
            _ => false,
        }
    }

    /// The tracker no longer looks at the bytes.
    pub fn is_off(&self) -> bool {
        matches!(self.state, State::Off)
    }

    /// Stops tracking: the connection is no longer HTTP/1 (an upgrade was accepted).
    pub fn stop(&mut self) {
        self.state = State::Off;
        self.held = Vec::new();
        self.held_start = 0;
    }

    /// Takes the next bytes the client sent. Errors are body framing violations: the bytes must
    /// not reach the parser. (Request-line problems are reported when the head is announced.)
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        if matches!(self.state, State::Rest { .. }) {
            self.held.extend_from_slice(bytes);
            return Ok(());
        }
        let consumed = self.advance(bytes)?;
        if consumed < bytes.len() {
            self.held.extend_from_slice(&bytes[consumed..]);
        }
        Ok(())
    }

    /// The proxy parsed a head of `head_len` bytes whose body is framed as `framing`: checks its
    /// request line, skips the rest of the head, then walks what was held back.
    pub fn announce(&mut self, head_len: usize, framing: BodyFraming) -> Result<(), Violation> {
        let (line_len, line_ok) = match self.state {
            State::Off => return Ok(()),
            State::Rest { line_len, line_ok } => (line_len, line_ok),
            _ => return self.fail(Violation::HeadMismatch),
        };
        if !line_ok {
            return self.fail(Violation::RequestLine);
        }
        let rest_of_head = head_len.checked_sub(line_len);
        match rest_of_head {
            Some(rest) if rest <= self.held.len() - self.held_start => self.held_start += rest,
            _ => return self.fail(Violation::HeadMismatch),
        }
        self.heads += 1;
        self.state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => State::Line(LineScan::fresh()),
            BodyFraming::Length(length) => State::Length(length),
            BodyFraming::Chunked => State::Chunked(Chunk::Size {
                digits: 0,
                value: 0,
            }),
        };
        let held = std::mem::take(&mut self.held);
        let result = self.advance(&held[self.held_start..]);
        self.held = held;
        let consumed = result?;
        self.held_start += consumed;
        if self.held_start == self.held.len() {
            self.held.clear();
            self.held_start = 0;
            if self.held.capacity() > 64 << 10 {
                self.held = Vec::new();
            }
        }
        Ok(())
    }

    fn fail(&mut self, violation: Violation) -> Result<(), Violation> {
        self.stop();
        Err(violation)
    }

    /// Walks `bytes` until a request line completes (then stops: the rest of its head is the
    /// proxy's to place) or they run out; returns how many were consumed.
    fn advance(&mut self, bytes: &[u8]) -> Result<usize, Violation> {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match &mut self.state {
                State::Off => return Ok(bytes.len()),
                State::Rest { .. } => return Ok(at),
                State::Line(scan) => {
                    if scan.maybe_preface && scan.preface_complete(rest) {
                        // HTTP/2 with prior knowledge: not HTTP/1 framing, not ours to judge.
                        self.stop();
                        return Ok(bytes.len());
                    }
                    let (used, complete) = scan.scan(rest);
                    at += used;
                    if complete {
                        self.state = State::Rest {
                            line_len: scan.len,
                            line_ok: scan.ok,
                        };
                    }
                }
                State::Length(left) => {
                    let take = (*left).min(rest.len() as u64);
                    *left -= take;
                    at += take as usize;
                    if *left == 0 {
                        self.state = State::Line(LineScan::fresh());
                    }
                }
                State::Chunked(chunk) => {
                    let (used, done) = match chunk.scan(rest) {
                        Ok(progress) => progress,
                        Err(violation) => {
                            self.stop();
                            return Err(violation);
                        }
                    };
                    at += used;
                    if done {
                        self.state = State::Line(LineScan::fresh());
                    }
                }
            }
        }
        Ok(at)
    }
}

impl LineScan {
    fn fresh() -> Self {
        LineScan {
            ok: true,
            ..LineScan::default()
        }
    }

    /// Whether `bytes`, following the line's bytes so far, complete an h2 preface; clears
    /// `maybe_preface` as soon as they cannot.
    fn preface_complete(&mut self, bytes: &[u8]) -> bool {
        let Some(expected) = PREFACE.get(self.len..) else {
            self.maybe_preface = false;
            return false;
        };
        let compared = expected.len().min(bytes.len());
        if expected[..compared] != bytes[..compared] {
            self.maybe_preface = false;
            return false;
        }
        compared == expected.len()
    }

    /// Scans request-line bytes; returns (bytes used, line complete).
    fn scan(&mut self, bytes: &[u8]) -> (usize, bool) {
        if self.len == 0 && bytes.first().is_some_and(|&b| is_tchar(b)) {
            if let Some(end) = memchr::memchr(b'\n', bytes) {
                // The usual case: the whole line in one read, checked with table lookups.
                self.ok = request_line_ok(&bytes[..end]);
                self.len = end + 1;
                return (end + 1, true);
            }
        }
        let mut at = 0;
        while at < bytes.len() {
            if self.phase == LinePhase::SkipLine {
                return match memchr::memchr(b'\n', &bytes[at..]) {
                    Some(offset) => {
                        self.len += offset + 1;
                        (at + offset + 1, true)
                    }
                    None => {
                        self.len += bytes.len() - at;
                        (bytes.len(), false)
                    }
                };
            }
            let byte = bytes[at];
            at += 1;
            self.len += 1;
            if self.step(byte) {
                return (at, true);
            }
        }
        (at, false)
    }

    /// Moves the line's state past `byte`; true when `byte` ends the line.
    fn step(&mut self, byte: u8) -> bool {
        self.phase = match self.phase {
            LinePhase::Leading => match byte {
                b'\n' => LinePhase::Leading,
                b'\r' => LinePhase::LeadingCr,
                _ if is_tchar(byte) => LinePhase::Method,
                _ => self.broken(),
            },
            LinePhase::LeadingCr => match byte {
                b'\n' => LinePhase::Leading,
                _ => self.broken(),
            },
            LinePhase::Method => match byte {
                b' ' => LinePhase::Target(false),
                _ if is_tchar(byte) => LinePhase::Method,
                _ => self.broken(),
            },
            LinePhase::Target(seen) => match byte {
                b' ' if seen => LinePhase::Version(0),
                _ if LINE_BYTES[usize::from(byte)] & 2 != 0 => LinePhase::Target(true),
                _ => self.broken(),
            },
            LinePhase::Version(index) => {
                let fits = match index {
                    0..=4 => byte == b"HTTP/"[usize::from(index)],
                    5 | 7 => byte.is_ascii_digit(),
                    6 => byte == b'.',
                    _ => false,
                };
                match (index, byte) {
                    _ if fits => LinePhase::Version(index + 1),
                    (8, b'\r') => LinePhase::VersionCr,
                    (8, b'\n') => return true,
                    _ => self.broken(),
                }
            }
            LinePhase::VersionCr => match byte {
                b'\n' => return true,
                _ => self.broken(),
            },
            LinePhase::SkipLine => LinePhase::SkipLine,
        };
        byte == b'\n' && self.phase == LinePhase::SkipLine
    }

    /// The request line is broken: remember it and skip to its end.
    fn broken(&mut self) -> LinePhase {
        self.ok = false;
        LinePhase::SkipLine
    }
}

/// Byte classes of the request line: bit 1 a `tchar`, bit 2 a byte allowed in the target.
static LINE_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        let tchar = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        let target = (b >= 0x21 && b != 0x7f) as u8;
        table[byte] = tchar as u8 | target << 1;
        byte += 1;
    }
    table
};

/// `method SP target SP HTTP/d.d [CR]` (the line without its LF), per RFC 9112 §3.
fn request_line_ok(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 9 {
        return false;
    }
    let (head, version) = line.split_at(line.len() - 9);
    let version_ok = version[0] == b' '
        && &version[1..6] == b"HTTP/"
        && version[6].is_ascii_digit()
        && version[7] == b'.'
        && version[8].is_ascii_digit();
    let Some(space) = memchr::memchr(b' ', head) else {
        return false;
    };
    let (method, target) = (&head[..space], &head[space + 1..]);
    version_ok
        && !method.is_empty()
        && !target.is_empty()
        && method.iter().all(|&b| LINE_BYTES[usize::from(b)] & 1 != 0)
        && target.iter().all(|&b| LINE_BYTES[usize::from(b)] & 2 != 0)
}

impl Chunk {
    /// The chunk's size, in the states of a chunk-size line where `;` (an extension) or CR (the
    /// line's end) may come next.
    fn separator_may_follow(self) -> Option<u64> {
        match self {
            Chunk::Size { digits: 1.., value }
            | Chunk::SizeSpace { value }
            | Chunk::ExtName { value }
            | Chunk::ExtAfterName { value }
            | Chunk::ExtToken { value }
            | Chunk::ExtAfterValue { value } => Some(value),
            _ => None,
        }
    }

    /// Scans chunked-body bytes; returns (bytes used, body complete).
    fn scan(&mut self, bytes: &[u8]) -> Result<(usize, bool), Violation> {
        let mut at = 0;
        while at < bytes.len() {
            if let Chunk::Data { left } = self {
                let take = (*left).min((bytes.len() - at) as u64);
                *left -= take;
                at += take as usize;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            match self.after(byte)? {
                Some(next) => *self = next,
                None => return Ok((at, true)),
            }
        }
        Ok((at, false))
    }

    /// The state after `byte` (the transition table of RFC 9112 §7.1); `None` once the body and
    /// its trailer section are complete.
    fn after(self, byte: u8) -> Result<Option<Chunk>, Violation> {
        Ok(Some(match (self, byte) {
            (Chunk::Size { digits, value }, _) if byte.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err(Violation::Chunk);
                }
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    _ => (byte | 0x20) - b'a' + 10,
                };
                Chunk::Size {
                    digits: digits + 1,
                    value: value << 4 | u64::from(digit),
                }
            }
            (Chunk::Size { digits: 0, .. }, _) => return Err(Violation::Chunk),
            (Chunk::Size { value, .. } | Chunk::SizeSpace { value }, b' ' | b'\t') => {
                Chunk::SizeSpace { value }
            }
            (state, b';' | b'\r') if state.separator_may_follow().is_some() => {
                let value = state.separator_may_follow().unwrap_or(0);
                if byte == b';' {
                    Chunk::ExtBeforeName { value }
                } else {
                    Chunk::SizeLf { value }
                }
            }
            (Chunk::ExtBeforeName { value }, _) if is_blank(byte) => Chunk::ExtBeforeName { value },
            (Chunk::ExtBeforeName { value } | Chunk::ExtName { value }, _) if is_tchar(byte) => {
                Chunk::ExtName { value }
            }
            (Chunk::ExtName { value } | Chunk::ExtAfterName { value }, _) if is_blank(byte) => {
                Chunk::ExtAfterName { value }
            }
            (Chunk::ExtName { value } | Chunk::ExtAfterName { value }, b'=') => {
                Chunk::ExtBeforeValue { value }
            }
            (Chunk::ExtBeforeValue { value }, _) if is_blank(byte) => {
                Chunk::ExtBeforeValue { value }
            }
            (Chunk::ExtBeforeValue { value }, b'"') => Chunk::ExtQuoted { value },
            (Chunk::ExtBeforeValue { value } | Chunk::ExtToken { value }, _) if is_tchar(byte) => {
                Chunk::ExtToken { value }
            }
            (Chunk::ExtToken { value } | Chunk::ExtAfterValue { value }, _) if is_blank(byte) => {
                Chunk::ExtAfterValue { value }
            }
            (Chunk::ExtQuoted { value }, b'"') => Chunk::ExtAfterValue { value },
            (Chunk::ExtQuoted { value }, b'\\') => Chunk::ExtQuotedEscape { value },
            (Chunk::ExtQuoted { value }, _) if byte == b'\t' || (byte >= 0x20 && byte != 0x7f) => {
                Chunk::ExtQuoted { value }
            }
            (Chunk::ExtQuotedEscape { value }, _)
                if byte == b'\t' || (byte >= 0x20 && byte != 0x7f) =>
            {
                Chunk::ExtQuoted { value }
            }
            (Chunk::SizeLf { value: 0 }, b'\n') => Chunk::TrailerStart,
            (Chunk::SizeLf { value }, b'\n') => Chunk::Data { left: value },
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size {
                digits: 0,
                value: 0,
            },
            (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
            (Chunk::TrailerStart | Chunk::TrailerLine, b'\n') => return Err(Violation::Trailer),
            (Chunk::TrailerLine, b'\r') => Chunk::TrailerLf,
            (Chunk::TrailerStart | Chunk::TrailerLine, _)
                if byte == b'\t' || (byte >= 0x20 && byte != 0x7f) =>
            {
                Chunk::TrailerLine
            }
            (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
            (Chunk::EndLf, b'\n') => return Ok(None),
            (Chunk::TrailerStart | Chunk::TrailerLine | Chunk::TrailerLf | Chunk::EndLf, _) => {
                return Err(Violation::Trailer)
            }
            _ => return Err(Violation::Chunk),
        }))
    }
}

#[cfg(test)]
mod tests;
