//! Case-insensitive mode and name collisions, through real mounts on Garage, and the
//! `pailfs collisions` report.

use std::fs;
use std::process::Command;

use bytes::Bytes;
use pailfs::store::{ListRequest, ObjectStore, Pages, UserMeta};
use serde_json::Value;

use crate::common::{self, Mount, S3Env, rt, sh, unique_prefix};

fn put(prefix: &str, rel: &str, data: &str) {
    let e = S3Env::get();
    let key = format!("{prefix}{rel}");
    let data = data.to_string();
    rt().block_on(async move {
        e.store()
            .await
            .put(&key, Bytes::from(data), &UserMeta::new())
            .await
            .unwrap();
    });
}

/// Every key under `prefix`, relative to it.
fn keys(prefix: &str) -> Vec<String> {
    let e = S3Env::get();
    let prefix = prefix.to_string();
    rt().block_on(async move {
        let s = e.store().await;
        let mut pages = Pages::new(ListRequest::flat(&prefix));
        let mut out = Vec::new();
        while let Some(page) = pages.next(&s).await.unwrap() {
            out.extend(
                page.objects
                    .iter()
                    .map(|o| o.key[prefix.len()..].to_string()),
            );
        }
        out
    })
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn ci_mount(prefix: &str, extra: &[&str]) -> Mount {
    let mut args = vec!["--case-insensitive"];
    args.extend_from_slice(extra);
    Mount::with_args(prefix, &args)
}

#[test]
fn other_spellings_read_the_stored_file_and_listings_show_the_stored_case() {
    let prefix = unique_prefix("ci-read");
    put(&prefix, "MyFile.txt", "stored as MyFile.txt");
    put(&prefix, "Stra\u{df}e.txt", "sharp s");
    put(&prefix, "\u{39f}\u{394}\u{39f}\u{3a3}", "greek capitals");
    let m = ci_mount(&prefix, &[]);
    assert_eq!(
        fs::read_to_string(m.p("MYFILE.TXT")).unwrap(),
        "stored as MyFile.txt"
    );
    assert_eq!(
        fs::read_to_string(m.p("myfile.txt")).unwrap(),
        "stored as MyFile.txt"
    );
    assert_eq!(fs::read_to_string(m.p("STRASSE.TXT")).unwrap(), "sharp s");
    // Final sigma (ς) and medial sigma (σ) fold alike.
    assert_eq!(
        fs::read_to_string(m.p("\u{3bf}\u{3b4}\u{3bf}\u{3c2}")).unwrap(),
        "greek capitals"
    );
    assert_eq!(
        names(m.path()),
        vec![
            "MyFile.txt",
            "Stra\u{df}e.txt",
            "\u{39f}\u{394}\u{39f}\u{3a3}"
        ]
    );
    // Writing through another spelling changes the stored file, never makes a second one.
    fs::write(m.p("MYFILE.TXT"), "rewritten").unwrap();
    assert_eq!(fs::read_to_string(m.p("MyFile.txt")).unwrap(), "rewritten");
    let mut k = keys(&prefix);
    k.sort();
    assert_eq!(
        k,
        vec![
            "MyFile.txt",
            "Stra\u{df}e.txt",
            "\u{39f}\u{394}\u{39f}\u{3a3}"
        ]
    );
    assert!(
        m.log_text().contains("case collision"),
        "the merge is logged"
    );
}

fn tree_with_twins() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("t")).unwrap();
    fs::write(src.path().join("t/a.txt"), "lower").unwrap();
    fs::write(src.path().join("t/A.txt"), "upper").unwrap();
    fs::write(src.path().join("t/other.txt"), "other").unwrap();
    src
}

/// Copies the twins into an existing directory of the mount (so `cp` looks each name up
/// first, as when copying over an earlier copy).
fn cp_into(m: &Mount, src: &tempfile::TempDir) -> std::process::Output {
    fs::create_dir(m.p("t")).unwrap();
    Command::new("cp")
        .arg("-r")
        .arg(src.path().join("t/."))
        .arg(m.p("t"))
        .output()
        .unwrap()
}

#[test]
fn copying_twins_ends_with_one_object_and_a_logged_collision() {
    let prefix = unique_prefix("ci-cp");
    let m = ci_mount(&prefix, &[]);
    let src = tree_with_twins();
    let out = cp_into(&m, &src);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut k = keys(&prefix);
    k.sort();
    assert_eq!(k.len(), 3, "t/, one of a.txt/A.txt, other.txt: {k:?}");
    assert!(k.contains(&"t/other.txt".to_string()));
    assert!(k.iter().any(|x| x.eq_ignore_ascii_case("t/a.txt")));
    let log = m.log_text();
    assert!(
        log.contains("case collision") && log.contains("a.txt") && log.contains("A.txt"),
        "{log}"
    );
    // A create that insists on a new file (O_EXCL, as `cp -r` into a directory it just made
    // does) gets EEXIST rather than the existing file.
    let excl = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("t/OTHER.TXT"));
    assert_eq!(excl.unwrap_err().raw_os_error(), Some(libc::EEXIST));
}

