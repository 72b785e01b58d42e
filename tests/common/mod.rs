//! Shared test support: the local S3 server's settings, S3 helpers, and real FUSE mounts.
//!
//! Tests that need the S3 server or `/dev/fuse` fail with a message saying how to provide them
//! (`scripts/test` starts everything); they never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod proxy;

use pailfs::store::ObjectStore;
use pailfs::store::aws::AwsStore;
use pailfs::store::client::{S3Settings, StaticKeys, build_client};

/// The local S3 server, from the variables `scripts/s3-server start` exports.
#[derive(Clone, Debug)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub secret: String,
    pub region: String,
}

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test, or eval \"$(scripts/s3-server start)\" first")
    })
}

impl S3Env {
    pub fn get() -> S3Env {
        S3Env {
            endpoint: need("AWS_ENDPOINT_URL"),
            bucket: need("PAILFS_TEST_BUCKET"),
            key: need("AWS_ACCESS_KEY_ID"),
            secret: need("AWS_SECRET_ACCESS_KEY"),
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "garage".into()),
        }
    }

    /// moto's server (`scripts/moto-server`), as its full-access IAM user.
    pub fn moto_full() -> S3Env {
        S3Env {
            endpoint: need("PAILFS_MOTO_ENDPOINT"),
            bucket: need("PAILFS_MOTO_BUCKET"),
            key: need("PAILFS_MOTO_FULL_KEY"),
            secret: need("PAILFS_MOTO_FULL_SECRET"),
            region: "us-east-1".into(),
        }
    }

    /// moto with every permission: for a test to see what a mount left (versions, uploads).
    pub fn moto_admin() -> S3Env {
        S3Env {
            key: need("PAILFS_MOTO_ADMIN_KEY"),
            secret: need("PAILFS_MOTO_ADMIN_SECRET"),
            ..S3Env::moto_full()
        }
    }

    pub fn settings(&self) -> S3Settings {
        let mut s = S3Settings::with_defaults();
        s.endpoint_url = Some(self.endpoint.clone());
        s.region = Some(self.region.clone());
        s.static_keys = Some(StaticKeys {
            access_key_id: self.key.clone(),
            secret_access_key: self.secret.clone(),
            session_token: None,
        });
        s
    }

    /// Points `cmd` (a pailfs run) at this server with these keys, through the environment.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", &self.region)
    }

    /// The whole object at `key`, as S3 stores it (blocking: for the tests' own checks).
    pub fn stored(&self, key: &str) -> Vec<u8> {
        use pailfs::store::ObjectStore;
        rt().block_on(async {
            let s = self.store().await;
            let len = s
                .head(key)
                .await
                .unwrap_or_else(|e| panic!("HEAD {key}: {e}"))
                .size;
            s.get_range(key, 0..len, None).await.unwrap().to_vec()
        })
    }

    /// PUTs `data` at `key` directly, without metadata (blocking).
    pub fn put(&self, key: &str, data: &[u8]) {
        use pailfs::store::ObjectStore;
        rt().block_on(async {
            let s = self.store().await;
            s.put(
                key,
                bytes::Bytes::copy_from_slice(data),
                &Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
        })
    }

    pub async fn store(&self) -> AwsStore {
        AwsStore::new(build_client(&self.settings()).await, self.bucket.clone())
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A prefix no other test (or earlier run) uses: `t/<name>-<pid>-<n>-<time>/`.
pub fn unique_prefix(name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("t/{name}-{}-{n}-{t}/", std::process::id())
}

/// A runtime for tests that are not async themselves.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn pailfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pailfs"))
}

pub fn is_mounted(p: &Path) -> bool {
    pailfs::config::is_mounted(&std::fs::canonicalize(p).unwrap_or(p.to_path_buf()))
}

/// A real mount of `bucket:prefix` through /dev/fuse, unmounted on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    pub prefix: String,
    pub env: S3Env,
    child: Option<Child>,
    pub log: PathBuf,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
    /// What is mounted: `BUCKET:PREFIX` or a connection label.
    pub source: String,
    /// A command the daemon runs under (`nsenter --net=...`), if any.
    wrap: Vec<String>,
    /// The cache directory, when it is another mount's (`cache` is then unused).
    shared_cache: Option<PathBuf>,
}

impl Mount {
    pub fn new(prefix: &str) -> Mount {
        Self::with_args(prefix, &[])
    }

    pub fn with_args(prefix: &str, extra: &[&str]) -> Mount {
        Self::with_env(prefix, extra, &[])
    }

    /// A mount whose process gets `envs` on top of the server's settings (other credentials).
    pub fn with_env(prefix: &str, extra: &[&str], envs: &[(&str, &str)]) -> Mount {
        let source = format!("{}:{}", S3Env::get().bucket, prefix);
        Self::custom(&source, prefix, extra, envs)
    }

