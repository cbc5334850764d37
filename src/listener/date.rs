//! Keeping the origin's `Date` on HTTP/1 responses. Pingora writes its own `Date` into every
//! response head it sends and offers no switch, so the client stream, which every HTTP/1 byte
//! passes, overwrites that value in the head with the origin's. Both are IMF-fixdate (29 bytes),
//! so the head keeps its length and nothing is reframed.

/// An HTTP date as it stands on the wire: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub type HttpDate = [u8; 29];

/// The origin's `Date` in IMF-fixdate, as given or re-written from the obsolete forms;
/// `None` when it is not a date.
pub fn imf_fixdate(value: &[u8]) -> Option<HttpDate> {
    if let Ok(date) = HttpDate::try_from(value) {
        if date.ends_with(b" GMT") && date[3] == b',' {
            return Some(date);
        }
    }
    let text = std::str::from_utf8(value).ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    HttpDate::try_from(httpdate::fmt_http_date(time).as_bytes()).ok()
}

/// Where the value of the `Date` field starts in `head` (a response head, or its beginning), if
/// it is 29 bytes long.
pub fn date_value_at(head: &[u8]) -> Option<usize> {
    // A line at a time, from each LF: a searcher built per call would cost more than the scan.
    for newline in memchr::memchr_iter(b'\n', head) {
        let line = &head[newline + 1..];
        match line.first() {
            None | Some(b'\r') => return None, // the end of the head (or of this write)
            Some(b'd' | b'D') if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:") => {
                let blanks = line[5..]
                    .iter()
                    .take_while(|b| **b == b' ' || **b == b'\t')
                    .count();
                let value = newline + 1 + 5 + blanks;
                let fits = head.get(value + 29..value + 31) == Some(&b"\r\n"[..]);
                return fits.then_some(value);
            }
            Some(_) => {}
        }
    }
    None
}

/// A Date value to put at byte `start` of the stream (counted from the connection's first
/// written byte), applied to whatever part of it each write carries.
#[derive(Debug, Clone, Copy)]
pub struct Patch {
    pub start: u64,
    pub date: HttpDate,
}

impl Patch {
    /// Whether bytes `written..written + len` of the stream touch the patch.
    pub fn overlaps(&self, written: u64, len: usize) -> bool {
        self.start < written + len as u64 && written < self.end()
    }

    pub fn end(&self) -> u64 {
        self.start + 29
    }

    /// Where the value starts in a write of `len` bytes at `written`, when all of it is there.
    pub fn within(&self, written: u64, len: usize) -> Option<usize> {
        let at = usize::try_from(self.start.checked_sub(written)?).ok()?;
        (at + self.date.len() <= len).then_some(at)
    }

    /// `buf`, which holds stream bytes from `written` on, with the patch applied.
    pub fn apply(&self, written: u64, buf: &[u8]) -> Vec<u8> {
        let mut patched = buf.to_vec();
        for (index, byte) in self.date.iter().enumerate() {
            let at = self.start + index as u64;
            if let Some(slot) = at
                .checked_sub(written)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| patched.get_mut(at))
            {
                *slot = *byte;
            }
        }
        patched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: Wed, 02 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n\r\nhi";

    #[test]
    fn the_date_value_is_found_in_any_case_and_only_in_the_head() {
        let at = date_value_at(OURS).unwrap();
        assert_eq!(&OURS[at..at + 29], b"Wed, 02 Dec 2026 10:00:00 GMT");
        let lower = b"HTTP/1.1 200 OK\r\ndate:Wed, 02 Dec 2026 10:00:00 GMT\r\n\r\n";
        assert_eq!(date_value_at(lower), Some(22));
        assert_eq!(
            date_value_at(b"HTTP/1.1 200 OK\r\nX-Date: x\r\n\r\nDate: body"),
            None
        );
        assert_eq!(
            date_value_at(b"HTTP/1.1 200 OK\r\nDate: short\r\n\r\n"),
            None
        );
    }

    #[test]
    fn dates_are_written_as_imf_fixdate() {
        let fixed = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(imf_fixdate(&fixed), Some(fixed));
        assert_eq!(imf_fixdate(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(fixed));
        assert_eq!(imf_fixdate(b"Sun Nov  6 08:49:37 1994"), Some(fixed));
        assert_eq!(imf_fixdate(b"yesterday"), None);
    }

    #[test]
    fn a_patch_lands_whatever_the_writes_are_cut_into() {
        let at = date_value_at(OURS).unwrap() as u64;
        let patch = Patch {
            start: 100 + at,
            date: *b"Sun, 06 Nov 1994 08:49:37 GMT",
        };
        let expected = {
            let mut whole = OURS.to_vec();
            whole[at as usize..at as usize + 29].copy_from_slice(&patch.date);
            whole
        };
        for cut in 0..OURS.len() {
            let (first, second) = OURS.split_at(cut);
            let mut out = Vec::new();
            for (written, part) in [(100, first), (100 + cut as u64, second)] {
                if patch.overlaps(written, part.len()) {
                    out.extend(patch.apply(written, part));
                } else {
                    out.extend_from_slice(part);
                }
            }
            assert_eq!(out, expected, "cut at {cut}");
        }
        assert_eq!(patch.within(100, OURS.len()), Some(at as usize));
        assert_eq!(
            patch.within(100, at as usize + 28),
            None,
            "cut inside the value"
        );
        assert_eq!(
            patch.within(100 + at + 1, 100),
            None,
            "started inside the value"
        );
    }
}