#[test]
fn copying_twins_fails_with_eexist_in_error_mode() {
    let prefix = unique_prefix("ci-cp-err");
    let m = ci_mount(&prefix, &["--case-collision", "error"]);
    let src = tree_with_twins();
    let out = cp_into(&m, &src);
    assert!(!out.status.success(), "cp must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("File exists"), "{err}");
    let mut k = keys(&prefix);
    k.sort();
    assert_eq!(k.len(), 3, "{k:?}");
    // Creating another spelling directly is refused too.
    let e = fs::write(m.p("t/OTHER.TXT"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    assert!(m.log_text().contains("case collision"));
}

#[test]
fn mkdir_of_another_spelling_fails_and_case_only_rename_renames_the_key() {
    let prefix = unique_prefix("ci-mkdir");
    put(&prefix, "docs/readme", "hi");
    let m = ci_mount(&prefix, &[]);
    let e = fs::create_dir(m.p("Docs")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    fs::write(m.p("a.txt"), "content").unwrap();
    sh(&format!(
        "mv '{}' '{}'",
        m.p("a.txt").display(),
        m.p("A.TXT").display()
    ));
    let mut k = keys(&prefix);
    k.sort();
    assert_eq!(k, vec!["A.TXT", "docs/readme"]);
    assert_eq!(names(m.path()), vec!["A.TXT", "docs"]);
    assert_eq!(fs::read_to_string(m.p("a.txt")).unwrap(), "content");
    // A directory renamed by case only, too (`mv -T`: without it, GNU mv sees an existing
    // directory DOCS and moves docs into it; see docs/SEMANTICS.md).
    sh(&format!(
        "mv -T '{}' '{}'",
        m.p("docs").display(),
        m.p("DOCS").display()
    ));
    let mut k = keys(&prefix);
    k.sort();
    assert_eq!(k, vec!["A.TXT", "DOCS/readme"]);
}

#[test]
fn collisions_in_the_bucket_show_one_winner_and_are_reported() {
    let prefix = unique_prefix("ci-twins");
    put(&prefix, "MyFile.txt", "upper");
    put(&prefix, "myfile.txt", "lower");
    put(&prefix, "Dir/x", "x");
    put(&prefix, "dir/y", "y");
    put(&prefix, "caf\u{e9}", "nfc");
    put(&prefix, "cafe\u{301}", "nfd");
    let m = ci_mount(&prefix, &[]);
    // The documented rule: directories first, then the smallest name in byte order.
    let shown = names(m.path());
    assert!(
        shown.contains(&"MyFile.txt".to_string()) && !shown.contains(&"myfile.txt".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"Dir".to_string()) && !shown.contains(&"dir".to_string()),
        "{shown:?}"
    );
    assert_eq!(fs::read_to_string(m.p("myfile.txt")).unwrap(), "upper");
    assert_eq!(
        names(&m.p("dir")),
        vec!["x"],
        "the hidden directory's files are not merged in"
    );
    let log = m.log_text();
    assert!(
        log.contains(&format!("{prefix}MyFile.txt"))
            && log.contains(&format!("{prefix}myfile.txt")),
        "{log}"
    );

    let e = S3Env::get();
    let source = format!("{}:{prefix}", e.bucket);
    let env = [
        ("AWS_ENDPOINT_URL", e.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", e.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", e.secret.as_str()),
        ("AWS_REGION", e.region.as_str()),
    ];
    let run = |args: &[&str]| {
        Command::new(common::pailfs_bin())
            .arg("collisions")
            .arg(&source)
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "collisions exist: exit 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 collision groups"), "{text}");
    assert!(
        text.contains("\"Dir/\", \"dir/\"") && text.contains("merging them would put 2 files"),
        "{text}"
    );
    let out = run(&["--json", "--normalization"]);
    assert_eq!(out.status.code(), Some(1));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = j["groups"].as_array().unwrap();
    assert_eq!(
        groups.len(),
        3,
        "NFC and NFD é collide under --normalization: {j}"
    );
    assert!(
        groups
            .iter()
            .any(|g| g["kind"] == "directories" && g["merged_total"] == 2)
    );
}

#[test]
fn the_collisions_report_is_clean_for_a_clean_prefix() {
    let prefix = unique_prefix("ci-clean");
    put(&prefix, "a", "1");
    put(&prefix, "b/c", "2");
    let e = S3Env::get();
    let out = Command::new(common::pailfs_bin())
        .args(["collisions", &format!("{}:{prefix}", e.bucket), "--json"])
        .env("AWS_ENDPOINT_URL", &e.endpoint)
        .env("AWS_ACCESS_KEY_ID", &e.key)
        .env("AWS_SECRET_ACCESS_KEY", &e.secret)
        .env("AWS_REGION", &e.region)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["keys_scanned"], 2);
    assert!(j["groups"].as_array().unwrap().is_empty());
}

#[test]
fn spellings_of_one_directory_see_the_same_entries() {
    let prefix = unique_prefix("ci-dentry");
    put(&prefix, "Docs/old.txt", "old");
    let m = ci_mount(&prefix, &[]);
    // Through different spellings, one directory: kernel dentries are case-sensitive, the
    // mount must not let them drift apart.
    assert_eq!(names(&m.p("docs")), vec!["old.txt"]);
    fs::write(m.p("DOCS/new.txt"), "via DOCS").unwrap();
    assert_eq!(names(&m.p("docs")), vec!["new.txt", "old.txt"]);
    assert_eq!(fs::read_to_string(m.p("Docs/NEW.TXT")).unwrap(), "via DOCS");
    fs::remove_file(m.p("docs/NEW.txt")).unwrap();
    assert_eq!(names(&m.p("DOCS")), vec!["old.txt"]);
    assert!(!m.p("dOcS/new.txt").exists());
    // After the directory moves, its old spellings no longer resolve to it.
    sh(&format!(
        "mv -T '{}' '{}'",
        m.p("docs").display(),
        m.p("Archive").display()
    ));
    assert!(!m.p("DOCS").exists() && !m.p("docs").exists());
    assert_eq!(fs::read_to_string(m.p("archive/OLD.txt")).unwrap(), "old");
    let mut k = keys(&prefix);
    k.sort();
    assert_eq!(k, vec!["Archive/old.txt"]);
}
