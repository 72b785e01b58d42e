//! A raw S3 client for `scripts/bench`: the ceiling a filesystem over the same server could
//! reach, with the same SDK pailfs uses, no FUSE in between. Also seeds objects for the
//! listing benchmarks. Reads the usual AWS_* variables.
//!
//! ```text
//! s3bench get BUCKET KEY [CONCURRENCY] [CHUNK_MIB]     # concurrent ranged GETs of one object
//! s3bench put BUCKET KEY SIZE_MIB [CONC] [FILE]        # multipart upload of SIZE MiB (of FILE)
//! s3bench list BUCKET PREFIX                           # paged LIST of every key under PREFIX
//! s3bench seed BUCKET PREFIX COUNT SIZE_BYTES [CONC]   # COUNT small objects, CONC (32) at a time
//! s3bench small-get BUCKET PREFIX COUNT                # GET COUNT small objects one by one
//! s3bench heads BUCKET PREFIX COUNT [CONC]             # HEAD COUNT objects, CONC (64) at a time
//! s3bench wait-size BUCKET KEY SIZE_BYTES              # waits until KEY exists with SIZE bytes
//! s3bench wait-count BUCKET PREFIX COUNT               # waits until COUNT keys are under PREFIX
//! ```
//! Each prints one line: `<what> <seconds> <MiB/s or ops/s>`.

use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use pailfs::store::aws::AwsStore;
use pailfs::store::client::{S3Settings, build_client};
use pailfs::store::{ListRequest, ObjectStore, Pages, UserMeta};

const MIB: u64 = 1024 * 1024;

async fn store(bucket: &str) -> AwsStore {
    let mut s = S3Settings::with_defaults();
    s.endpoint_url = std::env::var("AWS_ENDPOINT_URL").ok();
    s.region = std::env::var("AWS_REGION").ok();
    AwsStore::new(build_client(&s).await, bucket)
}

fn arg(a: &[String], i: usize, default: u64) -> u64 {
    a.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: see the top of examples/s3bench.rs");
        std::process::exit(2);
    }
    let s = store(&a[2]).await;
    let t = Instant::now();
    match a[1].as_str() {
        "get" => {
            let key = &a[3];
            let conc = arg(&a, 4, 8) as usize;
            let chunk = arg(&a, 5, 8) * MIB;
            let size = s.head(key).await.expect("head").size;
            let ranges: Vec<(u64, u64)> = (0..size.div_ceil(chunk))
                .map(|i| (i * chunk, ((i + 1) * chunk).min(size)))
                .collect();
            let total: usize = stream::iter(ranges)
                .map(|(x, y)| {
                    let s = &s;
                    async move { s.get_range(key, x..y, None).await.expect("get").len() }
                })
                .buffered(conc)
                .fold(0, |acc, n| async move { acc + n })
                .await;
            let secs = t.elapsed().as_secs_f64();
            println!("get {secs:.3} {:.1}", total as f64 / MIB as f64 / secs);
        }
        "put" => {
            let key = &a[3];
            let size = arg(&a, 4, 1024) * MIB;
            let conc = arg(&a, 5, 8) as usize;
            let part = 8 * MIB;
            // The bytes of FILE when given (the same data the file systems write: random
            // data neither compresses nor deduplicates in the server), else a constant.
            let data = match a.get(6) {
                Some(path) => Bytes::from(std::fs::read(path).expect("read the data file")),
                None => Bytes::from(vec![7u8; size as usize]),
            };
            assert!(
                data.len() as u64 >= size,
                "the data file is shorter than SIZE"
            );
            let t = Instant::now();
            let id = s
                .create_multipart(key, &UserMeta::new())
                .await
                .expect("create");
            let n = size.div_ceil(part);
            let mut parts: Vec<(i32, String)> = stream::iter(0..n)
                .map(|i| {
                    let (s, id, data) = (&s, &id, data.clone());
                    async move {
                        let at = (i * part) as usize;
                        let len = part.min(size - i * part) as usize;
                        let e = s
                            .upload_part(key, id, (i + 1) as i32, data.slice(at..at + len))
                            .await
                            .expect("part");
                        ((i + 1) as i32, e)
                    }
                })
                .buffer_unordered(conc)
                .collect()
                .await;
            parts.sort();
            s.complete_multipart(key, &id, &parts)
                .await
                .expect("complete");
            let secs = t.elapsed().as_secs_f64();
            println!("put {secs:.3} {:.1}", size as f64 / MIB as f64 / secs);
        }
        "list" => {
            let mut pages = Pages::new(ListRequest::dir(&a[3]));
            let mut n = 0;
            while let Some(p) = pages.next(&s).await.expect("list") {
                n += p.objects.len() + p.prefixes.len();
            }
            let secs = t.elapsed().as_secs_f64();
            println!("list {secs:.3} {:.1} ({n} entries)", n as f64 / secs);
        }
        "seed" => {
            let prefix = &a[3];
            let count = arg(&a, 4, 10_000);
            let size = arg(&a, 5, 0) as usize;
            let body = Bytes::from(vec![b'x'; size]);
            let conc = arg(&a, 6, 32) as usize;
            stream::iter(0..count)
                .map(|i| {
                    let (s, body) = (&s, body.clone());
                    async move {
                        s.put(&format!("{prefix}f{i:06}"), body, &UserMeta::new())
                            .await
                            .expect("put")
                    }
                })
                .buffer_unordered(conc)
                .for_each(|_| async {})
                .await;
            let secs = t.elapsed().as_secs_f64();
            println!("seed {secs:.3} {:.1}", count as f64 / secs);
        }
        "heads" => {
            let prefix = &a[3];
            let count = arg(&a, 4, 10_000);
            let conc = arg(&a, 5, 64) as usize;
            stream::iter(0..count)
                .map(|i| {
                    let s = &s;
                    async move { s.head(&format!("{prefix}f{i:06}")).await.expect("head") }
                })
                .buffer_unordered(conc)
                .for_each(|_| async {})
                .await;
            let secs = t.elapsed().as_secs_f64();
            println!("heads {secs:.3} {:.1}", count as f64 / secs);
        }
        "small-get" => {
            let prefix = &a[3];
            let count = arg(&a, 4, 1000);
            for i in 0..count {
                let key = format!("{prefix}f{i:06}");
                let h = s.head(&key).await.expect("head");
                s.get_range(&key, 0..h.size, None).await.expect("get");
            }
            let secs = t.elapsed().as_secs_f64();
            println!("small-get {secs:.3} {:.1}", count as f64 / secs);
        }
        "wait-size" => {
            // For file systems whose close() returns before the upload (rclone's VFS cache).
            let size = arg(&a, 4, 0);
            while !matches!(s.head(&a[3]).await, Ok(h) if h.size == size) {
                if t.elapsed().as_secs() > 600 {
                    eprintln!("{} did not reach {size} bytes", a[3]);
                    std::process::exit(1);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            println!("wait-size {:.3}", t.elapsed().as_secs_f64());
        }
        "wait-count" => {
            let want = arg(&a, 4, 0) as usize;
            loop {
                let mut pages = Pages::new(ListRequest::flat(&a[3]));
                let mut n = 0;
                while let Some(p) = pages.next(&s).await.expect("list") {
                    n += p.objects.len();
                }
                if n >= want {
                    break;
                }
                if t.elapsed().as_secs() > 600 {
                    eprintln!("only {n} of {want} keys under {}", a[3]);
                    std::process::exit(1);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            println!("wait-count {:.3}", t.elapsed().as_secs_f64());
        }
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}
