//! Unit tests of the cache store: hits, eviction, the size bound, fills, purges.

use super::*;
use pingora_cache::trace::Span;
use std::time::Duration;

fn meta(body_len: usize) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .insert_header("content-length", body_len.to_string())
        .unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(60), now, 1, 2, header)
}

async fn fill(store: &'static MemoryStore, target: &str, body: &[u8]) -> usize {
    let key = super::super::key::build("h", target, "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    let mut miss = store
        .get_miss_handler(&key, &meta(body.len()), &span)
        .await
        .unwrap();
    miss.write_body(Bytes::copy_from_slice(body), true)
        .await
        .unwrap();
    match miss.finish().await.unwrap() {
        MissFinishType::Created(weight) => weight,
        MissFinishType::Appended(..) => unreachable!(),
    }
}

async fn read(store: &'static MemoryStore, target: &str) -> Option<Vec<u8>> {
    let key = super::super::key::build("h", target, "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    let (meta, mut hit) = store.lookup(&key, &span).await.unwrap()?;
    assert_eq!(meta.stale_if_error_sec(), 2);
    let mut body = Vec::new();
    while let Some(chunk) = hit.read_body().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn leak(store: MemoryStore) -> &'static MemoryStore {
    Box::leak(Box::new(store))
}

#[tokio::test]
async fn stores_reads_and_purges() {
    let store = leak(MemoryStore::new(1 << 20, 1 << 16));
    let weight = fill(store, "/a?x=1", b"hello").await;
    assert!(weight > 5 + ENTRY_OVERHEAD);
    fill(store, "/a/b", b"world").await;
    fill(store, "/c", b"!").await;
    assert_eq!(read(store, "/a?x=1").await.unwrap(), b"hello");
    assert_eq!(store.usage().entries, 3);
    assert_eq!(store.purge_url("h/a?x=1"), 1);
    assert_eq!(read(store, "/a?x=1").await, None);
    assert_eq!(store.purge_prefix("h/a"), 1);
    assert_eq!(read(store, "/a/b").await, None);
    assert_eq!(read(store, "/c").await.unwrap(), b"!");
    assert_eq!(store.usage().entries, 1);
}

#[tokio::test]
async fn never_holds_more_than_its_bound() {
    let body = vec![7u8; 1000];
    // Every target below has the same length, so every entry weighs the same.
    let weight = fill(leak(MemoryStore::new(1 << 20, 1 << 16)), "/xx", &body).await;
    let store = leak(MemoryStore::new(weight * 5, 1 << 16));
    for i in 0..20 {
        fill(store, &format!("/{i:02}"), &body).await;
        assert!(store.usage().bytes <= weight * 5);
    }
    let usage = store.usage();
    assert_eq!(usage.entries, 5);
    assert_eq!(usage.bytes, weight * 5);
    assert_eq!(usage.evictions, 15);
    assert!(read(store, "/14").await.is_none(), "the oldest went first");
    assert!(read(store, "/19").await.is_some());
}

#[tokio::test]
async fn recently_read_entries_survive_eviction() {
    let body = vec![1u8; 1000];
    let weight = fill(leak(MemoryStore::new(1 << 20, 1 << 16)), "/x", &body).await;
    let store = leak(MemoryStore::new(weight * 3 + 10, 1 << 16));
    for target in ["/0", "/1", "/2"] {
        fill(store, target, &body).await;
    }
    assert!(read(store, "/0").await.is_some());
    fill(store, "/3", &body).await;
    assert!(read(store, "/0").await.is_some(), "read recently");
    assert!(read(store, "/1").await.is_none(), "least recently used");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let store = leak(MemoryStore::new(1 << 20, 10));
    let key = super::super::key::build("h", "/big", "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    let mut miss = store
        .get_miss_handler(&key, &meta(11), &span)
        .await
        .unwrap();
    assert!(miss
        .write_body(Bytes::from_static(b"0123456789a"), true)
        .await
        .is_err());
}

async fn start_fill(store: &'static MemoryStore, target: &str, announced: usize) -> MissHandler {
    let key = super::super::key::build("h", target, "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    store
        .get_miss_handler(&key, &meta(announced), &span)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lying_content_length_allocates_nothing_up_front() {
    let store = leak(MemoryStore::new(64 << 20, 8 << 20));
    let mut miss = start_fill(store, "/liar", 8 << 20).await;
    assert_eq!(store.usage().filling, 0);
    miss.write_body(Bytes::from_static(b"tiny"), false)
        .await
        .unwrap();
    assert_eq!(store.usage().filling, FIRST_FILL_BUFFER);
    drop(miss);
    assert_eq!(
        store.usage().filling,
        0,
        "an abandoned fill gives its charge back"
    );
}

#[tokio::test]
async fn fills_in_progress_are_charged_against_max_size() {
    let store = leak(MemoryStore::new(1 << 20, 1 << 20));
    let chunk = Bytes::from(vec![1u8; FIRST_FILL_BUFFER]);
    let mut fills = Vec::new();
    let mut refused = 0;
    for i in 0..32 {
        let mut miss = start_fill(store, &format!("/{i}"), 1 << 20).await;
        match miss.write_body(chunk.clone(), false).await {
            Ok(()) => fills.push(miss),
            Err(_) => refused += 1,
        }
        assert!(store.usage().filling <= 1 << 20);
    }
    assert_eq!(fills.len(), 16, "16 x 64 KiB fill the 1 MiB bound");
    assert_eq!(refused, 16);
    fills.clear();
    assert_eq!(store.usage().filling, 0);
}

#[tokio::test]
async fn stored_entries_make_room_for_fills_and_a_finished_fill_is_charged_once() {
    let body = vec![7u8; 100 << 10];
    let store = leak(MemoryStore::new(1 << 20, 1 << 20));
    for i in 0..9 {
        fill(store, &format!("/{i}"), &body).await;
    }
    let stored = store.usage().bytes;
    assert!(stored > 900 << 10);
    let mut miss = start_fill(store, "/new", 300 << 10).await;
    miss.write_body(Bytes::from(vec![1u8; FIRST_FILL_BUFFER]), false)
        .await
        .unwrap();
    miss.write_body(Bytes::from(vec![1u8; 236 << 10]), true)
        .await
        .unwrap();
    let usage = store.usage();
    assert_eq!(
        usage.filling,
        300 << 10,
        "grown to the announced size in one step"
    );
    assert!(usage.bytes + usage.filling <= 1 << 20, "{usage:?}");
    assert!(usage.evictions > 0);
    let MissFinishType::Created(weight) = miss.finish().await.unwrap() else {
        unreachable!()
    };
    let usage = store.usage();
    assert_eq!(usage.filling, 0);
    assert!(weight > 300 << 10);
    assert!(usage.bytes <= 1 << 20, "{usage:?}");
    assert_eq!(read(store, "/new").await.unwrap().len(), 300 << 10);
}

#[tokio::test]
async fn ranges_are_served_by_seeking() {
    let store = leak(MemoryStore::new(1 << 20, 1 << 16));
    fill(store, "/r", b"0123456789").await;
    let key = super::super::key::build("h", "/r", "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    let (_, mut hit) = store.lookup(&key, &span).await.unwrap().unwrap();
    hit.seek(2, Some(5)).unwrap();
    assert_eq!(hit.read_body().await.unwrap().unwrap(), "234");
    assert!(hit.read_body().await.unwrap().is_none());
    assert!(hit.seek(10, None).is_err());
}

async fn fill_tagged(store: &'static MemoryStore, target: &str, tags: &str) {
    let key = super::super::key::build("h", target, "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("cache-tag", tags).unwrap();
    let now = SystemTime::now();
    let meta = CacheMeta::new(now + Duration::from_secs(60), now, 1, 2, header);
    let mut miss = store.get_miss_handler(&key, &meta, &span).await.unwrap();
    miss.write_body(Bytes::from_static(b"x"), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
}

#[tokio::test]
async fn tags_index_entries_and_leave_the_index_with_them() {
    let store = leak(MemoryStore::new(1 << 20, 1 << 16));
    fill_tagged(store, "/a", "t1, t2").await;
    fill_tagged(store, "/b", "t2 t3").await;
    fill_tagged(store, "/c", "t3").await;
    let tags = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(
        store.purge(Selection::Tags(&tags(&["t2"])), Purge::Remove),
        2
    );
    assert!(read(store, "/a").await.is_none() && read(store, "/b").await.is_none());
    assert!(read(store, "/c").await.is_some());
    {
        let index = store.writer.lock();
        let mut left: Vec<&str> = index.tags.keys().map(|t| &**t).collect();
        left.sort_unstable();
        assert_eq!(left, ["t3"], "removed entries leave no tag behind");
    }
    // A soft purge keeps the entry but makes it stale.
    assert_eq!(
        store.purge(Selection::Tags(&tags(&["t3", "nope"])), Purge::MarkStale),
        1
    );
    let key = super::super::key::build("h", "/c", "r", &[], &http::HeaderMap::new());
    let span = Span::inactive().handle();
    let (meta, _) = store.lookup(&key, &span).await.unwrap().unwrap();
    assert!(!meta.is_fresh(SystemTime::now()));
    // An origin cannot grow the index without bound through one response.
    let many: Vec<String> = (0..100).map(|i| format!("tag{i}")).collect();
    fill_tagged(store, "/many", &many.join(",")).await;
    assert_eq!(store.writer.lock().tags.len(), 1 + MAX_TAGS);
}
