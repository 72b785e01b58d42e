//! Many hosts, one bucket: two mounts of one prefix, each with its own cache directory and
//! host name, stand for two machines. What a close on one guarantees on the other
//! (close-to-open), and that no close silently replaces a version its host did not see:
//! on Garage, which does not check conditional writes (a HEAD before the upload does), and on
//! moto, which checks them like AWS.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::common::*;

/// Two mounts of one new prefix on `env`, named `alpha` and `beta`, each with `extra` flags.
fn two_hosts(env: &S3Env, name: &str, extra: &[&str]) -> (Mount, Mount, String) {
    let prefix = unique_prefix(name);
    let source = format!("{}:{prefix}", env.bucket);
    let mount = |host: &str| {
        let mut args = vec!["--host-name", host];
        args.extend_from_slice(extra);
        Mount::on(env.clone(), &source, &prefix, &args, &[])
    };
    (mount("alpha"), mount("beta"), prefix)
}

/// Gives the kernel time to deliver the RELEASE of descriptors just closed: it sends it after
/// close() returned, and until it arrives a new open on this host shares the closed
/// descriptor's open file, with its version (docs/SEMANTICS.md, many hosts).
fn released() {
    std::thread::sleep(std::time::Duration::from_millis(300));
}

fn open_rw(p: &std::path::Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

/// The doctor's `failed` entries for a mount's cache directory.
fn doctor_failed(env: &S3Env, m: &Mount) -> Vec<String> {
    let mut doctor = std::process::Command::new(pailfs_bin());
    env.apply(&mut doctor)
        .args(["doctor", &m.source, "--json", "--cache-dir"])
        .arg(m.cache.path());
    let out = doctor.output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    report["local"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "failed")
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect()
}

/// The sequence: both hosts open `base`, A rewrites its bytes in place and closes, then
/// B does (every byte rewritten, so B's upload needs nothing of the version it opened). The
/// mount says at start when the server does not check conditions (`server_checks`). B's close must fail (ESTALE) instead of silently replacing A's saved write; B's data
/// is kept in failed/ (listed by `pailfs doctor`) and B's log names the host that won.
fn an_in_place_rewrite_racing_another_host(env: &S3Env, name: &str, server_checks: bool) {
    let (a, b, prefix) = two_hosts(env, name, &[]);
    let said = a.log_text().contains("does not check conditional writes");
    assert_eq!(said, !server_checks, "{}", a.log_text());
    env.put(&format!("{prefix}base"), b"0000");
    let fa = open_rw(&a.p("base"));
    let fb = open_rw(&b.p("base"));
    fa.write_all_at(b"AAAA", 0).unwrap();
    fb.write_all_at(b"BBBB", 0).unwrap();
    fa.sync_all().unwrap();
    drop(fa);
    let err = fb.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    drop(fb);
    assert_eq!(env.stored(&format!("{prefix}base")), b"AAAA");
    let log = b.log_text();
    assert!(
        log.contains("changed by another client") && log.contains("written by alpha"),
        "the winner is not named: {log}"
    );
    let kept = doctor_failed(env, &b);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs::read(&kept[0]).unwrap(), b"BBBB");
    // B sees A's version now.
    assert_eq!(fs::read(b.p("base")).unwrap(), b"AAAA");
}

#[test]
fn an_in_place_rewrite_racing_another_host_fails_its_close_on_garage() {
    if !alone("hosts::an_in_place_rewrite_racing_another_host_fails_its_close_on_garage") {
        return;
    }
    an_in_place_rewrite_racing_another_host(&S3Env::get(), "race-garage", false);
}

#[test]
fn an_in_place_rewrite_racing_another_host_fails_its_close_on_moto() {
    if !alone("hosts::an_in_place_rewrite_racing_another_host_fails_its_close_on_moto") {
        return;
    }
    an_in_place_rewrite_racing_another_host(&S3Env::moto_full(), "race-moto", true);
}

