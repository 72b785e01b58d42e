//! Running pailfs the way admins do: live statistics, the Prometheus endpoint, the `-o`
//! argument form of mount(8), and a stop (SIGTERM) in the middle of a write.

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use pailfs::store::ObjectStore;

use crate::common::*;

fn drop_kernel_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches (needs root)");
}

#[test]
fn stats_count_a_known_workload() {
    let env = S3Env::get();
    let prefix = unique_prefix("stats");
    let rt = rt();
    let store = rt.block_on(env.store());
    let data = pseudo_random(3 << 20, 5);
    rt.block_on(store.put(
        &format!("{prefix}big.bin"),
        data.clone().into(),
        &Default::default(),
    ))
    .unwrap();
    let m = Mount::new(&prefix);
    let before = stats(&m, true);
    for i in 0..20 {
        std::fs::write(m.p(&format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    let after_writes = stats(&m, true);
    assert_eq!(
        stat_value(&after_writes, "pailfs_requests_total{op=\"put\"}")
            - stat_value(&before, "pailfs_requests_total{op=\"put\"}"),
        20,
        "20 small files are 20 PUTs"
    );
    // A first read goes to S3; after the kernel's page cache is dropped, a second read is
    // served by the block cache: hits, and no GET.
    assert_eq!(sha256_file(&m.p("big.bin")), sha256(&data));
    let first = stats(&m, true);
    drop_kernel_caches();
    assert_eq!(sha256_file(&m.p("big.bin")), sha256(&data));
    let second = stats(&m, true);
    let get = "pailfs_requests_total{op=\"get\"}";
    assert!(stat_value(&first, get) > stat_value(&before, get));
    assert_eq!(
        stat_value(&second, get),
        stat_value(&first, get),
        "the second read went to S3"
    );
    assert!(
        stat_value(&second, "pailfs_cache_hits_total")
            >= stat_value(&first, "pailfs_cache_hits_total") + 3,
        "no cache hits counted:\n{second}"
    );
    assert!(stat_value(&second, "pailfs_read_bytes_total") >= 3 << 20);
    assert!(stat_value(&second, "pailfs_written_bytes_total") > 0);
    // The summary for people.
    let text = stats(&m, false);
    assert!(
        text.contains("block cache") && text.contains("put 20"),
        "{text}"
    );
    drop(m);
    rt.block_on(async { delete_prefix(&store, &prefix).await });
}

/// A client flooding `--metrics-listen` with connections it never uses cannot take the
/// descriptors the S3 client needs: connections beyond a small cap are closed at once, and
/// the daemon raised its descriptor limit at start.
#[test]
fn a_flood_of_metrics_connections_does_not_break_the_mount() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mount::with_args(&unique_prefix("flood"), &["--metrics-listen", &addr]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", m.pid())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 1024, "descriptor limit not raised: {soft}");
    // The idle connections are descriptors of this process too, which every test shares:
    // leave the others 512 of them, or their opens and spawns fail with EMFILE meanwhile.
    let flood = 1500.min(raise_own_descriptor_limit().saturating_sub(512));
    let mut idle = Vec::new();
    for _ in 0..flood {
        if let Ok(c) = std::net::TcpStream::connect(&addr) {
            idle.push(c);
        }
    }
    for i in 0..50 {
        std::fs::write(m.p(&format!("f{i}")), format!("{i}")).unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            std::fs::read_to_string(m.p(&format!("f{i}"))).unwrap(),
            format!("{i}")
        );
    }
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    c.read_to_string(&mut page).unwrap();
    assert!(page.contains("pailfs_requests_total"), "{page}");
}

/// Raises the soft descriptor limit of this (the test) process to its hard limit, as the
/// daemon does for itself, and returns the soft limit now in force.
fn raise_own_descriptor_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            l = raised;
        }
    }
    l.rlim_cur
}

