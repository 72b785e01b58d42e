//! POSIX behaviour through real mounts: unmodified applications (sqlite3, git, tar), a
//! differential test against a local directory, failures surfacing at close(), and the
//! pjdfstest conformance suite.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pailfs::store::ObjectStore;

use crate::common::{self, Mount, S3Env, pseudo_random, rt, sh, unique_prefix};

// ----- applications -----

#[test]
fn sqlite_database_survives_a_remount() {
    let mut m = Mount::new(&unique_prefix("sqlite"));
    let db = m.p("app.db");
    let mut script = String::from(
        "PRAGMA journal_mode=DELETE;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n",
    );
    for tx in 0..100 {
        script.push_str("BEGIN;\n");
        for i in 0..100 {
            let n = tx * 100 + i;
            script.push_str(&format!(
                "INSERT INTO t(v) VALUES('row {n} {}');\n",
                "x".repeat(n % 50)
            ));
        }
        script.push_str("COMMIT;\n");
    }
    let sql = m.cache.path().join("load.sql");
    fs::write(&sql, script).unwrap();
    sh(&format!("sqlite3 '{}' < '{}'", db.display(), sql.display()));
    m.remount();
    let out = sh(&format!(
        "sqlite3 '{}' 'PRAGMA integrity_check; SELECT count(*) FROM t; SELECT v FROM t WHERE id = 5000;'",
        db.display()
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "ok",
            "10000",
            &format!("row 4999 {}", "x".repeat(4999 % 50))
        ]
    );
}

#[test]
fn git_repository_commits_and_checks() {
    let mut m = Mount::new(&unique_prefix("git"));
    let repo = m.p("repo");
    fs::create_dir(&repo).unwrap();
    let r = repo.display();
    let git = format!("git -C '{r}' -c user.name=t -c user.email=t@example.org");
    sh(&format!("{git} init -q"));
    for i in 0..5 {
        fs::write(
            repo.join(format!("f{i}.txt")),
            format!("content {i}\n").repeat(100),
        )
        .unwrap();
        fs::create_dir_all(repo.join(format!("dir{i}"))).unwrap();
        fs::write(
            repo.join(format!("dir{i}/nested.rs")),
            pseudo_random(3000, i),
        )
        .unwrap();
        sh(&format!("{git} add -A && {git} commit -q -m 'commit {i}'"));
    }
    sh(&format!(
        "{git} mv f0.txt renamed.txt && {git} commit -q -m rename"
    ));
    sh(&format!("{git} fsck --strict --no-progress"));
    m.remount();
    sh(&format!("{git} fsck --strict --no-progress"));
    let log = sh(&format!("{git} log --oneline | wc -l"));
    assert_eq!(log.trim(), "6");
    let status = sh(&format!("{git} status --porcelain"));
    assert!(
        status.trim().is_empty(),
        "worktree not clean after remount: {status}"
    );
}

#[test]
fn tar_extracts_a_thousand_files() {
    let m = Mount::new(&unique_prefix("tar"));
    let src = tempfile::tempdir().unwrap();
    for i in 0..1100 {
        let d = src.path().join(format!("d{}", i % 30));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("f{i}")),
            pseudo_random(i * 7 % 9000, i as u64),
        )
        .unwrap();
    }
    let tarball = tempfile::NamedTempFile::new().unwrap();
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        src.path().display(),
        tarball.path().display()
    ));
    fs::create_dir(m.p("x")).unwrap();
    sh(&format!(
        "tar -C '{}' -xf '{}'",
        m.p("x").display(),
        tarball.path().display()
    ));
    sh(&format!(
        "diff -r '{}' '{}'",
        src.path().display(),
        m.p("x").display()
    ));
}

