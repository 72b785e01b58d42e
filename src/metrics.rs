//! Live statistics of a running mount: `pailfs stats MOUNTPOINT` and a Prometheus endpoint.
//!
//! Each mount serves its counters as Prometheus text on a unix socket whose path is derived
//! from the mountpoint (`/run/pailfs/` for root, `$XDG_RUNTIME_DIR/pailfs/` otherwise), so
//! `pailfs stats` finds a mount from its mountpoint alone, with no daemon to configure.
//! `--metrics-listen ADDR` also serves the same text over HTTP on a TCP address, for a
//! Prometheus scraper; it is off by default. Both are served by hyper, answering any GET
//! with the whole page, with at most `MAX_CONNECTIONS` connections at once (more are closed
//! at once, so a flood of connections cannot use up the process's descriptors, which the S3
//! client needs) and each bounded to `CONNECTION_TIME`.

use crate::error::CliError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::cache::attrs::AttrCache;
use crate::fs::Fs;
use crate::store::ObjectStore;
use crate::store::metered::{ERROR_KINDS, OPS, StoreStats};

/// Produces the current page.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Connections served at once on one endpoint; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest one connection is kept.
const CONNECTION_TIME: Duration = Duration::from_secs(10);

/// The Prometheus text for a mount.
pub fn render<S: ObjectStore>(fs: &Fs<S>, st: &StoreStats, attrs: Option<&AttrCache>) -> String {
    let mut s = String::new();
    store_counters(&mut s, st);
    block_cache(&mut s, fs);
    attr_cache(&mut s, attrs);
    filesystem(&mut s, fs);
    s
}

/// One metric: its HELP and TYPE lines, then a line per sample (labels, value).
fn metric(s: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(
        s,
        "# HELP pailfs_{name} {help}\n# TYPE pailfs_{name} {kind}"
    );
    for (labels, v) in samples {
        let _ = writeln!(s, "pailfs_{name}{labels} {v}");
    }
}

/// One sample per name, labelled `label="name"`.
fn by(label: &str, names: &[&str], vals: &[AtomicU64]) -> Vec<(String, u64)> {
    names
        .iter()
        .zip(vals)
        .map(|(n, v)| (format!("{{{label}=\"{n}\"}}"), v.load(Ordering::Relaxed)))
        .collect()
}

/// A single sample without labels.
fn one(v: u64) -> Vec<(String, u64)> {
    vec![(String::new(), v)]
}

/// What the store layer counted: requests, errors, retries and bytes moved.
fn store_counters(s: &mut String, st: &StoreStats) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric(
        s,
        "requests_total",
        "counter",
        "S3 requests by type (retries not included).",
        &by("op", &OPS, &st.requests),
    );
    metric(
        s,
        "request_errors_total",
        "counter",
        "S3 requests that failed after their retries, by kind.",
        &by("kind", &ERROR_KINDS, &st.errors),
    );
    metric(
        s,
        "retries_total",
        "counter",
        "HTTP attempts beyond the first of each request.",
        &one(st.retries()),
    );
    metric(
        s,
        "read_bytes_total",
        "counter",
        "Object bytes received from S3.",
        &one(get(&st.bytes_in)),
    );
    metric(
        s,
        "written_bytes_total",
        "counter",
        "Object bytes sent to S3.",
        &one(get(&st.bytes_out)),
    );
}

/// The block cache: hits, misses, its size and its capacity.
fn block_cache<S: ObjectStore>(s: &mut String, fs: &Fs<S>) {
    let cache = fs.block_cache();
    metric(
        s,
        "cache_hits_total",
        "counter",
        "Reads of blocks found in the block cache (the kernel's page cache is not seen).",
        &one(cache.hits()),
    );
    metric(
        s,
        "cache_misses_total",
        "counter",
        "Reads of blocks not in the block cache.",
        &one(cache.misses()),
    );
    metric(
        s,
        "cache_bytes",
        "gauge",
        "Bytes in the block cache.",
        &one(cache.bytes()),
    );
    metric(
        s,
        "cache_limit_bytes",
        "gauge",
        "Block cache capacity.",
        &one(cache.cap()),
    );
    let (fetched, returned) = fs.read_amplification();
    metric(
        s,
        "file_fetched_bytes_total",
        "counter",
        "Object bytes fetched from S3 to serve reads of files (read-ahead included).",
        &one(fetched),
    );
    metric(
        s,
        "file_returned_bytes_total",
        "counter",
        "Bytes returned to read calls (the kernel's page cache is not seen).",
        &one(returned),
    );
}