#[test]
fn the_prometheus_endpoint_serves_the_counters() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let prefix = unique_prefix("prom");
    let m = Mount::with_args(&prefix, &["--metrics-listen", &addr]);
    std::fs::write(m.p("a"), b"a").unwrap();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    c.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("# TYPE pailfs_requests_total counter"));
    assert!(stat_value(&page, "pailfs_requests_total{op=\"put\"}") >= 1);
    // A taken address fails the mount with a clear message.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pailfs_bin())
        .args(["mount", &format!("{}:{prefix}", m.env.bucket)])
        .arg(dir.path())
        .args(["--metrics-listen", &busy])
        .args(["--cache-dir", m.cache.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"));
}

#[test]
fn the_mount_helper_argument_form_works_and_rejects_unknown_options() {
    let env = S3Env::get();
    let prefix = unique_prefix("helper");
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let source = format!("{}:{prefix}", env.bucket);
    // What mount.fuse3 runs for `mount -t fuse.pailfs SOURCE DIR -o ...`.
    let run = |opts: &str| {
        std::process::Command::new(pailfs_bin())
            .arg(&source)
            .arg(dir.path())
            .arg("-o")
            .arg(opts)
            .output()
            .unwrap()
    };
    let bad = run("rw,nodev,frobnicate=1");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("frobnicate") && err.lines().count() == 1,
        "{err}"
    );
    let ok = run(&format!(
        "rw,nosuid,nodev,_netdev,allow_other,ro,metadata_ttl=2,cache_dir={}",
        cache.path().display()
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(is_mounted(dir.path()));
    // `ro` became --read-only.
    let e = std::fs::write(dir.path().join("x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    sh(&format!("umount {}", dir.path().display()));
}

#[test]
fn a_stop_during_a_write_keeps_the_unsaved_file_and_never_stores_half() {
    let env = S3Env::get();
    let prefix = unique_prefix("sigterm");
    let mut m = Mount::new(&prefix);
    std::fs::write(m.p("saved"), b"closed before the stop\n").unwrap();
    // A writer that has written 20 MiB and not closed yet.
    let script = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = bytes(range(256)) * 4096
for i in range(20):
    os.write(fd, chunk)
print("written", flush=True)
time.sleep(600)
"#;
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.p("unsaved"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "written");
    let pid = m.pid() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pailfs did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = writer.kill();
    let _ = writer.wait();
    m.kill_daemon(); // reaps the process and clears the mount table
    let log = m.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("unsaved") && l.contains("changes not uploaded")),
        "the stop did not report the unsaved file"
    );
    let rt = rt();
    let store = rt.block_on(env.store());
    rt.block_on(async {
        assert!(
            store.head(&format!("{prefix}unsaved")).await.is_err(),
            "half a file was stored"
        );
        assert_eq!(
            store.head(&format!("{prefix}saved")).await.unwrap().size,
            23
        );
        assert!(
            store
                .list_multipart_uploads(&prefix)
                .await
                .unwrap()
                .is_empty()
        );
    });
    // The next mount rebuilds it.
    m.restart();
    let want: Vec<u8> = (0..20)
        .flat_map(|_| (0..=255u8).cycle().take(1 << 20))
        .collect();
    let found = sh(&format!(
        "find {} -path '*/recovered/*' -name unsaved",
        m.cache.path().display()
    ));
    let path = found.lines().next().expect("unsaved was not rebuilt");
    assert_eq!(sha256_file(std::path::Path::new(path)), sha256(&want));
    drop(m);
    rt.block_on(async { delete_prefix(&store, &prefix).await });
}

#[test]
fn the_disk_cache_serves_a_remount_without_a_get() {
    let env = S3Env::get();
    let prefix = unique_prefix("diskcache");
    let rt = rt();
    let store = rt.block_on(env.store());
    let data = pseudo_random(3 << 20, 9);
    rt.block_on(store.put(
        &format!("{prefix}big.bin"),
        data.clone().into(),
        &Default::default(),
    ))
    .unwrap();
    let source = format!("{}:{prefix}", env.bucket);
    let mut m = Mount::custom(&source, &prefix, &["--disk-cache-size", "64M"], &[]);
    assert_eq!(sha256_file(&m.p("big.bin")), sha256(&data));
    // The three blocks reach the disk cache in the background.
    let block_files = |m: &Mount| -> usize {
        std::fs::read_dir(m.cache.path())
            .unwrap()
            .flatten()
            .filter_map(|d| std::fs::read_dir(d.path().join("blocks")).ok())
            .map(|rd| rd.count())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while block_files(&m) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(block_files(&m), 3);
    m.remount();
    drop_kernel_caches();
    let before = stats(&m, true);
    assert_eq!(sha256_file(&m.p("big.bin")), sha256(&data));
    let after = stats(&m, true);
    let get = "pailfs_requests_total{op=\"get\"}";
    assert_eq!(
        stat_value(&after, get),
        stat_value(&before, get),
        "after a remount the blocks came from the disk, not S3"
    );
}

/// Random reads of a file read before run from the disk cache, page by page, without a
/// GET, and `pailfs stats` reports the bytes returned and fetched; a page altered on disk
/// is caught by its CRC32C and read from S3 again, right.
#[test]
fn random_reads_after_a_remount_come_from_the_disk_cache() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let env = S3Env::get();
    let prefix = unique_prefix("diskrandom");
    let data = pseudo_random(3 << 20, 11);
    env.put(&format!("{prefix}f.bin"), &data);
    let source = format!("{}:{prefix}", env.bucket);
    let mut m = Mount::custom(&source, &prefix, &["--disk-cache-size", "64M"], &[]);
    assert_eq!(sha256_file(&m.p("f.bin")), sha256(&data));
    let cache_dir = m.cache.path().to_path_buf();
    let blocks = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache_dir)
            .unwrap()
            .flatten()
            .filter_map(|d| std::fs::read_dir(d.path().join("blocks")).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path()))
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocks().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    m.remount();
    drop_kernel_caches();
    // Page 5 of block 1 altered on disk.
    let block1 = blocks()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("-1"))
        .unwrap();
    let mut bytes = std::fs::read(&block1).unwrap();
    let at = bytes.len() - (1 << 20) + 5 * 16384 + 7;
    bytes[at] ^= 0x20;
    std::fs::write(&block1, bytes).unwrap();
    let get = "pailfs_requests_total{op=\"get\"}";
    let before = stats(&m, true);
    // O_DIRECT: every read reaches pailfs, as a database's would.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.p("f.bin"))
        .unwrap();
    // Outside block 1, and each far from the last: none looks sequential (read-ahead could
    // touch block 1).
    let (mut x, mut last) = (99u64, u64::MAX / 2);
    let offsets: Vec<u64> = (0..400)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 20) % 768) << 12
        })
        .filter(|&o| {
            let keep = (o >> 20) != 1 && o.abs_diff(last) > 512 << 10;
            if keep {
                last = o;
            }
            keep
        })
        .collect();
    assert!(offsets.len() > 50);
    let bad_page = (1 << 20) + 5 * 16384;
    let read_all = |offsets: &[u64]| {
        let mut buf = vec![0u8; 4096];
        for &off in offsets {
            f.read_exact_at(&mut buf, off).unwrap();
            assert_eq!(&buf[..], &data[off as usize..][..4096], "at {off}");
        }
    };
    read_all(&offsets);
    let middle = stats(&m, true);
    assert_eq!(
        stat_value(&middle, get),
        stat_value(&before, get),
        "random reads of blocks on disk make no GET"
    );
    let returned = "pailfs_file_returned_bytes_total";
    assert!(
        stat_value(&middle, returned)
            >= stat_value(&before, returned) + 4096 * offsets.len() as u64
    );
    read_all(&[bad_page, bad_page - 4096, bad_page + 16384]);
    let after = stats(&m, true);
    assert_eq!(
        stat_value(&after, get),
        stat_value(&middle, get) + 1,
        "the block with the bad page is fetched again, once"
    );
    let report = stats(&m, false);
    assert!(
        report.contains("file reads") && report.contains("amplification"),
        "{report}"
    );
}

