//! The S3 server dying, pailfs dying, and a long mixed load: nothing half-written in S3,
//! nothing acknowledged lost, memory within its bound.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pailfs::store::ObjectStore;

use crate::common::*;

const MIB: usize = 1 << 20;

/// `close(2)` on the file, returning its error (dropping a `File` ignores it).
fn close(f: std::fs::File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn open_uploads(store: &pailfs::store::aws::AwsStore, prefix: &str) -> usize {
    store.list_multipart_uploads(prefix).await.unwrap().len()
}

#[test]
fn the_server_dying_mid_upload_fails_close_and_keeps_the_old_version() {
    let s3 = PrivateS3::start("outage", 3920);
    let prefix = unique_prefix("outage");
    let source = format!("{}:{prefix}", s3.env.bucket);
    let mut m = Mount::on(
        s3.env.clone(),
        &source,
        &prefix,
        &["--part-size", "8M"],
        &[],
    );
    std::fs::write(m.p("big.bin"), b"version one\n").unwrap();

    // Overwrite it with 300 MiB; the server dies after the first 100 MiB were written. A
    // separate process writes (see `a_killed_pailfs_...` for why).
    let script = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
chunk = bytes(range(256)) * 4096
for i in range(300):
    if i == 100:
        print("paused", flush=True)
        sys.stdin.readline()
    os.write(fd, chunk)
t = time.monotonic()
try:
    os.close(fd)
    print("closed ok", flush=True)
except OSError as e:
    print("close failed errno %d after %.1f s" % (e.errno, time.monotonic() - t), flush=True)
"#;
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.p("big.bin"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(writer.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "paused");
    s3.kill();
    writeln!(writer.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    writer.wait().unwrap();
    eprintln!("writer: {}", line.trim());
    assert!(
        line.starts_with(&format!("close failed errno {}", libc::EIO)),
        "close() did not report the failed upload: {line}"
    );
    let secs: f64 = line.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(secs < 120.0, "close() took {secs} s");

    // The server comes back: the same mount works again, and the old version is intact.
    s3.resume();
    let back = std::fs::read(m.p("big.bin")).unwrap();
    assert!(
        back == b"version one\n",
        "read {} bytes, not the old version",
        back.len()
    );
    std::fs::write(m.p("after.txt"), b"written after the outage\n").unwrap();
    assert_eq!(
        std::fs::read(m.p("after.txt")).unwrap(),
        b"written after the outage\n"
    );
    let rt = rt();
    let store = rt.block_on(s3.env.store());
    let head = rt
        .block_on(store.head(&format!("{prefix}big.bin")))
        .unwrap();
    assert_eq!(head.size, 12, "a partial object replaced the old version");
    // The data was set aside, not lost.
    let failed: Vec<_> = walk(m.cache.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/failed/"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        std::fs::metadata(&failed[0]).unwrap().len(),
        300 * MIB as u64
    );

    // The multipart upload the outage stranded is aborted, at the latest by the next mount.
    m.remount();
    assert_eq!(rt.block_on(open_uploads(&store, &prefix)), 0);
}

#[test]
fn a_killed_pailfs_leaves_only_complete_objects_and_its_data_recoverable() {
    let env = S3Env::get();
    let prefix = unique_prefix("sigkill");
    let rt = rt();
    let store = rt.block_on(env.store());
    let base = pseudo_random(12 * MIB, 1);
    rt.block_on(store.put(
        &format!("{prefix}edited.bin"),
        base.clone().into(),
        &Default::default(),
    ))
    .unwrap();
    let mut m = Mount::with_args(&prefix, &["--part-size", "5M"]);

    // Five files closed before the kill: they must be in S3, complete.
    let mut closed = Vec::new();
    for i in 0..5 {
        let data = pseudo_random(100_000 * (i + 1), 10 + i as u64);
        std::fs::write(m.p(&format!("closed-{i}")), &data).unwrap();
        closed.push((format!("closed-{i}"), data));
    }
    // Twenty files written and still open when pailfs dies (some large enough that parts
    // were already uploaded), and one existing object edited in place. A separate process
    // holds them: any close() of a descriptor flushes, and this test process forks (other
    // tests spawn commands), which would close inherited copies.
    let staging = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let len = if i % 4 == 0 {
            12 * MIB + i
        } else {
            3000 * i + 1
        };
        let data = pseudo_random(len, 100 + i as u64);
        std::fs::write(staging.path().join(format!("open-{i}")), &data).unwrap();
        expected.push((format!("open-{i}"), data));
    }
    let mut edited = base.clone();
    edited[6 * MIB..6 * MIB + 15].copy_from_slice(b"EDITED IN PLACE");
    edited.extend_from_slice(b"APPENDED");
    expected.push(("edited.bin".to_string(), edited));
    let script = format!(
        r#"
import os, sys, time
src, dst = sys.argv[1], sys.argv[2]
fds = []
for i in range(20):
    data = open(os.path.join(src, "open-%d" % i), "rb").read()
    fd = os.open(os.path.join(dst, "open-%d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:1 << 20]):]
    fds.append(fd)
fd = os.open(os.path.join(dst, "edited.bin"), os.O_RDWR)
os.pwrite(fd, b"EDITED IN PLACE", {off})
os.lseek(fd, 0, os.SEEK_END)
os.write(fd, b"APPENDED")
fds.append(fd)
print("ready", flush=True)
time.sleep(600)
"#,
        off = 6 * MIB
    );
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(staging.path())
        .arg(m.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready", "the writer process failed");

    m.kill_daemon();
    let _ = holder.kill();
    let _ = holder.wait();

    // S3 holds the closed files complete, the edited object unchanged, nothing else.
    rt.block_on(async {
        for (name, data) in &closed {
            let key = format!("{prefix}{name}");
            let got = store
                .get_range(&key, 0..data.len() as u64 + 1, None)
                .await
                .unwrap();
            assert_eq!(sha256(&got), sha256(data), "{name}");
        }
        let key = format!("{prefix}edited.bin");
        assert_eq!(store.head(&key).await.unwrap().size, base.len() as u64);
        for (name, _) in &expected[..20] {
            let r = store.head(&format!("{prefix}{name}")).await;
            if r.is_ok() {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(name.as_str())).collect();
                panic!("{name} is in S3 although it was never closed: {lines:#?}");
            }
        }
        assert!(
            open_uploads(&store, &prefix).await > 0,
            "no part was uploaded early"
        );
    });

    // The next mount aborts the stranded uploads and rebuilds every unsaved file.
    m.restart();
    assert_eq!(rt.block_on(open_uploads(&store, &prefix)), 0);
    let log = m.log_text();
    assert!(
        log.contains("were never uploaded"),
        "no recovery notice in the log"
    );
    let recovered: Vec<_> = walk(m.cache.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/recovered/"))
        .collect();
    for (name, data) in &expected {
        let p = recovered
            .iter()
            .find(|p| p.file_name().unwrap() == name.as_str())
            .unwrap_or_else(|| panic!("{name} was not recovered: {recovered:?}"));
        assert_eq!(sha256_file(p), sha256(data), "recovered {name}");
    }
    let index = recovered
        .iter()
        .find(|p| p.ends_with("RECOVERY.txt"))
        .expect("RECOVERY.txt");
    assert!(
        std::fs::read_to_string(index)
            .unwrap()
            .contains("edited.bin")
    );
    // Copying them back, as the notice says, stores them.
    let dir = index.parent().unwrap();
    sh(&format!(
        "cp -a {}/open-3 {}/",
        dir.display(),
        m.path().display()
    ));
    assert_eq!(sha256_file(&m.p("open-3")), sha256(&expected[3].1));
    drop(m);
    rt.block_on(async { delete_prefix(&store, &prefix).await });
}

#[test]
fn thirty_two_readers_and_eight_writers_stay_correct_within_the_memory_limit() {
    let secs: u64 = std::env::var("PAILFS_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let env = S3Env::get();
    let prefix = unique_prefix("stress");
    let rt = rt();
    let store = rt.block_on(env.store());
    // 32 files read, 8 files rewritten; sizes from 1 to 24 MiB.
    let size = |i: usize| (1 + i * 23 / 39) * MIB + i * 4099;
    let contents: Vec<Vec<u8>> = (0..40).map(|i| pseudo_random(size(i), i as u64)).collect();
    rt.block_on(async {
        for (i, data) in contents.iter().enumerate().take(32) {
            store
                .put(
                    &format!("{prefix}r{i}"),
                    data.clone().into(),
                    &Default::default(),
                )
                .await
                .unwrap();
        }
    });
    let limit = 128 * MIB as u64;
    let m = Mount::with_args(&prefix, &["--memory-limit", "128M", "--log-level", "info"]);
    for (i, data) in contents.iter().enumerate().skip(32) {
        std::fs::write(m.p(&format!("w{i}")), data).unwrap();
    }
    let sums: Arc<Vec<String>> = Arc::new(contents.iter().map(|d| sha256(d)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut threads = Vec::new();
    for t in 0..32usize {
        let (root, sums, stop) = (m.path().to_path_buf(), sums.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let mut i = t;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                let name = format!("r{}", i % 32);
                let mut data = Vec::new();
                std::fs::File::open(root.join(&name))
                    .and_then(|mut f| f.read_to_end(&mut data))
                    .unwrap_or_else(|e| panic!("reading {name}: {e}"));
                assert_eq!(sha256(&data), sums[i % 32], "{name} read wrong");
                i += 7;
                n += 1;
            }
            n
        }));
    }
    for w in 32..40usize {
        let (root, stop) = (m.path().to_path_buf(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                let name = format!("w{w}");
                let data = pseudo_random(size(w), (w as u64) << 32 | n);
                let mut f = std::fs::File::create(root.join(&name)).unwrap();
                f.write_all(&data).unwrap();
                close(f).unwrap_or_else(|e| panic!("closing {name}: {e}"));
                let back = std::fs::read(root.join(&name)).unwrap();
                assert_eq!(sha256(&back), sha256(&data), "{name} read back wrong");
                n += 1;
            }
            n
        }));
    }
    let mut done = Vec::new();
    for t in threads {
        match t.join() {
            Ok(n) => done.push(n),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                std::panic::resume_unwind(e);
            }
        }
    }
    let peak = m.peak_rss();
    eprintln!(
        "reads per reader {:?}, rewrites per writer {:?}, peak RSS {} MiB",
        &done[..32],
        &done[32..],
        peak >> 20
    );
    assert!(
        done.iter().all(|n| *n > 0),
        "a thread did no work: {done:?}"
    );
    assert!(
        peak <= limit,
        "peak RSS {} MiB over the {} MiB memory limit",
        peak >> 20,
        limit >> 20
    );
    drop(m);
    rt.block_on(async { delete_prefix(&store, &prefix).await });
}
