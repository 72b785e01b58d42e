//! Faults between pailfs and S3, through a fault-injecting proxy in front of the local Garage:
//! throttling and resets on a tenth of all requests, bodies cut off mid-stream, error
//! documents in the middle of a read. Every byte must still arrive intact, and no operation
//! may fail, because each of these faults is one the retry and resume logic must absorb.

use std::sync::Arc;

use std::path::Path;

use pailfs::cache::{BLOCK, MemoryShares};
use pailfs::store::ObjectStore;
use pailfs::store::aws::AwsStore;
use pailfs::store::client::build_client;

use crate::common::proxy::{Cut, FaultProxy};
use crate::common::*;

const MIB: usize = 1 << 20;

/// A tree of `n` files of assorted sizes (a few of them multipart-sized).
fn make_tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let len = match i % 50 {
            0 => 6 * MIB + i,
            1 => 0,
            _ => (i * 997) % 20_000,
        };
        std::fs::write(dir.join(format!("f{i}.bin")), pseudo_random(len, i as u64)).unwrap();
    }
}

#[test]
fn a_tenth_of_requests_throttled_or_reset_loses_nothing() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("flaky");
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 500);
    let mut m = Mount::with_args(
        &prefix,
        &[
            "--endpoint-url",
            &proxy.url,
            "--max-attempts",
            "10",
            "--part-size",
            "5M",
        ],
    );
    proxy.set_fail_percent(10);
    sh(&format!(
        "cp -r {}/. {}/",
        src.path().display(),
        m.path().display()
    ));
    m.remount();
    let back = tempfile::tempdir().unwrap();
    sh(&format!(
        "cp -r {}/. {}/ && diff -r {} {}",
        m.path().display(),
        back.path().display(),
        src.path().display(),
        back.path().display()
    ));
    proxy.set_fail_percent(0);
    let (slow, resets, ok) = (
        proxy.count(|c| &c.slowdowns),
        proxy.count(|c| &c.resets),
        proxy.count(|c| &c.forwarded),
    );
    eprintln!("{slow} SlowDown answers, {resets} resets, {ok} requests forwarded");
    assert!(
        slow > 20 && resets > 20,
        "too few faults injected: {slow} SlowDown, {resets} resets"
    );
    drop(m);
    rt().block_on(async { delete_prefix(&env.store().await, &prefix).await });
}

async fn store_via(url: &str) -> AwsStore {
    let env = S3Env::get();
    let mut s = env.settings();
    s.endpoint_url = Some(url.to_string());
    AwsStore::new(build_client(&s).await, env.bucket)
}

/// A 24 MiB object stored as three 8 MiB parts.
async fn three_part_object(store: &AwsStore, key: &str) -> Vec<u8> {
    let data = pseudo_random(24 * MIB, 7);
    let meta = Default::default();
    let id = store.create_multipart(key, &meta).await.unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(8 * MIB).enumerate() {
        let n = i as i32 + 1;
        let etag = store
            .upload_part(key, &id, n, bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
        parts.push((n, etag));
    }
    store.complete_multipart(key, &id, &parts).await.unwrap();
    data
}

#[test]
fn bodies_cut_off_mid_stream_are_resumed_with_the_right_bytes() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("cut");
    let key = format!("{prefix}big.bin");
    let rt = rt();
    let data = rt.block_on(async { three_part_object(&env.store().await, &key).await });
    let via = rt.block_on(store_via(&proxy.url));
    // At 1 MiB, then exactly at the first part boundary: each read resumes from there.
    for at in [MIB as u64, 8 * MIB as u64] {
        proxy.set_cut(Some(Cut {
            key_part: "big.bin".into(),
            at,
        }));
        let before = proxy.count(|c| &c.cuts);
        let got = rt
            .block_on(via.get_range(&key, 0..data.len() as u64, None))
            .unwrap();
        assert_eq!(
            proxy.count(|c| &c.cuts),
            before + 1,
            "cut at {at} not injected"
        );
        assert_eq!(sha256(&got), sha256(&data), "cut at {at}");
    }
    // Through a mount: every block fetch that spans the cut breaks there and resumes.
    proxy.set_cut(Some(Cut {
        key_part: "big.bin".into(),
        at: 8 * MIB as u64 + 4097,
    }));
    let before = proxy.count(|c| &c.cuts);
    let m = Mount::with_args(&prefix, &["--endpoint-url", &proxy.url]);
    let read = std::fs::read(m.p("big.bin"));
    let log = m.log_text();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let read = read.unwrap_or_else(|e| panic!("reading through the mount: {e}: {problems:#?}"));
    assert_eq!(sha256(&read), sha256(&data));
    assert!(
        proxy.count(|c| &c.cuts) > before,
        "no cut happened through the mount"
    );
    assert!(
        log.contains("resuming from there"),
        "the cut read was not resumed: {problems:#?}"
    );
    proxy.set_cut(None);
    drop(m);
    rt.block_on(async { delete_prefix(&env.store().await, &prefix).await });
}

