//! The store contract: the same cases against `MemoryStore` and against the real local S3
//! server (Garage) through `AwsStore`, so the fake the core is tested with cannot drift from
//! the real thing. Each case works under its own key prefix.

use std::collections::BTreeSet;

use bytes::Bytes;
use pailfs::store::memory::MemoryStore;
use pailfs::store::{ListRequest, ObjectStore, StoreError, UserMeta};

use crate::common;

const MIB: usize = 1024 * 1024;

fn meta(pairs: &[(&str, &str)]) -> UserMeta {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn put<S: ObjectStore>(s: &S, key: &str, data: &[u8]) -> String {
    s.put(key, Bytes::copy_from_slice(data), &UserMeta::new())
        .await
        .unwrap()
        .etag
}

/// Lists everything under `prefix` page by page with `max_keys`, returning (objects, prefixes)
/// in the order S3 returned them.
async fn list_all<S: ObjectStore>(
    s: &S,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: u32,
) -> Vec<String> {
    let mut req = ListRequest {
        prefix: prefix.to_string(),
        delimiter: delimiter.map(str::to_string),
        token: None,
        start_after: None,
        max_keys,
    };
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.list(&req).await.unwrap();
        pages += 1;
        let mut items: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
        items.extend(page.prefixes.iter().cloned());
        items.sort();
        assert!(items.len() <= max_keys as usize, "page over max_keys");
        out.extend(items);
        match page.next_token {
            Some(t) => req.token = Some(t),
            None => break,
        }
        assert!(pages < 10_000, "listing does not end");
    }
    out
}