#[test]
fn appends_and_directory_moves() {
    let mut m = Mount::new(&unique_prefix("append"));
    let log = m.p("log.txt");
    for i in 0..100 {
        sh(&format!("echo 'line {i}' >> '{}'", log.display()));
    }
    let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(fs::read_to_string(&log).unwrap(), want);
    fs::create_dir(m.p("src")).unwrap();
    for i in 0..100 {
        fs::write(m.p(&format!("src/file{i}")), format!("{i}")).unwrap();
    }
    sh(&format!(
        "mv '{}' '{}'",
        m.p("src").display(),
        m.p("dst").display()
    ));
    assert!(!m.p("src").exists());
    m.remount();
    assert!(!m.p("src").exists());
    assert_eq!(fs::read_dir(m.p("dst")).unwrap().count(), 100);
    for i in 0..100 {
        assert_eq!(
            fs::read_to_string(m.p(&format!("dst/file{i}"))).unwrap(),
            format!("{i}")
        );
    }
    assert_eq!(fs::read_to_string(&log).unwrap(), want);
}

#[test]
fn attributes_symlinks_and_xattrs_persist() {
    let mut m = Mount::new(&unique_prefix("attrs"));
    fs::write(m.p("f"), b"data").unwrap();
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o751)).unwrap();
    sh(&format!("chown 1234:5678 '{}'", m.p("f").display()));
    sh(&format!(
        "touch -d '2001-02-03 04:05:06.123456789' '{}'",
        m.p("f").display()
    ));
    std::os::unix::fs::symlink("f", m.p("link")).unwrap();
    sh(&format!(
        "setfattr -n user.color -v blue '{}'",
        m.p("f").display()
    ));
    fs::create_dir(m.p("d")).unwrap();
    fs::set_permissions(m.p("d"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(m.p("empty/deeper")).unwrap();
    sh(&format!(
        "setfattr -n trusted.overlay.opaque -v y '{}'",
        m.p("f").display()
    ));
    sh(&format!("mkfifo '{}'", m.p("fifo").display()));
    m.remount();
    let out = sh(&format!("stat -c '%a %u %g %y' '{}'", m.p("f").display()));
    assert_eq!(
        out.trim(),
        "751 1234 5678 2001-02-03 04:05:06.123456789 +0000"
    );
    assert_eq!(fs::read_link(m.p("link")).unwrap(), Path::new("f"));
    assert_eq!(fs::read(m.p("link")).unwrap(), b"data");
    let xa = sh(&format!(
        "getfattr --only-values -n user.color '{}'",
        m.p("f").display()
    ));
    assert_eq!(xa, "blue");
    assert_eq!(
        fs::metadata(m.p("d")).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert!(
        m.p("empty/deeper").is_dir(),
        "empty directories survive a remount"
    );
    assert_eq!(
        sh(&format!(
            "getfattr --only-values -n trusted.overlay.opaque '{}'",
            m.p("f").display()
        )),
        "y",
        "trusted.* is stored as s3fs stores it"
    );
    let err = Command::new("setfattr")
        .args(["-n", "system.nfs4_acl", "-v", "1"])
        .arg(m.p("f"))
        .output()
        .unwrap();
    assert!(!err.status.success(), "system.* is refused");
    let link = fs::hard_link(m.p("f"), m.p("hard")).unwrap_err();
    assert_eq!(link.raw_os_error(), Some(libc::EPERM));
    assert!(fs::metadata(m.p("fifo")).unwrap().file_type().is_fifo());
    assert_eq!(fs::metadata(m.p("d")).unwrap().nlink(), 2);
    rmdir_marker_only(&m);
}

fn rmdir_marker_only(m: &Mount) {
    fs::remove_dir(m.p("empty/deeper")).unwrap();
    fs::remove_dir(m.p("empty")).unwrap();
    assert!(!m.p("empty").exists());
}

#[test]
fn overwrite_random_writes_and_truncate() {
    let mut m = Mount::new(&unique_prefix("rw"));
    let big = pseudo_random(20 * 1024 * 1024 + 17, 1);
    fs::write(m.p("big"), &big).unwrap();
    // dd conv=notrunc: write in place in the middle.
    sh(&format!(
        "printf 'PATCHED' | dd of='{}' bs=1 seek=9000000 conv=notrunc status=none",
        m.p("big").display()
    ));
    let mut want = big.clone();
    want[9_000_000..9_000_007].copy_from_slice(b"PATCHED");
    {
        let mut f = fs::OpenOptions::new().write(true).open(m.p("big")).unwrap();
        f.seek(SeekFrom::Start(want.len() as u64 + 100)).unwrap();
        f.write_all(b"sparse").unwrap();
    }
    want.resize(want.len() + 100, 0);
    want.extend_from_slice(b"sparse");
    assert_eq!(
        common::sha256(&fs::read(m.p("big")).unwrap()),
        common::sha256(&want)
    );
    fs::OpenOptions::new()
        .write(true)
        .open(m.p("big"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    want.truncate(1000);
    m.remount();
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    // O_TRUNC overwrite.
    fs::write(m.p("big"), b"short").unwrap();
    assert_eq!(fs::read(m.p("big")).unwrap(), b"short");
}

#[test]
fn an_unlinked_open_file_keeps_working() {
    let m = Mount::new(&unique_prefix("unlinked"));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.p("tmp"))
        .unwrap();
    f.write_all(b"hello").unwrap();
    fs::remove_file(m.p("tmp")).unwrap();
    f.write_all(b" world").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    assert_eq!(s, "hello world");
    drop(f);
    assert!(!m.p("tmp").exists());
    let env = S3Env::get();
    let gone = rt().block_on(async { env.store().await.head(&format!("{}tmp", m.prefix)).await });
    assert!(
        gone.is_err(),
        "an unlinked file was stored: {gone:?}\n{}",
        m.log_text()
    );
}

// ----- differential: the same operations on the mount and on a local directory -----

#[derive(Debug, PartialEq)]
enum Node {
    Dir(u32),
    File(u32, String),
    Link(PathBuf),
}

fn snapshot(root: &Path) -> Vec<(String, Node)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.sort();
        for name in entries {
            let r = rel.join(&name);
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let node = if md.file_type().is_symlink() {
                Node::Link(fs::read_link(&p).unwrap())
            } else if md.is_dir() {
                stack.push(r.clone());
                Node::Dir(mode)
            } else {
                Node::File(mode, common::sha256(&fs::read(&p).unwrap()))
            };
            out.push((r.to_string_lossy().into_owned(), node));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// One random operation on `root`; the errno (or 0) is what is compared.
fn random_op(rng: &mut Rng, root: &Path) -> (String, i32) {
    let names = ["a", "b", "c", "d/a", "d/b", "a/b", "b/c", "d"];
    let p = rng.pick(&names);
    let q = rng.pick(&names);
    let path = root.join(p);
    let data = pseudo_random((rng.next() % 3000) as usize, rng.next());
    let choice = rng.next() % 12;
    let res: std::io::Result<()> = match choice {
        0 | 1 => fs::write(&path, &data),
        2 => fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(rng.next() % 5000))?;
                f.write_all(&data)
            }),
        3 => fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&data)),
        4 => fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(rng.next() % 4000)),
        5 => fs::create_dir(&path),
        6 => fs::remove_dir(&path),
        7 => fs::remove_file(&path),
        8 => fs::rename(&path, root.join(q)),
        9 => fs::set_permissions(
            &path,
            fs::Permissions::from_mode([0o600, 0o640, 0o755, 0o700][(rng.next() % 4) as usize]),
        ),
        10 => std::os::unix::fs::symlink(q, &path),
        _ => fs::read(&path).map(|_| ()),
    };
    (
        format!("op {choice} {p} {q}"),
        res.err().and_then(|e| e.raw_os_error()).unwrap_or(0),
    )
}