#[test]
fn an_error_document_mid_read_never_becomes_file_data() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("errdoc");
    let key = format!("{prefix}doc.bin");
    let rt = rt();
    let data = rt.block_on(async { three_part_object(&env.store().await, &key).await });
    let m = Mount::with_args(&prefix, &["--endpoint-url", &proxy.url]);
    // The third GET of the object (well inside the sequential read) answers 500 + XML.
    proxy.set_error_on_get("doc.bin", 3);
    let got = std::fs::read(m.p("doc.bin")).unwrap();
    assert_eq!(proxy.count(|c| &c.errors), 1, "the error was not injected");
    assert_eq!(got.len(), data.len());
    assert!(
        !got.windows(13).any(|w| w == b"InternalError"),
        "the error document leaked into the file"
    );
    assert_eq!(sha256(&got), sha256(&data));
    drop(m);
    rt.block_on(async { delete_prefix(&env.store().await, &prefix).await });
}

#[test]
fn sizes_at_every_boundary_round_trip() {
    let env = S3Env::get();
    let prefix = unique_prefix("bounds");
    // With these settings: parts of 5 MiB, 1 MiB cache blocks, read-ahead GETs of up to
    // 8 blocks, and a read-ahead window of up to half the block cache.
    let mut m = Mount::with_args(&prefix, &["--part-size", "5M", "--memory-limit", "128M"]);
    let part = 5 * MIB;
    let window = (MemoryShares::split(128 << 20, part as u64).cache / BLOCK / 2) as usize * MIB;
    let sizes = [
        0,
        1,
        part - 1,
        part,
        part + 1,
        3 * part + 1,
        MIB - 1,
        MIB + 1,
        8 * MIB - 1,
        8 * MIB + 1,
        window - 1,
        window + 1,
    ];
    let src = tempfile::tempdir().unwrap();
    for (i, len) in sizes.iter().enumerate() {
        std::fs::write(
            src.path().join(format!("s{len}")),
            pseudo_random(*len, i as u64 + 100),
        )
        .unwrap();
    }
    sh(&format!(
        "cp {}/* {}/",
        src.path().display(),
        m.path().display()
    ));
    m.remount();
    let store = rt().block_on(env.store());
    for len in sizes {
        let name = format!("s{len}");
        let want = sha256_file(&src.path().join(&name));
        assert_eq!(sha256_file(&m.p(&name)), want, "read back {name}");
        let stored = rt()
            .block_on(store.get_range(&format!("{prefix}{name}"), 0..len as u64, None))
            .unwrap();
        assert_eq!(stored.len(), len, "{name} stored size");
        assert_eq!(sha256(&stored), want, "{name} as stored");
    }
    drop(m);
    rt().block_on(async { delete_prefix(&store, &prefix).await });
}