/// A file created on both hosts under one name, and a whole rewrite (`O_TRUNC`) on both: the
/// second close fails, in a single PUT (`If-None-Match: *`, `If-Match`) and, with `sizes`
/// holding one over 5 MiB, in a multipart upload (checked before its completion).
fn both_hosts_create_and_rewrite(env: &S3Env, name: &str, sizes: &[usize]) {
    let (a, b, prefix) = two_hosts(env, name, &["--part-size", "5M"]);
    for (i, len) in sizes.iter().copied().enumerate() {
        let file = &format!("f{i}");
        let mut fa = fs::File::create(a.p(file)).unwrap();
        let mut fb = fs::File::create(b.p(file)).unwrap();
        fa.write_all(&pseudo_random(len, 1)).unwrap();
        fb.write_all(&pseudo_random(len, 2)).unwrap();
        fa.sync_all().unwrap();
        let err = fb.sync_all().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "new {file}: {err}");
        assert!(env.stored(&format!("{prefix}{file}")) == pseudo_random(len, 1));
        drop((fa, fb));
        // Both rewrite it whole; A first.
        let mut fa = fs::File::create(a.p(file)).unwrap();
        let mut fb = fs::File::create(b.p(file)).unwrap();
        fa.write_all(&pseudo_random(len, 3)).unwrap();
        fb.write_all(&pseudo_random(len, 4)).unwrap();
        fa.sync_all().unwrap();
        let err = fb.sync_all().unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ESTALE),
            "rewrite {file}: {err}"
        );
        assert!(env.stored(&format!("{prefix}{file}")) == pseudo_random(len, 3));
    }
}

#[test]
fn both_hosts_creating_or_rewriting_one_file_fail_the_second_close_on_garage() {
    if !alone("hosts::both_hosts_creating_or_rewriting_one_file_fail_the_second_close_on_garage") {
        return;
    }
    both_hosts_create_and_rewrite(&S3Env::get(), "both-garage", &[100, 11 << 20]);
}

/// On moto the conditions ride on the PUT itself. Single PUTs only: moto 5.2.1 answers every
/// CompleteMultipartUpload of this bucket with a `CompleteMultipartUploadResponse` root that
/// the SDK refuses (the object is stored; the close reports EIO), so a multipart close cannot
/// be shown to succeed there.
#[test]
fn both_hosts_creating_or_rewriting_one_file_fail_the_second_close_on_moto() {
    if !alone("hosts::both_hosts_creating_or_rewriting_one_file_fail_the_second_close_on_moto") {
        return;
    }
    both_hosts_create_and_rewrite(&S3Env::moto_full(), "both-moto", &[100, 3 << 20]);
}

