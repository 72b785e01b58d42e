//! What a real mount shows of its own renames and of other clients' changes (issue 11,
//! points 1 to 3), through ordinary tools.
//!
//! The "other client" cases follow the scenarios of s3fs's own integration suite
//! (test/integration-test-main.sh: external creation, modification, metadata updates of
//! objects and of directories that exist only through a key under them), written for this
//! repository. Another client here is a plain S3 client on the same bucket.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use pailfs::store::{ObjectStore, UserMeta};

use crate::common::*;

fn put(env: &S3Env, key: &str, data: &[u8], meta: &[(&str, &str)]) {
    let meta: UserMeta = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let rt = rt();
    let store = rt.block_on(env.store());
    rt.block_on(store.put(key, data.to_vec().into(), &meta))
        .unwrap();
}

fn head_meta(env: &S3Env, key: &str) -> UserMeta {
    let rt = rt();
    let store = rt.block_on(env.store());
    rt.block_on(store.head(key)).unwrap().user_meta.unwrap()
}

fn get(env: &S3Env, key: &str) -> Vec<u8> {
    let rt = rt();
    let store = rt.block_on(env.store());
    let size = rt.block_on(store.head(key)).unwrap().size;
    rt.block_on(store.get_range(key, 0..size, None))
        .unwrap()
        .to_vec()
}

/// The sequence of issue 11, point 1: a directory whose listing is cached is renamed; its
/// files are found under the new name, and an append keeps what they held.
#[test]
fn a_renamed_directory_keeps_its_files_after_its_listing_was_cached() {
    let prefix = unique_prefix("mvdir");
    let m = Mount::new(&prefix);
    let d = m.p("d");
    std::fs::create_dir(&d).unwrap();
    for i in 1..=200 {
        std::fs::write(d.join(format!("f{i:03}")), format!("old {i:03}\n")).unwrap();
    }
    // What the mount learned at each upload expires (5 s); `ls` then caches a listing.
    std::thread::sleep(Duration::from_secs(6));
    sh(&format!("ls {} >/dev/null", d.display()));
    sh(&format!("mv {} {}", d.display(), m.p("d2").display()));
    assert_eq!(
        std::fs::read_to_string(m.p("d2/f190")).unwrap(),
        "old 190\n"
    );
    sh(&format!("echo new >> {}", m.p("d2/f190").display()));
    assert_eq!(
        std::fs::read_to_string(m.p("d2/f190")).unwrap(),
        "old 190\nnew\n"
    );
    assert_eq!(get(&m.env, &format!("{prefix}d2/f190")), b"old 190\nnew\n");
}