/// Keys S3 accepts but file systems may not, put straight into the bucket.
fn hostile_corpus(prefix: &str) -> (Vec<(String, String)>, Vec<String>) {
    // Longer than Linux's usual NAME_MAX (255): FUSE passes names up to 1,024 bytes.
    let long_name = "n".repeat(600);
    let long_key_rel = format!(
        "long/{}/{}/{}/{}",
        "a".repeat(250),
        "b".repeat(250),
        "c".repeat(250),
        "d".repeat(1024 - prefix.len() - 5 - 3 * 251)
    );
    let ok: Vec<(String, String)> = [
        "with space.txt",
        "percent%20sign%.txt",
        "plus+sign.txt",
        "hash#tag.txt",
        "question?.txt",
        "caf\u{e9}-nfc.txt",
        "cafe\u{301}-nfd.txt",
        "emoji-\u{1f600}.txt",
        "ctl-\u{1}-\u{7f}.txt",
        "tab\there.txt",
        "new\nline.txt",
        "both",
        "both-sibling.txt",
        "both.txt",
        long_name.as_str(),
        long_key_rel.as_str(),
        "deep/er/still/file",
        "amp&semi;colon.txt",
        "quote'\"<>|*.txt",
        "bs\\back.txt",
    ]
    .iter()
    .enumerate()
    .map(|(i, rel)| (rel.to_string(), format!("content {i} of {rel:?}\n")))
    .collect();
    let bad: Vec<String> = [
        "/lead",
        "x//y",
        "./dot",
        "dots/../up",
        "marker-with-data/",
        "nul-\u{0}-byte",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (ok, bad)
}

#[test]
fn hostile_keys_are_listed_and_read_or_skipped_and_reported() {
    let env = S3Env::get();
    let prefix = unique_prefix("hostile");
    let (ok, bad) = hostile_corpus(&prefix);
    let rt = rt();
    let store = rt.block_on(env.store());
    rt.block_on(async {
        for (rel, body) in &ok {
            let key = format!("{prefix}{rel}");
            assert!(key.len() <= 1024, "{} bytes", key.len());
            if rel.starts_with("long/") {
                assert_eq!(key.len(), 1024);
            }
            store
                .put(&key, body.clone().into_bytes().into(), &Default::default())
                .await
                .unwrap();
        }
        // `both` is also a directory: the directory wins and the file is hidden.
        store
            .put(
                &format!("{prefix}both/inner"),
                "inner\n".into(),
                &Default::default(),
            )
            .await
            .unwrap();
        for rel in &bad {
            store
                .put(
                    &format!("{prefix}{rel}"),
                    "hidden\n".into(),
                    &Default::default(),
                )
                .await
                .unwrap();
        }
    });
    let m = Mount::new(&prefix);
    let root = m.path().display().to_string();
    sh(&format!("ls -lR {root} > /dev/null"));
    let found = std::process::Command::new("find")
        .arg(m.path())
        .args(["-type", "f", "-print0"])
        .output()
        .unwrap();
    assert!(found.status.success());
    let mut files: Vec<String> = found
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap()[root.len() + 1..].to_string())
        .collect();
    files.sort();
    let mut want: Vec<String> = ok
        .iter()
        .map(|(rel, _)| rel.clone())
        .filter(|r| r != "both")
        .chain(["both/inner".to_string()])
        .collect();
    want.sort();
    assert_eq!(files, want);
    for (rel, body) in ok.iter().filter(|(r, _)| r != "both") {
        assert_eq!(
            std::fs::read_to_string(m.p(rel)).unwrap(),
            *body,
            "content of {rel:?}"
        );
    }
    // `marker-with-data/` shows as an (empty) directory; `x//y` and `dots/../up` leave
    // empty directories `x` and `dots`; the rest leave nothing.
    for dir in ["marker-with-data", "x", "dots"] {
        assert_eq!(
            std::fs::read_dir(m.p(dir)).unwrap().count(),
            0,
            "{dir} is not empty"
        );
    }

    // `pailfs doctor` lists every key the mount could not show, and exits 1.
    let out = std::process::Command::new(pailfs_bin())
        .args(["doctor", &format!("{}:{prefix}", env.bucket), "--json"])
        .args(["--cache-dir", m.cache.path().to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &env.endpoint)
        .env("AWS_ACCESS_KEY_ID", &env.key)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret)
        .env("AWS_REGION", &env.region)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = report["unreachable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap()[prefix.len()..].to_string())
        .collect();
    listed.sort();
    let mut want_bad: Vec<String> = bad.iter().cloned().chain(["both".to_string()]).collect();
    want_bad.sort();
    assert_eq!(listed, want_bad);
    // Each was logged by the mount, once.
    let log = m.log_text();
    let skips: Vec<&str> = log.lines().filter(|l| l.contains("is not shown")).collect();
    assert!(
        skips.iter().any(|l| l.contains("x//")),
        "skip not logged: {skips:#?}"
    );
    // Control characters of keys are escaped in the log: no key forges a line of its own.
    assert!(
        !log.lines().any(|l| l.starts_with("line.txt")) && !log.contains('\u{1}'),
        "a key's control characters reached the log raw"
    );
    drop(m);
    rt.block_on(async { delete_prefix(&store, &prefix).await });
}

/// A server (or a proxy in between) answering listings with keys that are not UTF-8 or keys
/// outside the prefix asked for: the good keys still show, the bad ones are skipped and
/// reported, nothing panics. (A repeated continuation token: `tests/core.rs`,
/// `a_listing_that_repeats_a_token_fails_instead_of_going_round`.)
#[test]
fn a_hostile_server_listing_breaks_nothing() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("hostlist");
    let rt = rt();
    let store = rt.block_on(env.store());
    rt.block_on(async {
        for name in ["good1", "good2", "good3", "sub/x"] {
            store
                .put(&format!("{prefix}{name}"), "x".into(), &Default::default())
                .await
                .unwrap();
        }
    });
    let m = Mount::with_args(&prefix, &["--endpoint-url", &proxy.url]);
    // good2 becomes a key with bytes that are not UTF-8; good3 one outside the prefix.
    proxy.set_list_rewrite(Some(Arc::new(|body: String| {
        let body = body.replace("good2</Key>", "bad%FF%FE</Key>");
        // The whole key of good3 replaced by one outside the prefix.
        match (body.find("good3</Key>"), body.find("<Key>")) {
            (Some(end), Some(_)) => {
                let start = body[..end].rfind("<Key>").unwrap() + "<Key>".len();
                format!("{}elsewhere%2Fgood3{}", &body[..start], &body[end + 5..])
            }
            _ => body,
        }
    })));
    let names: Vec<String> = std::fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"good1".to_string()), "{names:?}");
    assert!(names.contains(&"sub".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("bad")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("good3")), "{names:?}");
    let log = m.log_text();
    assert!(log.contains("not UTF-8"), "not reported");
    assert!(log.contains("elsewhere/good3"), "outside key not reported");
    proxy.set_list_rewrite(None);
    drop(m);
    rt.block_on(async { delete_prefix(&store, &prefix).await });
}

