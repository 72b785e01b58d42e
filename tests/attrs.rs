//! The persistent attribute cache (`cache::attrs`, `store::remembered`) through real mounts
//! on Garage: `ls -l` after a remount, a crash, or on another mount sharing the cache
//! directory shows exact attributes with no HEAD; an object changed by another client is
//! never shown with what the cache held of its older version.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use pailfs::store::{ObjectStore, UserMeta};

const HEAD: &str = "pailfs_requests_total{op=\"head\"}";

fn heads(m: &Mount) -> u64 {
    stat_value(&stats(m, true), HEAD)
}

/// Files `d/f00..` with modes 0600 and 0751 in turn, and a symlink `d/link`.
fn make_files(m: &Mount, n: usize) {
    std::fs::create_dir(m.p("d")).unwrap();
    for i in 0..n {
        let p = m.p(&format!("d/f{i:02}"));
        write_synced(&p, format!("file {i}").as_bytes()).unwrap();
        let mode = if i % 2 == 0 { 0o600 } else { 0o751 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::symlink("f00", m.p("d/link")).unwrap();
}

/// What `ls -l` shows of every entry: mode, owner, size, time and name (`--full-time`).
fn ls_long(m: &Mount, rel: &str) -> Vec<String> {
    let out = Command::new("ls")
        .args(["-l", "--full-time", "-n"])
        .arg(m.p(rel))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// `ls -l` on `m` after the directory itself was looked up: the lines and the HEADs it cost.
fn ls_long_counted(m: &Mount, rel: &str) -> (Vec<String>, u64) {
    assert!(m.p(rel).is_dir());
    let before = heads(m);
    let lines = ls_long(m, rel);
    (lines, heads(m) - before)
}

#[test]
fn ls_l_after_a_remount_asks_no_head_and_shows_the_same() {
    let mut m = Mount::new(&unique_prefix("attrs-remount"));
    make_files(&m, 20);
    let (before, _) = ls_long_counted(&m, "d");
    assert_eq!(before.len(), 21, "{before:?}");
    assert!(before[0].starts_with("-rw-------"), "{before:?}");
    assert!(before[1].starts_with("-rwxr-x--x"), "{before:?}");
    m.remount();
    let (after, asked) = ls_long_counted(&m, "d");
    assert_eq!(after, before);
    assert_eq!(asked, 0, "no HEAD: the attribute cache knew every file");
    let report = stats(&m, false);
    // 21 entries, and the marker object of `d` twice (the lookup of `d`, then its listing).
    assert!(
        report.contains("attribute cache   hit rate 100.0% (23 hits, 0 misses)"),
        "{report}"
    );
}

/// The control: without the cache the same listing costs a HEAD per file, so the test above
/// measures the cache and not something else.
#[test]
fn without_the_cache_a_remounted_ls_l_heads_every_file() {
    let mut m = Mount::with_args(&unique_prefix("attrs-off"), &["--attr-cache-size", "0"]);
    make_files(&m, 6);
    m.remount();
    let (lines, asked) = ls_long_counted(&m, "d");
    assert_eq!(lines.len(), 7);
    assert_eq!(asked, 7, "a HEAD per file and symlink");
}

#[test]
fn the_cache_survives_a_crash() {
    let mut m = Mount::new(&unique_prefix("attrs-crash"));
    make_files(&m, 8);
    let (before, _) = ls_long_counted(&m, "d");
    // The writer thread writes what is queued every 200 ms; a crash loses at most that.
    std::thread::sleep(Duration::from_millis(600));
    m.kill_daemon();
    m.restart();
    let (after, asked) = ls_long_counted(&m, "d");
    assert_eq!(after, before);
    assert_eq!(asked, 0);
}

#[test]
fn mounts_sharing_a_cache_directory_share_what_it_knows() {
    let prefix = unique_prefix("attrs-shared");
    let a = Mount::new(&prefix);
    make_files(&a, 8);
    let (seen_by_a, _) = ls_long_counted(&a, "d");
    // A's writer thread writes what it learned every 200 ms.
    std::thread::sleep(Duration::from_millis(600));
    let b = Mount::sharing_cache(&a, &prefix, &[]);
    let (seen_by_b, asked) = ls_long_counted(&b, "d");
    assert_eq!(seen_by_b, seen_by_a);
    assert_eq!(asked, 0, "B found A's answers in the shared cache");
}

/// Another client replaces `d/f00` (new content: a new ETag, no stored mode) and copies
/// `d/f01` onto itself with a new mode (S3 keeps a single-part object's ETag then, but its
/// date moves): the next mount shows both as S3 has them, not as the cache had them.
#[test]
fn an_object_changed_elsewhere_is_never_shown_with_cached_attributes() {
    let env = S3Env::get();
    let prefix = unique_prefix("attrs-changed");
    let mut m = Mount::new(&prefix);
    make_files(&m, 2);
    let (before, _) = ls_long_counted(&m, "d");
    assert!(before[0].starts_with("-rw-------") && before[1].starts_with("-rwxr-x--x"));
    m.unmount();
    // Later than an upload's date may be taken as the same version (`BIND_WINDOW`, 2 s): the
    // mount never listed `d` (it made it), so its cache entries carry no date from S3.
    std::thread::sleep(Duration::from_millis(3100));
    env.put(&format!("{prefix}d/f00"), b"replaced elsewhere");
    let mut meta: UserMeta = [("mode".to_string(), "33188".to_string())].into(); // 0644
    meta.insert("uid".into(), "0".into());
    let key = format!("{prefix}d/f01");
    rt().block_on(async {
        let s = env.store().await;
        s.copy(&key, &key, Some(&meta), None).await.unwrap();
    });
    m.restart();
    let (after, _) = ls_long_counted(&m, "d");
    let f00 = std::fs::metadata(m.p("d/f00")).unwrap();
    assert_eq!(f00.len(), 18, "{after:?}");
    assert_eq!(f00.mode() & 0o7777, 0o644, "the default mode: {after:?}");
    assert!(
        after[1].starts_with("-rw-r--r--"),
        "the new stored mode: {after:?}"
    );
}

#[test]
fn doctor_reports_the_cache_size_and_hit_rate() {
    let env = S3Env::get();
    let mut m = Mount::new(&unique_prefix("attrs-doctor"));
    make_files(&m, 4);
    m.remount();
    ls_long_counted(&m, "d");
    m.unmount();
    let mut doctor = Command::new(pailfs_bin());
    env.apply(&mut doctor)
        .args(["doctor", &m.source, "--cache-dir"])
        .arg(m.cache_dir());
    let out = doctor.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("attribute cache "))
        .unwrap_or_else(|| panic!("{text}"));
    // Four files, a symlink and the marker of `d`; the marker is listed twice (see above).
    assert!(line.contains(": 6 objects, "), "{line}");
    assert!(
        line.contains("hit rate 100.0% (7 hits, 0 misses)"),
        "{line}"
    );
}