async fn roundtrip_with_metadata_and_empty_objects<S: ObjectStore>(s: &S, p: &str) {
    let k = format!("{p}file.txt");
    let m = meta(&[("mode", "33188"), ("mtime", "1700000000.000000005")]);
    let etag = s
        .put(&k, Bytes::from_static(b"hello world"), &m)
        .await
        .unwrap()
        .etag;
    let h = s.head(&k).await.unwrap();
    assert_eq!(h.size, 11);
    assert_eq!(h.etag, etag);
    assert_eq!(
        h.user_meta
            .as_ref()
            .unwrap()
            .get("mode")
            .map(String::as_str),
        Some("33188")
    );
    assert_eq!(
        h.user_meta
            .as_ref()
            .unwrap()
            .get("mtime")
            .map(String::as_str),
        Some("1700000000.000000005")
    );
    assert_eq!(
        &s.get_range(&k, 0..11, None).await.unwrap()[..],
        b"hello world"
    );
    assert_eq!(
        &s.get_range(&k, 6..100, Some(&etag)).await.unwrap()[..],
        b"world"
    );
    // Zero bytes is an ordinary object (Garage refused mountpoint-s3's empty uploads).
    let z = format!("{p}empty");
    put(s, &z, b"").await;
    assert_eq!(s.head(&z).await.unwrap().size, 0);
    assert!(s.get_range(&z, 0..0, None).await.unwrap().is_empty());
    assert_eq!(
        s.head(&format!("{p}missing")).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        s.get_range(&format!("{p}missing"), 0..1, None)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn if_match_refuses_replaced_objects<S: ObjectStore>(s: &S, p: &str) {
    let k = format!("{p}v");
    let first = put(s, &k, b"version one").await;
    let second = put(s, &k, b"version two").await;
    assert_ne!(
        first, second,
        "an overwrite with other bytes changes the ETag"
    );
    assert_eq!(
        s.get_range(&k, 0..4, Some(&first)).await.unwrap_err(),
        StoreError::PreconditionFailed
    );
    assert_eq!(
        &s.get_range(&k, 8..11, Some(&second)).await.unwrap()[..],
        b"two"
    );
}

async fn listing_order_delimiters_and_pages<S: ObjectStore>(s: &S, p: &str) {
    let names = [
        "a", "a-b", "a.txt", "a/1", "a/2", "a/sub/x", "b", "c/", "c/d", "z",
    ];
    for n in names {
        put(s, &format!("{p}{n}"), n.as_bytes()).await;
    }
    let expect_flat: Vec<String> = names.iter().map(|n| format!("{p}{n}")).collect();
    let expect_dir: Vec<String> = ["a", "a-b", "a.txt", "a/", "b", "c/", "z"]
        .iter()
        .map(|n| format!("{p}{n}"))
        .collect();
    for max in [1, 2, 3, 1000] {
        assert_eq!(
            list_all(s, p, None, max).await,
            expect_flat,
            "flat, max_keys {max}"
        );
        assert_eq!(
            list_all(s, p, Some("/"), max).await,
            expect_dir,
            "delimited, max_keys {max}"
        );
    }
    // Inside a directory with a marker: the marker lists as an object of its own prefix.
    let inner = list_all(s, &format!("{p}c/"), Some("/"), 1000).await;
    assert_eq!(inner, vec![format!("{p}c/"), format!("{p}c/d")]);
    let mut req = ListRequest::dir(p);
    req.start_after = Some(format!("{p}a/"));
    let page = s.list(&req).await.unwrap();
    let keys: BTreeSet<String> = page
        .objects
        .iter()
        .map(|o| o.key.clone())
        .chain(page.prefixes.clone())
        .collect();
    assert!(
        !keys.contains(&format!("{p}a.txt")) && keys.contains(&format!("{p}b")),
        "{keys:?}"
    );
    // A listing entry carries size and ETag.
    let mut req = ListRequest::dir(p);
    req.max_keys = 1;
    let page = s.list(&req).await.unwrap();
    assert_eq!(page.objects[0].size, 1);
    assert!(!page.objects[0].etag.is_empty());
}

async fn hostile_key_names_round_trip<S: ObjectStore>(s: &S, p: &str) {
    let names = [
        "with space",
        "plus+sign",
        "percent%20literal",
        "hash#tag",
        "question?mark",
        "amp&eq=",
        "caf\u{e9}",
        "cafe\u{301}",
        "emoji-\u{1F600}",
        "ctrl-\u{1}-\u{1f}",
        "tab\tname",
        "quote\"'<>",
    ];
    for n in names {
        let k = format!("{p}{n}");
        put(s, &k, n.as_bytes()).await;
        assert_eq!(
            &s.get_range(&k, 0..n.len() as u64, None).await.unwrap()[..],
            n.as_bytes(),
            "{n:?}"
        );
        assert_eq!(s.head(&k).await.unwrap().size, n.len() as u64, "{n:?}");
    }
    let mut listed = list_all(s, p, Some("/"), 5).await;
    listed.sort();
    let mut expect: Vec<String> = names.iter().map(|n| format!("{p}{n}")).collect();
    expect.sort();
    assert_eq!(listed, expect);
    // Copies address their source by a percent-encoded header.
    let src = format!("{p}plus+sign");
    let dst = format!("{p}copy of plus+sign \u{1F600}");
    s.copy(&src, &dst, None, None).await.unwrap();
    assert_eq!(
        &s.get_range(&dst, 0..9, None).await.unwrap()[..],
        b"plus+sign"
    );
}

async fn multipart_upload_copy_and_abort<S: ObjectStore>(s: &S, p: &str) {
    let k = format!("{p}mp");
    let part1 = common::pseudo_random(5 * MIB, 1);
    let part2 = common::pseudo_random(1000, 2);
    let m = meta(&[("mode", "33261")]);
    let id = s.create_multipart(&k, &m).await.unwrap();
    let pending = s.list_multipart_uploads(p).await.unwrap();
    assert!(pending.iter().any(|u| u.upload_id == id && u.key == k));
    assert!(s.head(&k).await.is_err(), "no object before completion");
    let e1 = s
        .upload_part(&k, &id, 1, Bytes::from(part1.clone()))
        .await
        .unwrap();
    let e2 = s
        .upload_part(&k, &id, 2, Bytes::from(part2.clone()))
        .await
        .unwrap();
    s.complete_multipart(&k, &id, &[(1, e1), (2, e2)])
        .await
        .unwrap();
    let h = s.head(&k).await.unwrap();
    assert_eq!(h.size as usize, part1.len() + part2.len());
    assert_eq!(
        h.user_meta.unwrap().get("mode").map(String::as_str),
        Some("33261")
    );
    let tail = s
        .get_range(&k, (5 * MIB - 10) as u64..(5 * MIB + 10) as u64, None)
        .await
        .unwrap();
    assert_eq!(&tail[..10], &part1[5 * MIB - 10..]);
    assert_eq!(&tail[10..], &part2[..10]);

    // UploadPartCopy: a new object from a range of the old one plus new bytes.
    let k2 = format!("{p}mp2");
    let id2 = s.create_multipart(&k2, &UserMeta::new()).await.unwrap();
    let c1 = s
        .upload_part_copy(&k2, &id2, 1, &k, 0..(5 * MIB) as u64, &h.etag)
        .await
        .unwrap();
    let c2 = s
        .upload_part(&k2, &id2, 2, Bytes::from_static(b"tail"))
        .await
        .unwrap();
    s.complete_multipart(&k2, &id2, &[(1, c1), (2, c2)])
        .await
        .unwrap();
    assert_eq!(s.head(&k2).await.unwrap().size as usize, 5 * MIB + 4);
    let id3 = s.create_multipart(&k2, &UserMeta::new()).await.unwrap();
    assert_eq!(
        s.upload_part_copy(&k2, &id3, 1, &k, 0..10, "\"not-the-etag\"")
            .await
            .unwrap_err(),
        StoreError::PreconditionFailed
    );
    // Abort leaves the previous object untouched and the upload gone.
    s.abort_multipart(&k2, &id3).await.unwrap();
    assert_eq!(s.head(&k2).await.unwrap().size as usize, 5 * MIB + 4);
    assert!(
        !s.list_multipart_uploads(p)
            .await
            .unwrap()
            .iter()
            .any(|u| u.upload_id == id3)
    );
}

async fn copy_replaces_or_keeps_metadata<S: ObjectStore>(s: &S, p: &str) {
    let k = format!("{p}c");
    let m = meta(&[("mode", "33188"), ("color", "blue")]);
    let etag = s
        .put(&k, Bytes::from_static(b"data"), &m)
        .await
        .unwrap()
        .etag;
    let k2 = format!("{p}c2");
    s.copy(&k, &k2, None, Some(&etag)).await.unwrap();
    assert_eq!(s.head(&k2).await.unwrap().user_meta.unwrap(), m);
    let m2 = meta(&[("mode", "33261")]);
    s.copy(&k, &k, Some(&m2), Some(&etag)).await.unwrap();
    let h = s.head(&k).await.unwrap();
    assert_eq!(h.user_meta.unwrap(), m2);
    assert_eq!(&s.get_range(&k, 0..4, None).await.unwrap()[..], b"data");
    assert_eq!(
        s.copy(&k, &k2, None, Some("\"stale\"")).await.unwrap_err(),
        StoreError::PreconditionFailed
    );
    s.delete(&k2).await.unwrap();
    s.delete(&k2).await.unwrap(); // deleting a missing key succeeds
    assert_eq!(s.head(&k2).await.unwrap_err(), StoreError::NotFound);
}

/// Writes to one key in quick succession (a file's times, then its mode: `rsync -a`) leave the
/// last one current. Garage gives a CopyObject the current millisecond even when another
/// version of the key has it and breaks such ties arbitrarily; `AwsStore` spaces writes to
/// one key (`store::spacing`), without which about one pair in a hundred lost its second write.
async fn quick_successive_writes_to_one_key_keep_the_last<S: ObjectStore>(s: &S, p: &str) {
    let mut lost = Vec::new();
    for i in 0..300 {
        let k = format!("{p}q{i}");
        let etag = put(s, &k, b"x").await;
        let times = meta(&[("mtime", "1000000000")]);
        let e2 = s
            .copy(&k, &k, Some(&times), Some(&etag))
            .await
            .unwrap()
            .etag;
        let mode = meta(&[("mtime", "1000000000"), ("mode", "33257")]);
        s.copy(&k, &k, Some(&mode), Some(&e2)).await.unwrap();
        if s.head(&k).await.unwrap().user_meta.unwrap() != mode {
            lost.push(k);
        }
    }
    assert!(lost.is_empty(), "the last write was lost on {lost:?}");
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let s = MemoryStore::new();
                    super::$case(&s, "p/").await;
                }
            )*
        }
        mod garage {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let env = common::S3Env::get();
                    let s = env.store().await;
                    let p = common::unique_prefix(stringify!($case));
                    super::$case(&s, &p).await;
                    common::delete_prefix(&s, &p).await;
                }
            )*
        }
    };
}

contract!(
    roundtrip_with_metadata_and_empty_objects,
    if_match_refuses_replaced_objects,
    listing_order_delimiters_and_pages,
    hostile_key_names_round_trip,
    multipart_upload_copy_and_abort,
    copy_replaces_or_keeps_metadata,
    quick_successive_writes_to_one_key_keep_the_last,
);
