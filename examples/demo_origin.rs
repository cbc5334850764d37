//! A demo HTTP origin for trying edgegate and for load tests: answers every request with JSON
//! naming itself (and `X-Origin`), `/health` with 200.
//!
//! `cargo run --release --example demo_origin -- 127.0.0.1:9001 origin-1`

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shares the test origin; not all of it is used here

#[path = "../tests/gateway/support/origin.rs"]
mod origin;

fn main() {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let name = args.next().unwrap_or_else(|| format!("origin-{address}"));
    let address = address.parse().unwrap_or_else(|e| {
        eprintln!("demo_origin: `{address}` is not an address like 127.0.0.1:9001: {e}");
        std::process::exit(2);
    });
    let origin = origin::Origin::start_on(&name, address);
    eprintln!("demo_origin {name} listening on http://{}", origin.addr);
    loop {
        std::thread::park();
    }
}