    /// Mounts `source` (a bucket, `BUCKET:PREFIX` or a connection label); `prefix` is where
    /// its files are in S3, for the test's own checks.
    pub fn custom(source: &str, prefix: &str, extra: &[&str], envs: &[(&str, &str)]) -> Mount {
        Self::on(S3Env::get(), source, prefix, extra, envs)
    }

    /// A mount of `source` on the S3 server `env` (another instance than the shared one).
    pub fn on(
        env: S3Env,
        source: &str,
        prefix: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Mount {
        Self::build(env, source, prefix, extra, envs, &[])
    }

    /// [`Mount::on`] with the daemon run under `wrap` (a network namespace, say), without
    /// extra environment.
    pub fn wrapped(env: S3Env, source: &str, prefix: &str, extra: &[&str], wrap: &[&str]) -> Mount {
        Self::build(env, source, prefix, extra, &[], wrap)
    }

    /// Another mount of the shared server's `prefix` on its own mountpoint, with `other`'s
    /// cache directory (so it finds what `other` left there, the attribute cache included).
    pub fn sharing_cache(other: &Mount, prefix: &str, extra: &[&str]) -> Mount {
        let source = format!("{}:{}", S3Env::get().bucket, prefix);
        let mut m = Self::unstarted(S3Env::get(), &source, prefix, extra, &[], &[]);
        m.shared_cache = Some(other.cache.path().to_path_buf());
        m.start();
        m
    }

    /// The cache directory the daemon is given.
    pub fn cache_dir(&self) -> &Path {
        self.shared_cache.as_deref().unwrap_or(self.cache.path())
    }

    fn build(
        env: S3Env,
        source: &str,
        prefix: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        wrap: &[&str],
    ) -> Mount {
        let mut m = Self::unstarted(env, source, prefix, extra, envs, wrap);
        m.start();
        m
    }

    fn unstarted(
        env: S3Env,
        source: &str,
        prefix: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        wrap: &[&str],
    ) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("pailfs-mnt-")
            .tempdir()
            .unwrap();
        let cache = tempfile::Builder::new()
            .prefix("pailfs-cache-")
            .tempdir()
            .unwrap();
        let log = cache.path().join("pailfs.log");
        Mount {
            dir,
            cache,
            prefix: prefix.to_string(),
            env,
            child: None,
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source: source.to_string(),
            wrap: wrap.iter().map(|s| s.to_string()).collect(),
            shared_cache: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn start(&mut self) {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: the mount tests need FUSE (run as root with /dev/fuse)"
        );
        let mut cmd = match self.wrap.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(pailfs_bin());
                c
            }
            None => Command::new(pailfs_bin()),
        };
        let child = self
            .env
            .apply(&mut cmd)
            .arg("mount")
            .arg(&self.source)
            .arg(self.dir.path())
            .arg("--foreground")
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .arg("--log-file")
            .arg(&self.log)
            .args(if self.extra.iter().any(|a| a == "--log-level") {
                vec![]
            } else {
                vec!["--log-level", "debug"]
            })
            // pailfs' own debug lines without the S3 client's (a few per request), unless
            // the test asks for a level itself.
            .envs(
                (!self
                    .extra
                    .iter()
                    .any(|a| a == "--log-level" || a == "--debug"))
                .then_some(("RUST_LOG", "pailfs=debug,fuser=error,aws_config=error,warn")),
            )
            .args(&self.extra)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pailfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(self.dir.path()) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .ok();
                panic!("pailfs exited ({status}) before mounting: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts and waits for the daemon to exit.
    pub fn unmount(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut ok = false;
            for _ in 0..100 {
                let st = Command::new("umount")
                    .arg(self.dir.path())
                    .stderr(Stdio::null())
                    .status();
                if st.map(|s| s.success()).unwrap_or(false) || !is_mounted(self.dir.path()) {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status();
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("pailfs did not exit after unmount");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mounted").id()
    }

    /// SIGKILLs the daemon (no chance to upload anything) and detaches the dead mount.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the daemon again on the same mountpoint and cache directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.start();
    }

    /// The daemon's peak resident memory (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/PID/status");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Unmounts and mounts the same prefix again (a fresh process, no caches).
    pub fn remount(&mut self) {
        self.unmount();
        self.start();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's side of a failed test, for CI logs.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the pailfs log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.unmount();
    }
}

/// A Garage instance of this test's own, on `port`, for tests that kill the server.
pub struct PrivateS3 {
    pub env: S3Env,
    dir: PathBuf,
    port: u16,
    /// The local address its S3 API listens on.
    bind: String,
}

impl PrivateS3 {
    pub fn start(name: &str, port: u16) -> PrivateS3 {
        Self::cluster(name, port, 1)
    }

    /// `nodes` Garage nodes keeping every object on up to three of them (node I serves S3 on
    /// `port + 10 * I`); the mount's endpoint is node 0.
    pub fn cluster(name: &str, port: u16, nodes: u16) -> PrivateS3 {
        Self::launch(name, port, nodes, "127.0.0.1")
    }

    /// One node listening on the local address `bind` (the host side of a veth pair).
    pub fn bound(name: &str, port: u16, bind: &str) -> PrivateS3 {
        Self::launch(name, port, 1, bind)
    }

    fn launch(name: &str, port: u16, nodes: u16, bind: &str) -> PrivateS3 {
        let dir = std::env::temp_dir().join(format!("pailfs-s3-{name}-{}", std::process::id()));
        let n = nodes.to_string();
        let out = Self::script(&dir, port, bind, &["start", "--nodes", &n]);
        let var = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")))
                .unwrap_or_else(|| panic!("{k} missing from: {out}"))
                .to_string()
        };
        let env = S3Env {
            endpoint: var("AWS_ENDPOINT_URL"),
            bucket: var("PAILFS_TEST_BUCKET"),
            key: var("AWS_ACCESS_KEY_ID"),
            secret: var("AWS_SECRET_ACCESS_KEY"),
            region: var("AWS_REGION"),
        };
        PrivateS3 {
            env,
            dir,
            port,
            bind: bind.to_string(),
        }
    }

    fn script(dir: &Path, port: u16, bind: &str, cmd: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server");
        let out = Command::new(script)
            .args(cmd)
            .env("PAILFS_S3_PORT", port.to_string())
            .env("PAILFS_S3_DIR", dir)
            .env("PAILFS_S3_BIND", bind)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3-server {cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILLs the server; its data stays.
    pub fn kill(&self) {
        self.kill_node(0);
    }

    /// Starts the killed server again on the same data.
    pub fn resume(&self) {
        self.resume_node(0);
    }

    /// SIGKILLs node `i` of a cluster; its data stays.
    pub fn kill_node(&self, i: u16) {
        Self::script(&self.dir, self.port, &self.bind, &["kill", &i.to_string()]);
    }

    /// Starts node `i` again on its data.
    pub fn resume_node(&self, i: u16) {
        Self::script(
            &self.dir,
            self.port,
            &self.bind,
            &["resume", &i.to_string()],
        );
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        Self::script(&self.dir, self.port, &self.bind, &["stop"]);
    }
}

/// Deletes every key under `prefix` (test cleanup).
pub async fn delete_prefix(store: &AwsStore, prefix: &str) {
    let mut pages = pailfs::store::Pages::new(pailfs::store::ListRequest::flat(prefix));
    while let Some(page) = pages.next(store).await.unwrap() {
        for o in &page.objects {
            store.delete(&o.key).await.unwrap();
        }
    }
}

/// SHA-256 of a file, as hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pailfs stats` of a live mount (`--prometheus` for the raw text).
pub fn stats(m: &Mount, prometheus: bool) -> String {
    let mut cmd = Command::new(pailfs_bin());
    cmd.arg("stats").arg(m.path());
    if prometheus {
        cmd.arg("--prometheus");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "pailfs stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One value of a `pailfs stats --prometheus` page.
pub fn stat_value(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{page}"))
}

/// Writes `data` to `p` and returns what `fsync` says: `fs::write` drops the file without
/// looking at `close()`, so an upload that failed there would go unnoticed.
pub fn write_synced(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(p)?;
    f.write_all(data)?;
    f.sync_all()
}

/// What S3 stored for `key` (a HEAD with the SDK, checksums asked for), for tests that assert
/// the headers of stored objects.
pub fn head_object(env: &S3Env, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    let client = rt().block_on(build_client(&env.settings()));
    let req = client
        .head_object()
        .bucket(&env.bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
    rt().block_on(req.send())
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"))
}

/// The CRC32C of `data` as S3 writes it in `x-amz-checksum-crc32c` (base64, big-endian).
pub fn crc32c_b64(data: &[u8]) -> String {
    use base64::Engine;
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Runs the test `name` (its path in this binary, `module::test`) again in a process of its
/// own and checks that it passed there: true in that process (the caller goes on with the
/// test), false in the calling one once the other passed. For tests that keep files open
/// across steps whose order matters: in the shared process another test's thread may fork at
/// any moment, and the child's exec closes its copies of every descriptor, each close a FLUSH
/// (an upload) the test did not ask for.
pub fn alone(name: &str) -> bool {
    if std::env::var_os("PAILFS_ALONE").is_some() {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env("PAILFS_ALONE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its own process:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| !l.contains(" DEBUG "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    false
}