/// The persistent attribute cache: listed files whose stored attributes it held (hits) or
/// not (misses), in this process.
fn attr_cache(s: &mut String, attrs: Option<&AttrCache>) {
    let (hits, misses) = attrs.map_or((0, 0), AttrCache::counts);
    metric(
        s,
        "attr_cache_hits_total",
        "counter",
        "Listed files whose stored attributes the attribute cache held (no HEAD needed).",
        &one(hits),
    );
    metric(
        s,
        "attr_cache_misses_total",
        "counter",
        "Listed files whose stored attributes the attribute cache did not hold.",
        &one(misses),
    );
}

/// The filesystem core: uploads, spool use and case collisions.
fn filesystem<S: ObjectStore>(s: &mut String, fs: &Fs<S>) {
    metric(
        s,
        "uploads_pending",
        "gauge",
        "Open files with changes not uploaded yet.",
        &one(fs.pending_uploads()),
    );
    metric(
        s,
        "uploads_failed_total",
        "counter",
        "Files whose upload failed for good (data kept in the cache directory).",
        &one(fs.failed_uploads()),
    );
    metric(
        s,
        "spool_bytes",
        "gauge",
        "Local disk used by files being written.",
        &one(fs.spool_used()),
    );
    metric(
        s,
        "case_collisions_total",
        "counter",
        "Names found colliding when case is ignored.",
        &one(fs.collision_count()),
    );
}

/// Where the mount on `mountpoint` serves its statistics.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let h = crate::private::stable_hash(&[mountpoint.as_os_str().as_encoded_bytes()]);
    runtime_dir().join(format!("mount-{h}.sock"))
}

fn runtime_dir() -> PathBuf {
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/pailfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("pailfs"),
        None => crate::private::fallback_dir("run"),
    }
}

/// Serves the page on the unix socket `path` until the runtime stops.
pub async fn serve_unix(path: PathBuf, render: Render) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::private::private_dir(dir).map_err(std::io::Error::other)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (conn, _) = listener.accept().await?;
        serve_one(conn, render.clone(), &slots);
    }
}

/// Serves the page over HTTP on a TCP address (`--metrics-listen`).
pub async fn serve_tcp(listener: tokio::net::TcpListener, render: Render) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        if let Ok((conn, _)) = listener.accept().await {
            serve_one(conn, render.clone(), &slots);
        }
    }
}

/// Serves one connection if a slot is free; otherwise closes it at once.
fn serve_one<IO>(io: IO, render: Render, slots: &Arc<tokio::sync::Semaphore>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        return; // dropped: closed
    };
    tokio::spawn(async move {
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &render)) }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
        drop(permit);
    });
}

fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    render: &Render,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, body) = if req.method() == hyper::Method::GET {
        (hyper::StatusCode::OK, render())
    } else {
        (hyper::StatusCode::METHOD_NOT_ALLOWED, String::new())
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap_or_default()
}

/// Fetches the page of the mount on `mountpoint`.
pub fn fetch(mountpoint: &Path) -> Result<String, CliError> {
    use std::io::{Read, Write};
    let canon = std::fs::canonicalize(mountpoint)
        .map_err(|e| CliError::failed(format!("{}", mountpoint.display()), e))?;
    let path = socket_path(&canon);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        format!(
            "no pailfs mount answers for {} ({e}); is it mounted by pailfs, and by this user?",
            canon.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string()))
}