#[test]
fn differential_against_a_local_directory() {
    let mut m = Mount::new(&unique_prefix("diff"));
    for seed in [7u64, 1234, 98765] {
        let local = tempfile::tempdir().unwrap();
        let mnt = m.p(&format!("seed{seed}"));
        fs::create_dir(&mnt).unwrap();
        let (mut r1, mut r2) = (Rng(seed), Rng(seed));
        for step in 0..150 {
            let (what, e_local) = random_op(&mut r1, local.path());
            let (_, e_mnt) = random_op(&mut r2, &mnt);
            assert_eq!(e_mnt, e_local, "seed {seed} step {step}: {what}");
            if step % 25 == 24 {
                assert_eq!(
                    snapshot(&mnt),
                    snapshot(local.path()),
                    "seed {seed} step {step}"
                );
            }
        }
        assert_eq!(
            snapshot(&mnt),
            snapshot(local.path()),
            "seed {seed} at the end"
        );
        m.remount();
        assert_eq!(
            snapshot(&mnt),
            snapshot(local.path()),
            "seed {seed} after remount"
        );
    }
}

/// open(O_RDONLY|O_TRUNC) of a file a running process was started from fails with ETXTBSY
/// and changes nothing: not the process (which once died of SIGBUS when the truncation reached
/// the kernel's page cache before the busy check), not the stored object. This is what made
/// pjdfstest's `open::etxtbsy` fail now and then (tests/PJDFSTEST.md).
#[test]
fn a_truncating_open_of_a_running_program_fails_and_changes_nothing() {
    let prefix = unique_prefix("etxtbsy");
    let m = Mount::new(&prefix);
    let original = fs::read("/usr/bin/sleep").unwrap();
    let exe = m.p("sleeper");
    fs::write(&exe, &original).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(&exe).arg("2").spawn().unwrap();
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        let path = std::ffi::CString::new(exe.to_str().unwrap()).unwrap();
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        let err = std::io::Error::last_os_error().raw_os_error();
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        assert_eq!(
            (fd, err),
            (-1, Some(libc::ETXTBSY)),
            "open flags {flags:#x}"
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the running program died: {status:?}");
    let key = format!("{prefix}sleeper");
    let rt = rt();
    let store = rt.block_on(S3Env::get().store());
    let stored = rt.block_on(store.head(&key)).unwrap();
    assert_eq!(stored.size, original.len() as u64);
    assert_eq!(fs::read(&exe).unwrap(), original);
}

// ----- pjdfstest -----

#[test]
fn pjdfstest_passes_every_group_that_applies() {
    let bin = std::env::var("PAILFS_PJDFSTEST")
        .expect("PAILFS_PJDFSTEST must point at the pjdfstest binary (scripts/test installs it)");
    let m = Mount::with_args(
        &unique_prefix("pjd"),
        &["--allow-other", "--keep-setuid-bits"],
    );
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest.toml");
    let work = m.p("pjd");
    fs::create_dir(&work).unwrap();
    fs::set_permissions(&work, fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = m.cache.path().join("pjdfstest.out");
    fs::write(&report, format!("{stdout}\n{stderr}")).unwrap();
    // Each failure with the lines of detail pjdfstest prints under it.
    let mut failures = Vec::new();
    let mut in_failure = false;
    for line in stdout.lines() {
        if line.trim_end().ends_with("FAILED") || line.contains("PASSED UNEXPECTEDLY") {
            in_failure = true;
            failures.push(line.to_string());
        } else if in_failure && line.starts_with(char::is_whitespace) {
            failures.push(line.to_string());
        } else {
            in_failure = false;
        }
    }
    assert!(
        out.status.success(),
        "pjdfstest failed:\n{}\n{}",
        failures.join("\n"),
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// `rsync -a` of a tree holding a FIFO and a device node, into the mount and back out after a
/// remount: types, modes and device numbers survive, as a backup needs them to.
#[test]
fn rsync_a_copies_fifos_and_device_nodes_through_the_mount() {
    let mut m = Mount::new(&unique_prefix("special"));
    let src = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    let s = src.path().display();
    sh(&format!(
        "mkdir -p '{s}/tree/sub' && echo data > '{s}/tree/sub/file' && mkfifo -m 600 '{s}/tree/pipe' \
         && mknod -m 640 '{s}/tree/null' c 1 3"
    ));
    sh(&format!("rsync -a '{s}/tree/' '{}/'", m.path().display()));
    m.remount();
    sh(&format!(
        "rsync -a '{}/' '{}/'",
        m.path().display(),
        back.path().display()
    ));
    let listing = |dir: &Path| {
        sh(&format!(
            "cd '{}' && find . -mindepth 1 -printf '%y %m %P\\n' | sort && stat -c '%t:%T' null",
            dir.display()
        ))
    };
    let want = listing(&src.path().join("tree"));
    assert!(
        want.contains("p 600 pipe") && want.contains("c 640 null"),
        "{want}"
    );
    assert_eq!(listing(back.path()), want);
}