/// Under systemd (standard error is the journal's stream, `JOURNAL_STREAM`), each log line
/// starts with its priority, `<4>` for a warning, so `journalctl -p warning` finds it; and at
/// `--debug` (`--log-level debug`) the S3 client's own events are in the log too, and not below it.
#[test]
fn journal_lines_carry_their_priority_and_debug_shows_the_s3_client() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = S3Env::get();
    let prefix = unique_prefix("journal");
    let mnt = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // A cache directory others can read is repaired, with a warning.
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stderr_path = out.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let m = stderr.metadata().unwrap();
    let mut child = env
        .apply(&mut std::process::Command::new(pailfs_bin()))
        .args(["mount", &format!("{}:{prefix}", env.bucket)])
        .arg(mnt.path())
        .arg("--foreground")
        .arg("--cache-dir")
        .arg(cache.path())
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(mnt.path()) {
        assert!(Instant::now() < deadline, "no mount");
        assert!(child.try_wait().unwrap().is_none(), "pailfs exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&stderr_path).unwrap();
    let warning = text.lines().find(|l| l.contains("private"));
    assert!(
        warning.is_some_and(|l| l.starts_with("<4>")),
        "no <4> warning line: {text}"
    );
    assert!(text.lines().any(|l| l.starts_with("<6>")), "{text}");

    // mount-s3's `--debug` is the debug level, where the S3 client's events show.
    let mut debug = Mount::with_args(&unique_prefix("trace"), &["--debug"]);
    std::fs::write(debug.p("f"), b"x").unwrap();
    debug.unmount();
    let log = debug.log_text();
    assert!(
        log.contains("aws_smithy_runtime"),
        "no S3 client events at debug level"
    );
    assert!(!log.contains(&env.secret));
    let mut quiet = Mount::with_args(&unique_prefix("trace"), &["--log-level", "info"]);
    std::fs::write(quiet.p("f"), b"x").unwrap();
    quiet.unmount();
    assert!(!quiet.log_text().contains("aws_smithy_runtime"));
}