/// Parses Prometheus text into (name with labels, value) pairs.
pub fn parse(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The page as a short report for people.
pub fn report(text: &str) -> String {
    let m = parse(text);
    let val = |k: &str| {
        m.iter()
            .find(|(n, _)| n == &format!("pailfs_{k}"))
            .map_or(0, |(_, v)| *v)
    };
    let labelled = |k: &str| -> Vec<(String, u64)> {
        let pre = format!("pailfs_{k}{{");
        m.iter()
            .filter_map(|(n, v)| {
                let rest = n.strip_prefix(&pre)?;
                let label = rest.split('"').nth(1)?;
                Some((label.to_string(), *v))
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    };
    let list = |v: &[(String, u64)]| {
        v.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let reqs = labelled("requests_total");
    let errs = labelled("request_errors_total");
    let (hits, misses) = (val("cache_hits_total"), val("cache_misses_total"));
    let rate = if hits + misses > 0 {
        format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
    } else {
        "-".into()
    };
    let (fetched, returned) = (
        val("file_fetched_bytes_total"),
        val("file_returned_bytes_total"),
    );
    let (ahits, amisses) = (val("attr_cache_hits_total"), val("attr_cache_misses_total"));
    let arate = if ahits + amisses > 0 {
        format!("{:.1}%", 100.0 * ahits as f64 / (ahits + amisses) as f64)
    } else {
        "-".into()
    };
    let amp = if returned > 0 {
        format!("{:.2}x", fetched as f64 / returned as f64)
    } else {
        "-".into()
    };
    format!(
        "requests          {} ({})\n\
         retries           {}\n\
         errors            {} ({})\n\
         read from S3      {}\n\
         written to S3     {}\n\
         block cache       {} of {}, hit rate {rate} ({hits} hits, {misses} misses)\n\
         attribute cache   hit rate {arate} ({ahits} hits, {amisses} misses)\n\
         file reads        {} returned, {} fetched (amplification {amp})\n\
         uploads           {} pending, {} failed\n\
         spool             {}\n\
         case collisions   {}\n",
        reqs.iter().map(|(_, n)| n).sum::<u64>(),
        list(&reqs),
        val("retries_total"),
        errs.iter().map(|(_, n)| n).sum::<u64>(),
        list(&errs),
        human(val("read_bytes_total")),
        human(val("written_bytes_total")),
        human(val("cache_bytes")),
        human(val("cache_limit_bytes")),
        human(val("file_returned_bytes_total")),
        human(val("file_fetched_bytes_total")),
        val("uploads_pending"),
        val("uploads_failed_total"),
        human(val("spool_bytes")),
        val("case_collisions_total"),
    )
}

/// `pailfs stats MOUNTPOINT`.
pub fn command(a: crate::cli::StatsArgs) -> Result<i32, CliError> {
    let text = fetch(&a.mountpoint)?;
    if a.prometheus {
        print!("{text}");
    } else {
        print!("{}", report(&text));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_the_page() {
        let page = "# HELP x\npailfs_requests_total{op=\"get\"} 7\npailfs_requests_total{op=\"put\"} 3\n\
                    pailfs_requests_total{op=\"head\"} 0\npailfs_cache_hits_total 3\npailfs_cache_misses_total 1\n\
                    pailfs_read_bytes_total 2097152\npailfs_file_fetched_bytes_total 6144\n\
                    pailfs_file_returned_bytes_total 4096\n";
        let r = report(page);
        assert!(r.contains("requests          10 (get 7, put 3)"), "{r}");
        assert!(
            r.contains("file reads        4.0 KiB returned, 6.0 KiB fetched (amplification 1.50x)"),
            "{r}"
        );
        assert!(r.contains("hit rate 75.0%"), "{r}");
        assert!(r.contains("read from S3      2.0 MiB"), "{r}");
    }

    #[test]
    fn socket_paths_differ_by_mountpoint() {
        let a = socket_path(Path::new("/mnt/a"));
        assert_ne!(a, socket_path(Path::new("/mnt/b")));
        assert_eq!(a, socket_path(Path::new("/mnt/a")));
    }

    #[tokio::test]
    async fn the_socket_answers_with_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let render: Render = Arc::new(|| "pailfs_retries_total 4\n".to_string());
        tokio::spawn(serve_unix(path.clone(), render));
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
            c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut t = String::new();
            c.read_to_string(&mut t).unwrap();
            t
        })
        .await
        .unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK"));
        assert!(text.ends_with("pailfs_retries_total 4\n"));
    }
}