/// Issue 11, point 2: `echo hi > file` is one PUT, not an empty object first.
#[test]
fn a_shell_redirect_is_one_put() {
    let prefix = unique_prefix("redir");
    let m = Mount::new(&prefix);
    let put = "pailfs_requests_total{op=\"put\"}";
    let before = stat_value(&stats(&m, true), put);
    for i in 0..5 {
        sh(&format!(
            "echo hi > {}",
            m.p(&format!("redir-{i}.txt")).display()
        ));
    }
    let after = stat_value(&stats(&m, true), put);
    assert_eq!(after - before, 5, "five redirects, five PUTs");
    for i in 0..5 {
        assert_eq!(get(&m.env, &format!("{prefix}redir-{i}.txt")), b"hi\n");
    }
    // `touch` of a new file stores an empty object by the time the last descriptor closed.
    sh(&format!("touch {}", m.p("touched").display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rt = rt();
        let store = rt.block_on(m.env.store());
        if let Ok(h) = rt.block_on(store.head(&format!("{prefix}touched"))) {
            assert_eq!(h.size, 0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "touch stored nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// s3fs test_external_modification: a file another client overwrote reads in its new version
/// (here after 1.1 s, as s3fs's test waits 1 s).
#[test]
fn another_clients_overwrite_is_read() {
    let prefix = unique_prefix("extmod");
    let m = Mount::new(&prefix);
    sh(&format!("echo old > {}", m.p("f.txt").display()));
    assert_eq!(std::fs::read_to_string(m.p("f.txt")).unwrap(), "old\n");
    std::thread::sleep(Duration::from_millis(1100));
    put(&m.env, &format!("{prefix}f.txt"), b"new new\n", &[]);
    assert_eq!(std::fs::read_to_string(m.p("f.txt")).unwrap(), "new new\n");
}

/// Another client's overwrite between two lookups: the first `cat` after it reads one whole
/// version (never an error or a mix), and after a second the new one.
#[test]
fn an_overwrite_between_two_lookups_reads_one_whole_version() {
    let prefix = unique_prefix("extmod2");
    let m = Mount::new(&prefix);
    put(&m.env, &format!("{prefix}f"), b"short\n", &[]);
    assert_eq!(std::fs::read_to_string(m.p("f")).unwrap(), "short\n");
    put(
        &m.env,
        &format!("{prefix}f"),
        b"a much longer second version\n",
        &[],
    );
    let seen = std::fs::read_to_string(m.p("f")).unwrap();
    assert!(
        seen == "short\n" || seen == "a much longer second version\n",
        "read {seen:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        std::fs::read_to_string(m.p("f")).unwrap(),
        "a much longer second version\n"
    );
}

/// s3fs test_external_creation: a name looked up and missing, then created by another
/// client, is found a second later.
#[test]
fn another_clients_new_file_is_found_after_a_miss() {
    let prefix = unique_prefix("extnew");
    let m = Mount::new(&prefix);
    assert!(!m.p("f.txt").exists());
    put(&m.env, &format!("{prefix}f.txt"), b"data\n", &[]);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(m.p("f.txt").exists(), "the new object is still hidden");
    assert_eq!(std::fs::read_to_string(m.p("f.txt")).unwrap(), "data\n");
}

/// s3fs test_external_directory_creation and test_not_existed_dir_obj: directories that exist
/// only through keys under them show up in a listing the mount had cached, with their files.
#[test]
fn directories_made_by_keys_under_them_show_up() {
    let prefix = unique_prefix("extdir");
    let m = Mount::new(&prefix);
    std::fs::write(m.p("first"), "x").unwrap();
    assert_eq!(sh(&format!("ls {}", m.path().display())).trim(), "first");
    put(&m.env, &format!("{prefix}directory/f.txt"), b"data\n", &[]);
    put(
        &m.env,
        &format!("{prefix}parent/child/f.txt"),
        b"deep\n",
        &[],
    );
    std::thread::sleep(Duration::from_millis(1100));
    let ls = sh(&format!("ls -1 {}", m.path().display()));
    assert_eq!(ls, "directory\nfirst\nparent\n");
    assert!(m.p("directory").is_dir());
    assert_eq!(sh(&format!("ls -1 {}", m.p("parent").display())), "child\n");
    assert_eq!(
        sh(&format!("ls -1 {}", m.p("parent/child").display())),
        "f.txt\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.p("directory/f.txt")).unwrap(),
        "data\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.p("parent/child/f.txt")).unwrap(),
        "deep\n"
    );
    // s3fs test_read_external_dir_object: such a directory has real times, not -1.
    let mtime = std::fs::metadata(m.p("directory"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(mtime > std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
}

/// s3fs test_read_external_object.
#[test]
fn another_clients_object_is_read() {
    let prefix = unique_prefix("extread");
    let m = Mount::new(&prefix);
    put(&m.env, &format!("{prefix}f.txt"), b"test\n", &[]);
    assert_eq!(std::fs::read_to_string(m.p("f.txt")).unwrap(), "test\n");
}

/// Extended attributes an s3fs mount stored (its `x-amz-meta-xattr` encoding) read the same
/// here, outside `user.` too: `trusted.` round-trips; `system.` (ACLs the kernel would
/// interpret, which a bucket cannot enforce) is neither listed nor read.
#[test]
fn xattrs_s3fs_stored_read_the_same_in_every_namespace_pailfs_keeps() {
    let prefix = unique_prefix("s3fs-xattr");
    let m = Mount::new(&prefix);
    // {"user.key":"dmFsdWU=","trusted.t":"dHJ1c3RlZA==","system.posix_acl_access":"AgAAAA=="}
    let s3fs = "%7B%22user.key%22%3A%22dmFsdWU%3D%22%2C%22trusted.t%22%3A%22dHJ1c3RlZA%3D%3D\
                %22%2C%22system.posix_acl_access%22%3A%22AgAAAA%3D%3D%22%7D";
    put(&m.env, &format!("{prefix}f"), b"data", &[("xattr", s3fs)]);
    let ps = m.p("f").display().to_string();
    let value = |name: &str| sh(&format!("getfattr --only-values -n {name} {ps}"));
    assert_eq!(value("user.key"), "value");
    assert_eq!(value("trusted.t"), "trusted");
    let listed = sh(&format!("getfattr -d -m - {ps}"));
    assert!(
        listed.contains("user.key") && listed.contains("trusted.t"),
        "{listed}"
    );
    assert!(!listed.contains("system."), "{listed}");
    let acl = std::process::Command::new("getfattr")
        .args(["-n", "system.posix_acl_access", &ps])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&acl.stderr);
    assert!(
        !acl.status.success() && why.contains("not supported"),
        "{why}"
    );
    sh(&format!("setfattr -n trusted.more -v again {ps}"));
    let stored = head_meta(&m.env, &format!("{prefix}f"));
    let x = stored.get("xattr").expect("xattr kept");
    assert!(x.contains("trusted.more") && x.contains("user.key"), "{x}");
}

fn metadata_updates_keep_the_content(m: &Mount, prefix: &str, data: &[u8]) {
    let cases = ["chmod", "chown", "touch", "setxattr", "removexattr"];
    for case in cases {
        let name = format!("{case}.bin");
        let key = format!("{prefix}{name}");
        let meta: &[(&str, &str)] = if case == "removexattr" {
            // {"user.key":"dmFsdWU="}, as s3fs encodes user.key=value.
            &[("xattr", "%7B%22user.key%22%3A%22dmFsdWU%3D%22%7D")]
        } else {
            &[]
        };
        put(&m.env, &key, data, meta);
        let p = m.p(&name);
        let ps = p.display();
        match case {
            "chmod" => sh(&format!("chmod +x {ps}")),
            "chown" => sh(&format!("chown 1000:1000 {ps}")),
            "touch" => sh(&format!("touch {ps}")),
            "setxattr" => sh(&format!("setfattr -n user.key -v value {ps}")),
            _ => {
                assert_eq!(
                    sh(&format!("getfattr --only-values -n user.key {ps}")),
                    "value"
                );
                sh(&format!("setfattr -x user.key {ps}"))
            }
        };
        assert!(
            std::fs::read(&p).unwrap() == data,
            "{case} changed the data"
        );
        assert!(get(&m.env, &key) == data, "{case} changed the stored data");
        let stored = head_meta(&m.env, &key);
        match case {
            "chmod" => {
                assert_eq!(
                    std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                    0o755
                );
                assert_eq!(stored.get("mode").map(String::as_str), Some("33261"));
            }
            "chown" => assert_eq!(stored.get("uid").map(String::as_str), Some("1000")),
            "touch" => assert!(stored.contains_key("mtime")),
            "setxattr" => assert_eq!(
                sh(&format!("getfattr --only-values -n user.key {ps}")),
                "value"
            ),
            _ => assert!(!stored.contains_key("xattr"), "{stored:?}"),
        }
    }
}

/// s3fs test_update_metadata_external_small_object.
#[test]
fn metadata_updates_of_another_clients_small_object() {
    let prefix = unique_prefix("extmeta");
    let m = Mount::new(&prefix);
    metadata_updates_keep_the_content(&m, &prefix, b"TEST_STRING_IN_SMALL_FILE\n");
}

/// s3fs test_update_metadata_external_large_object (25 MiB, above one part).
#[test]
fn metadata_updates_of_another_clients_large_object() {
    let prefix = unique_prefix("extmetabig");
    let m = Mount::new(&prefix);
    metadata_updates_keep_the_content(&m, &prefix, &pseudo_random(25 << 20, 11));
}

/// s3fs test_chmod_listed_directory_keeps_metadata: chmod of a directory another client made
/// with its own metadata keeps that metadata and updates the mode in place.
#[test]
fn chmod_of_a_listed_directory_keeps_its_metadata() {
    let prefix = unique_prefix("extdirmeta");
    let m = Mount::new(&prefix);
    let key = format!("{prefix}dir/");
    put(
        &m.env,
        &key,
        b"",
        &[("mode", "16877"), ("foreign", "keepme")],
    );
    assert!(sh(&format!("ls {}", m.path().display())).contains("dir"));
    sh(&format!("chmod 750 {}", m.p("dir").display()));
    assert_eq!(
        std::fs::metadata(m.p("dir")).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let stored = head_meta(&m.env, &key);
    assert_eq!(stored.get("foreign").map(String::as_str), Some("keepme"));
    assert_eq!(stored.get("mode").map(String::as_str), Some("16872"));
}
