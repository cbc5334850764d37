//! Unit tests of the framing shadow: request lines, chunked bodies, trailers, every split of a read.

use super::*;

/// One request of a test connection: its head, how its body is framed, its body.
struct Request<'a> {
    head: &'a [u8],
    framing: BodyFraming,
    body: &'a [u8],
}

fn get(head: &[u8]) -> Request<'_> {
    Request {
        head,
        framing: BodyFraming::None,
        body: b"",
    }
}

/// Feeds the requests' bytes in pieces of `step`, announcing each head as soon as all of it
/// has arrived (as Pingora would); returns how many heads were announced.
fn run(requests: &[Request<'_>], step: usize) -> Result<u64, Violation> {
    let wire: Vec<u8> = requests
        .iter()
        .flat_map(|r| r.head.iter().chain(r.body.iter()).copied())
        .collect();
    let mut tracker = Tracker::new();
    let (mut fed, mut next, mut start) = (0, 0, 0);
    for piece in wire.chunks(step) {
        tracker.feed(piece)?;
        fed += piece.len();
        while let Some(request) = requests.get(next) {
            if start + request.head.len() > fed {
                break;
            }
            tracker.announce(request.head.len(), request.framing)?;
            start += request.head.len() + request.body.len();
            next += 1;
        }
    }
    Ok(tracker.heads())
}

fn all_steps(requests: &[Request<'_>]) -> Result<u64, Violation> {
    let whole = run(requests, usize::MAX);
    for step in [1, 2, 3, 7] {
        assert_eq!(run(requests, step), whole, "step {step}");
    }
    whole
}

#[test]
fn well_formed_requests_pass_in_any_split() {
    let requests = [
        get(b"\r\nGET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        get(b"GET /b HTTP/1.0\nHost: y\n\n"),
        Request {
            head: b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            framing: BodyFraming::Length(5),
            body: b"hello",
        },
        get(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"),
    ];
    assert_eq!(all_steps(&requests), Ok(4));
}

#[test]
fn a_head_longer_or_shorter_than_what_arrived_is_a_mismatch() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut tracker = Tracker::new();
    tracker.feed(head).unwrap();
    assert_eq!(
        tracker.announce(head.len() + 1, BodyFraming::None),
        Err(Violation::HeadMismatch)
    );
    let mut tracker = Tracker::new();
    tracker.feed(head).unwrap();
    assert_eq!(
        tracker.announce(10, BodyFraming::None),
        Err(Violation::HeadMismatch),
        "shorter than its own request line"
    );
    let mut tracker = Tracker::new();
    tracker.feed(head).unwrap();
    assert_eq!(tracker.announce(head.len(), BodyFraming::None), Ok(()));
    assert_eq!(
        tracker.announce(head.len(), BodyFraming::None),
        Err(Violation::HeadMismatch),
        "a head never seen"
    );
}

#[test]
fn broken_request_lines_are_reported_when_announced() {
    for line in [
        &b"GET /a b HTTP/1.1\r\n\r\n"[..],
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        b"GET /a\x7f HTTP/1.1\r\n\r\n",
        b"GET  /a HTTP/1.1\r\n\r\n",
        b"GET /a  HTTP/1.1\r\n\r\n",
        b"GET /a HTTP/1.1 \r\n\r\n",
        b"GET /a\tHTTP/1.1\r\n\r\n",
        b"G\x00T /a HTTP/1.1\r\n\r\n",
        b"GET /a HTTP/1.1\rX\r\n\r\n",
        b"GET /a HTTP/11\r\n\r\n",
        b"GET /a\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /a HTTP/1.1\r\r\n\r\n",
        b"\r\nGET /a b HTTP/1.1\r\n\r\n",
    ] {
        for step in [1, 2, usize::MAX] {
            assert_eq!(
                run(&[get(line)], step),
                Err(Violation::RequestLine),
                "{} step {step}",
                line.escape_ascii()
            );
        }
    }
}

#[test]
fn chunked_bodies_follow_rfc_9112_strictly() {
    let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunked = |body| Request {
        head,
        framing: BodyFraming::Chunked,
        body,
    };
    let ok: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"5;name\r\nhello\r\n0\r\n\r\n",
        b"5 ; a=b ; c=\"quoted; \\\" string\"\r\nhello\r\n0\r\n\r\n",
        b"A\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n",
        b"0000\r\n\r\n",
    ];
    for body in ok {
        assert_eq!(
            all_steps(&[chunked(body), get(b"GET /next HTTP/1.1\r\n\r\n")]),
            Ok(2),
            "{}",
            body.escape_ascii()
        );
    }
    let bad: &[(&[u8], Violation)] = &[
        (b"5;ext\nfoo\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"5;\n\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"5\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"5\r\nhello\n0\r\n\r\n", Violation::Chunk),
        (b"5\r\nhelloXX0\r\n\r\n", Violation::Chunk),
        (b"5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"5;a\x01\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"5;=b\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"5x\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"-5\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        (b"11111111111111111\r\n", Violation::Chunk),
        (b"0\r\nTrailer: x\n\r\n", Violation::Trailer),
        (b"0\r\n\n", Violation::Trailer),
    ];
    for (body, expected) in bad {
        for step in [1, 3, usize::MAX] {
            assert_eq!(
                run(&[chunked(body)], step),
                Err(*expected),
                "{} step {step}",
                body.escape_ascii()
            );
        }
    }
}

#[test]
fn an_h2_preface_turns_tracking_off() {
    let mut tracker = Tracker::new();
    tracker
        .feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04")
        .unwrap();
    assert!(tracker.is_off());
    let mut tracker = Tracker::new();
    tracker.feed(b"PRI * HT").unwrap();
    assert!(!tracker.is_off());
    tracker.feed(b"TP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    assert!(tracker.is_off());
    let mut tracker = Tracker::new();
    tracker.feed(b"PRIX").unwrap();
    assert!(!tracker.is_off());
}

#[test]
fn pipelined_heads_are_held_without_quadratic_copying() {
    let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let wire: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let mut tracker = Tracker::new();
    tracker.feed(&wire).unwrap();
    for _ in 0..1000 {
        tracker.announce(one.len(), BodyFraming::None).unwrap();
    }
    assert_eq!(tracker.heads(), 1000);
    assert!(tracker.held.is_empty());
}

#[test]
fn a_head_is_in_progress_from_its_first_byte_until_announced() {
    let mut tracker = Tracker::new();
    assert!(!tracker.head_in_progress());
    tracker.feed(b"GET / HT").unwrap();
    assert!(tracker.head_in_progress());
    tracker.feed(b"TP/1.1\r\n\r\n").unwrap();
    assert!(tracker.head_in_progress(), "until the proxy has parsed it");
    tracker.announce(18, BodyFraming::Length(3)).unwrap();
    assert!(!tracker.head_in_progress());
    tracker.feed(b"abc").unwrap();
    assert!(!tracker.head_in_progress(), "idle between requests");
}