#[test]
fn a_debug_log_of_a_whole_session_holds_no_secret() {
    let env = S3Env::get();
    let prefix = unique_prefix("secrets");
    let mut m = Mount::with_env(&prefix, &[], &[("RUST_LOG", "debug")]);
    sh(&format!(
        "cd {0} && echo hi > a && mkdir d && mv a d/b && cat d/b && chmod 600 d/b && rm -r d && ls -la",
        m.path().display()
    ));
    m.unmount();
    let mut log = m.log_text();
    // A failing mount (wrong secret) logs too.
    let bad_log = m.cache.path().join("bad.log");
    let wrong = format!("{}x", &env.secret[..env.secret.len() - 1]);
    let out = std::process::Command::new(pailfs_bin())
        .args(["mount", &format!("{}:{prefix}", env.bucket)])
        .arg(m.path())
        .args(["--foreground", "--log-file", bad_log.to_str().unwrap()])
        .args(["--cache-dir", m.cache.path().to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .env("AWS_ENDPOINT_URL", &env.endpoint)
        .env("AWS_ACCESS_KEY_ID", &env.key)
        .env("AWS_SECRET_ACCESS_KEY", &wrong)
        .env("AWS_REGION", &env.region)
        .output()
        .unwrap();
    assert!(!out.status.success());
    log.push_str(&std::fs::read_to_string(&bad_log).unwrap());
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(log.len() > 10_000, "the debug log is suspiciously short");
    for secret in [&env.secret, &wrong] {
        assert!(!log.contains(secret.as_str()), "a secret key is in the log");
        assert!(
            !log.contains(&secret[..16]),
            "part of a secret key is in the log"
        );
    }
}

/// `--requester-pays --expected-bucket-owner` go with every request a mount makes: the
/// access check, listings, reads, writes, a multipart upload, copies and deletes.
#[test]
fn requester_pays_and_the_expected_owner_go_with_every_request() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("payer");
    let mut m = Mount::with_args(
        &prefix,
        &[
            "--endpoint-url",
            &proxy.url,
            "--requester-pays",
            "--expected-bucket-owner",
            "123456789012",
            "--part-size",
            "5M",
        ],
    );
    std::fs::write(m.p("a.txt"), b"paid for").unwrap();
    std::fs::write(m.p("big.bin"), pseudo_random(6 << 20, 3)).unwrap();
    std::fs::rename(m.p("a.txt"), m.p("b.txt")).unwrap();
    assert_eq!(std::fs::read(m.p("b.txt")).unwrap(), b"paid for");
    std::fs::remove_file(m.p("big.bin")).unwrap();
    m.unmount();
    let (all, paid) = (proxy.count(|c| &c.forwarded), proxy.count(|c| &c.paid));
    assert!(all > 5, "{all} requests");
    assert_eq!(paid, all, "every request carries both headers");
}

/// `pailfs check --requester-pays --expected-bucket-owner` sends them with each of its probes
/// too (the ACL probes forgot them): every request names the owner, and every one but
/// GetBucketLocation (which takes no payer) says the requester pays.
#[test]
fn check_sends_the_payer_and_owner_with_every_probe() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("payer-check");
    let out = env
        .apply(&mut std::process::Command::new(pailfs_bin()))
        .args(["check", &format!("{}:{prefix}", env.bucket)])
        .args(["--endpoint-url", &proxy.url, "--requester-pays"])
        .args(["--expected-bucket-owner", "123456789012"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("GetObjectAcl"), "the ACL probes ran: {text}");
    let all = proxy.count(|c| &c.forwarded);
    let owned = proxy.count(|c| &c.owned);
    let paid = proxy.count(|c| &c.paid);
    let locations = proxy.count(|c| &c.locations);
    assert!(
        all > 5 && locations >= 1,
        "{all} requests, {locations} locations"
    );
    assert_eq!(owned, all, "every request names the owner");
    assert_eq!(
        paid + locations,
        all,
        "every request but GetBucketLocation pays"
    );
}

/// The write probe at mount is one PUT that Garage authorizes and refuses to store (its
/// Content-MD5 is of other bytes): no object is written or deleted (on a versioned bucket a PUT
/// and a DELETE would leave a version and a delete marker, and fire object events), and no
/// upload is left open. The versioned-bucket case itself runs on moto
/// (`a_mount_leaves_nothing_of_its_own_on_a_versioned_bucket`).
#[test]
fn the_write_probe_at_mount_writes_and_deletes_no_object() {
    let env = S3Env::get();
    let proxy = FaultProxy::start(&env.endpoint);
    let prefix = unique_prefix("probe");
    let mut m = Mount::with_args(&prefix, &["--endpoint-url", &proxy.url]);
    assert!(!m.p("x").exists());
    m.unmount();
    assert!(!m.log_text().contains("read-only"), "{}", m.log_text());
    assert_eq!(proxy.count(|c| &c.object_puts), 1, "one probe PUT");
    assert_eq!(proxy.count(|c| &c.object_deletes), 0, "object DELETEs");
    let (keys, left) = rt().block_on(async {
        let s = env.store().await;
        let keys = s
            .list(&pailfs::store::ListRequest::flat(&prefix))
            .await
            .unwrap();
        (keys, s.list_multipart_uploads(&prefix).await.unwrap())
    });
    assert!(keys.objects.is_empty(), "{:?}", keys.objects);
    assert!(left.is_empty(), "{left:?}");
}