/// `--on-conflict keep-both`: the losing version is stored beside the winner as
/// `NAME.conflict-HOST-TIME`, the close succeeds, and the loser's host lists both.
#[test]
fn keep_both_stores_the_losing_version_beside_the_winner() {
    if !alone("hosts::keep_both_stores_the_losing_version_beside_the_winner") {
        return;
    }
    let env = S3Env::get();
    let (a, b, prefix) = two_hosts(&env, "keepboth", &["--on-conflict", "keep-both"]);
    env.put(&format!("{prefix}doc.txt"), b"first draft");
    let mut fa = fs::File::create(a.p("doc.txt")).unwrap();
    let mut fb = fs::File::create(b.p("doc.txt")).unwrap();
    fa.write_all(b"alpha's version").unwrap();
    fb.write_all(b"beta's version").unwrap();
    fa.sync_all().unwrap();
    fb.sync_all().unwrap();
    drop(fa);
    drop(fb);
    assert_eq!(env.stored(&format!("{prefix}doc.txt")), b"alpha's version");
    let names: Vec<String> = fs::read_dir(b.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let copy = names
        .iter()
        .find(|n| n.starts_with("doc.txt.conflict-beta-"))
        .unwrap_or_else(|| panic!("no conflict copy in {names:?}"));
    assert_eq!(fs::read(b.p(copy)).unwrap(), b"beta's version");
    assert_eq!(fs::read(b.p("doc.txt")).unwrap(), b"alpha's version");
    assert_eq!(env.stored(&format!("{prefix}{copy}")), b"beta's version");
    assert!(doctor_failed(&env, &b).is_empty());
}

/// `--on-conflict overwrite` sends no condition: the last close wins (the behaviour before).
#[test]
fn overwrite_mode_lets_the_last_close_win() {
    if !alone("hosts::overwrite_mode_lets_the_last_close_win") {
        return;
    }
    let env = S3Env::get();
    let (a, b, prefix) = two_hosts(&env, "overwrite", &["--on-conflict", "overwrite"]);
    env.put(&format!("{prefix}f"), b"0000");
    let fa = open_rw(&a.p("f"));
    let fb = open_rw(&b.p("f"));
    fa.write_all_at(b"AAAA", 0).unwrap();
    fb.write_all_at(b"BBBB", 0).unwrap();
    fa.sync_all().unwrap();
    fb.sync_all().unwrap();
    assert_eq!(env.stored(&format!("{prefix}f")), b"BBBB");
}

/// Close-to-open: once a close on A returned, an open on B reads that content and size, even
/// when B read the previous version a moment before. New and removed names show in B's
/// listing within the documented bound (the metadata TTL, 5 s by default).
#[test]
fn a_close_on_one_host_is_seen_by_the_next_open_on_another() {
    if !alone("hosts::a_close_on_one_host_is_seen_by_the_next_open_on_another") {
        return;
    }
    let env = S3Env::get();
    let (a, b, _prefix) = two_hosts(&env, "cto", &[]);
    fs::write(a.p("v"), b"version 0").unwrap();
    assert_eq!(fs::read(b.p("v")).unwrap(), b"version 0");
    released();
    for i in 1..=10 {
        let content = format!("version {i} {}", "x".repeat(i * 7));
        fs::write(a.p("v"), &content).unwrap();
        let mut f = fs::File::open(b.p("v")).unwrap();
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, content, "round {i}");
        assert_eq!(f.metadata().unwrap().len(), content.len() as u64);
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), content.len() as u64);
        drop(f);
        released();
    }
    // Names: how long until B's listing shows A's new name, and drops a removed one.
    let bound = Duration::from_secs(6);
    let mut worst = Duration::ZERO;
    let listed = |name: &str| {
        fs::read_dir(b.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == name)
    };
    for i in 0..3 {
        let _ = listed("v");
        let name = format!("n{i}");
        fs::write(a.p(&name), b"new").unwrap();
        let t = Instant::now();
        while !listed(&name) {
            assert!(
                t.elapsed() < bound,
                "{name} not listed on B after {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        worst = worst.max(t.elapsed());
        fs::remove_file(a.p(&name)).unwrap();
        let t = Instant::now();
        while listed(&name) {
            assert!(
                t.elapsed() < bound,
                "{name} still listed on B after {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        worst = worst.max(t.elapsed());
    }
    eprintln!("names changed on A showed in B's listing within {worst:?}");
}

/// A file opened before another client replaced it with a shorter version and read after:
/// the reader gets ESTALE, never the new version's bytes to the old length (the kernel fills a
/// short answer with zeros up to the size it was told at open). Found by the soak.
#[test]
fn a_read_after_a_shorter_version_replaced_the_open_file_is_never_zero_filled() {
    if !alone("hosts::a_read_after_a_shorter_version_replaced_the_open_file_is_never_zero_filled") {
        return;
    }
    let env = S3Env::get();
    let (a, _b, prefix) = two_hosts(&env, "shorter", &[]);
    env.put(&format!("{prefix}f"), &[b'x'; 140]);
    let mut f = fs::File::open(a.p("f")).unwrap();
    env.put(&format!("{prefix}f"), b"[short]");
    let mut got = Vec::new();
    match f.read_to_end(&mut got) {
        Ok(_) => assert_eq!(got, b"[short]", "a mixed read"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }
    drop(f);
    released();
    // The next open reads the new version whole.
    assert_eq!(fs::read(a.p("f")).unwrap(), b"[short]");
    // Replaced by a longer version: the open reads one of the two whole (the one it opened
    // when the kernel kept its pages, else the new one), never a mix.
    let mut f = fs::File::open(a.p("f")).unwrap();
    env.put(&format!("{prefix}f"), &[b'y'; 300]);
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert!(
        got == b"[short]" || got == [b'y'; 300],
        "a mixed read: {got:?}"
    );
}
