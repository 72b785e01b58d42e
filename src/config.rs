//! Validated settings, built from the command line before anything else runs.
//!
//! Every user mistake that can be caught without the network is caught here, with a one-line
//! message that names the value and what to do: a malformed source, a bad size or mode, a
//! mountpoint that does not exist, is not a directory, or is already mounted.

use crate::error::CliError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache_dir::{Identity, MountDir};
use crate::cli::{MountArgs, S3Args};
use crate::connections::{self, Connection};
use crate::fs::FsConfig;
use crate::fs::attr::Defaults;
use crate::fs::names::normalize_prefix;
use crate::store::client::S3Settings;
use crate::store::requests::RequestOptions;

/// A bucket and the prefix inside it that becomes the mount's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub bucket: String,
    /// "" or ending in `/`.
    pub prefix: String,
}

impl Source {
    /// Parses `BUCKET`, `BUCKET:PREFIX`, `BUCKET/PREFIX` or `s3://BUCKET/PREFIX`.
    pub fn parse(s: &str) -> Result<Source, CliError> {
        let rest = s.strip_prefix("s3://").unwrap_or(s);
        let (bucket, prefix) = match rest.find([':', '/']) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        validate_bucket(bucket)
            .map_err(|why| why.within(format!("{s:?} is not BUCKET[:PREFIX]")))?;
        Ok(Source {
            bucket: bucket.to_string(),
            prefix: normalize_prefix(prefix)?,
        })
    }

    /// `bucket/prefix` for messages and the mount table.
    pub fn display(&self) -> String {
        format!("{}/{}", self.bucket, self.prefix)
    }
}

fn validate_bucket(b: &str) -> Result<(), CliError> {
    if b.len() < 3 || b.len() > 63 {
        return Err(CliError::Invalid(format!(
            "bucket name {b:?} must be 3 to 63 characters"
        )));
    }
    if !b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_')
    {
        return Err(CliError::Invalid(format!(
            "bucket name {b:?} may only hold lower-case letters, digits, '-', '.' and '_'"
        )));
    }
    Ok(())
}

/// A size in bytes, given as `8M`, `1.5G`, `4096` or `10GiB` and shown the shortest way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::str::FromStr for Size {
    type Err = CliError;
    fn from_str(s: &str) -> Result<Size, CliError> {
        parse_size(s).map(Size)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        match units
            .iter()
            .find(|(shift, _)| self.0 != 0 && self.0 % (1 << shift) == 0)
        {
            Some((shift, unit)) => write!(f, "{}{unit}", self.0 >> shift),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A metadata TTL in seconds, or mount-s3's `minimal` (0: ask S3 every time) and
/// `indefinite` (ten years: never expire while mounted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ttl(pub f64);

/// What `--metadata-ttl indefinite` means, in seconds.
pub const INDEFINITE_TTL_SECS: f64 = 10.0 * 365.0 * 86_400.0;

impl std::str::FromStr for Ttl {
    type Err = CliError;
    fn from_str(s: &str) -> Result<Ttl, CliError> {
        match s {
            "minimal" => Ok(Ttl(0.0)),
            "indefinite" => Ok(Ttl(INDEFINITE_TTL_SECS)),
            _ => s
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=86_400.0).contains(v))
                .map(Ttl)
                .ok_or_else(|| {
                    CliError::Invalid(format!(
                        "{s:?} is not 0 to 86400 seconds, minimal or indefinite"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for Ttl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= INDEFINITE_TTL_SECS {
            f.write_str("indefinite")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Permission bits, given and shown in octal (`644`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u16);

impl std::str::FromStr for Mode {
    type Err = CliError;
    fn from_str(s: &str) -> Result<Mode, CliError> {
        parse_mode(s).map(Mode)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:o}", self.0)
    }
}

/// Parses sizes like `8M`, `1.5G`, `4096`, `10GiB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, CliError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| CliError::Invalid(format!("{s:?} is not a size (examples: 4096, 8M, 10G)")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(CliError::Invalid(format!(
                "{s:?} has an unknown unit (use K, M, G or T)"
            )));
        }
    };
    Ok((n * mult as f64) as u64)
}

/// Parses an octal permission like `644` or `0755`.
pub fn parse_mode(s: &str) -> Result<u16, CliError> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CliError::Invalid(format!("{s:?} is not an octal permission like 644")))
}

/// The cache directory: `--cache-dir`, else `$XDG_CACHE_HOME/pailfs`, `~/.cache/pailfs`,
/// `/var/cache/pailfs` for root, or without a home a private `/tmp/pailfs-UID/cache`.
pub fn default_cache_dir() -> PathBuf {
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/pailfs");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pailfs");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("pailfs");
    }
    crate::private::fallback_dir("cache")
}

/// What a SOURCE argument names: a saved connection, or a bucket and prefix.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub source: Source,
    pub connection: Option<(String, Connection)>,
}

/// Resolves `LABEL`, `LABEL:PATH` (rclone's form: PATH under the connection's subfolder),
/// `BUCKET`, `BUCKET:PREFIX` or `s3://BUCKET/PREFIX` (always a bucket). A saved connection
/// wins over a bucket of the same name, and when the label could be a bucket's name it says so
/// on standard error, with how to name the bucket instead: never silently.
pub fn resolve_source(s: &str) -> Result<Resolved, CliError> {
    let (label, path) = s.split_once([':', '/']).unwrap_or((s, ""));
    if !s.starts_with("s3://")
        && connections::validate_label(label).is_ok()
        && let Some((c, _path)) = connections::file::find(label)?
    {
        let c = c
            .validated()
            .map_err(|e| e.within(format!("connection {label:?}")))?;
        let under = normalize_prefix(path).map_err(|e| CliError::Invalid(format!("{s:?}: {e}")))?;
        if label != c.bucket && validate_bucket(label).is_ok() {
            eprintln!(
                "pailfs: notice: {label:?} is a saved connection (bucket {:?}); to use a bucket named {label:?}, write s3://{label}",
                c.bucket
            );
        }
        return Ok(Resolved {
            source: Source {
                bucket: c.bucket.clone(),
                prefix: format!("{}{under}", c.subfolder),
            },
            connection: Some((label.to_string(), c)),
        });
    }
    Ok(Resolved {
        source: Source::parse(s)?,
        connection: None,
    })
}

/// The runtime of a one-shot command (check, collisions, doctor): two I/O threads.
pub fn command_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failed("cannot start the I/O runtime", e))
}

/// A "N keys scanned" spinner on standard error, when it is a terminal and `show`.
pub fn scan_spinner(show: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    (show && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message("keys scanned");
        b
    })
}

/// S3 settings for `bucket`: the defaults, then the connection, then explicit flags; an
/// endpoint none of them gives is what aws-config finds (`client::configured_endpoint`).
pub fn s3_settings(
    conn: Option<&Connection>,
    a: &S3Args,
    bucket: &str,
) -> Result<S3Settings, CliError> {
    let mut s = S3Settings::with_defaults();
    if let Some(c) = conn {
        c.apply_to(&mut s);
    }
    if let Some(e) = a.endpoint_url.clone().filter(|e| !e.is_empty()) {
        s.endpoint_url = Some(e);
    }
    if a.region.is_some() {
        s.region = a.region.clone();
    }
    if a.profile.is_some() {
        s.profile = a.profile.clone();
        s.static_keys = None;
        s.credential_process = None;
    }
    if let Some(file) = &a.passwd_file {
        s.static_keys = Some(connections::passwd::keys_for(file, bucket)?);
        s.credential_process = None;
    }
    let r = a.requests.over(conn.map(|c| &c.requests));
    if r.no_sign_request {
        if a.profile.is_some() || a.passwd_file.is_some() {
            return Err(CliError::Invalid(
                "--no-sign-request uses no credentials: drop --profile and --passwd-file".into(),
            ));
        }
        s.anonymous = true;
        s.static_keys = None;
    }
    s.requests = request_options(&r)?;
    s.force_path_style |= a.force_path_style;
    s.max_attempts = a.max_attempts.max(1);
    s.attempt_timeout = Duration::from_secs(a.request_timeout);
    s.ca_bundle = ca_bundle(a)?;
    if s.endpoint_url.is_none() {
        s.endpoint_url = crate::store::client::configured_endpoint(&s);
    }
    if s.requests.sse_c.is_some()
        && !crate::store::checksums::unsigned_payload_safe(s.endpoint_url.as_deref())
    {
        return Err(CliError::Invalid(
            "SSE-C sends the key with every request: it needs an https:// endpoint (or a loopback address), not plain HTTP".into(),
        ));
    }
    if let Some(e) = &s.endpoint_url
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(CliError::Invalid(format!(
            "the endpoint {e:?} (--endpoint-url, a connection, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or the profile) must start with http:// or https://"
        )));
    }
    Ok(s)
}

/// The PEM certificates of `--ca-bundle`, or of `AWS_CA_BUNDLE` (which the AWS CLI and the
/// other SDKs read, and aws-config does not).
fn ca_bundle(a: &S3Args) -> Result<Option<Vec<u8>>, CliError> {
    let path = match &a.ca_bundle {
        Some(p) => p.clone(),
        None => match std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) {
            Some(v) => std::path::PathBuf::from(v),
            None => return Ok(None),
        },
    };
    let pem = std::fs::read(&path).map_err(|e| {
        CliError::failed(format!("cannot read the CA bundle {}", path.display()), e)
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(CliError::Invalid(format!(
            "the CA bundle {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(Some(pem))
}

/// The request options of `r` (flags over a connection's), checked.
fn request_options(r: &crate::cli::RequestArgs) -> Result<RequestOptions, CliError> {
    let mut o = RequestOptions::new(
        r.sse.as_deref(),
        r.sse_kms_key_id.as_deref(),
        r.bucket_key,
        r.storage_class.as_deref(),
    )?;
    o.requester_pays = r.requester_pays;
    o.checksum = r.upload_checksums.unwrap_or_default().algorithm();
    if r.sse.is_some() && r.sse_c_key_file.is_some() {
        return Err(CliError::Invalid(
            "--sse and --sse-c-key-file (given or saved in the connection) exclude each other: keep one".into(),
        ));
    }
    if let Some(file) = &r.sse_c_key_file {
        o.sse_c = Some(crate::store::customer_key::CustomerKey::from_file(file)?);
    }
    if let Some(owner) = &r.expected_bucket_owner {
        if owner.len() != 12 || !owner.chars().all(|c| c.is_ascii_digit()) {
            return Err(CliError::Invalid(format!(
                "--expected-bucket-owner {owner:?} is not a 12-digit AWS account id"
            )));
        }
        o.expected_bucket_owner = Some(owner.clone());
    }
    Ok(o)
}

/// The default `--max-threads`.
pub const DEFAULT_FUSE_THREADS: u16 = 4;
/// The default of the hidden `--fuse-max-background`.
pub const DEFAULT_MAX_BACKGROUND: u16 = 16;

/// Threads and queue depths (`--max-threads` and hidden flags for
/// `scripts/bench-fuse-settings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Threads reading FUSE requests from the kernel.
    pub fuse_threads: u16,
    /// tokio worker threads (S3 requests, spool I/O).
    pub io_threads: u16,
    /// Asynchronous requests the kernel keeps in flight (read-ahead, writeback). Each can hold
    /// a 1 MiB reply, so this is part of the memory overhead `MemoryShares` reserves.
    pub max_background: u16,
}

impl Tuning {
    fn from_args(a: &MountArgs) -> Tuning {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Tuning {
            fuse_threads: a.max_threads,
            io_threads: match a.io_threads {
                0 => cores.clamp(2, 8) as u16,
                n => n,
            },
            max_background: a.fuse_max_background,
        }
    }
}

/// Everything `pailfs mount` needs, validated.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub source: Source,
    /// The connection's label, when mounted by label.
    pub label: Option<String>,
    pub mountpoint: PathBuf,
    pub s3: S3Settings,
    /// `--read-write`: refuse read-only credentials instead of mounting read-only.
    pub explicit_rw: bool,
    pub fs: FsConfig,
    /// The cache root (`--cache-dir` or the default); the mount's own directory is `fs.dir`.
    pub cache_root: PathBuf,
    /// The persistent attribute cache's bound in bytes (`--attr-cache-size`; 0: off).
    pub attr_cache_size: u64,
    pub allow_other: bool,
    /// FUSE's allow_root (also implied by `auto_unmount` without `allow_other`).
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub foreground: bool,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub kernel_readahead_kb: u32,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub tuning: Tuning,
}

impl MountConfig {
    pub fn from_args(a: &MountArgs) -> Result<MountConfig, CliError> {
        let resolved = resolve_source(&a.source)?;
        let conn = resolved.connection.as_ref().map(|(_, c)| c);
        let mut source = resolved.source.clone();
        if let Some(p) = &a.prefix {
            source.prefix.push_str(
                &normalize_prefix(p).map_err(|e| CliError::Invalid(format!("--prefix: {e}")))?,
            );
        }
        let mountpoint = check_mountpoint(&a.mountpoint)?;
        let s3 = s3_settings(conn, &a.s3, &source.bucket)?;
        let cache_root = a.cache.clone().or(a.cache_dir.clone());
        let cache_root = cache_root.unwrap_or_else(default_cache_dir);
        let cache_root = std::path::absolute(&cache_root)
            .map_err(|e| CliError::failed(format!("--cache-dir {}", cache_root.display()), e))?;
        let dir = MountDir::of(&cache_root, &identity(&s3, &source, &mountpoint));
        let mut fs = fs_config(a, conn, FsConfig::new(&source.prefix, dir))?;
        fs.disk_cache_size = disk_cache_size(a, &cache_root)?;
        if s3.anonymous {
            if a.read_write {
                return Err(CliError::Invalid(
                    "--no-sign-request mounts read-only (nobody may write without credentials); drop --read-write".into(),
                ));
            }
            fs.read_only = true;
        }
        Ok(MountConfig {
            source,
            label: resolved.connection.map(|(l, _)| l),
            mountpoint,
            s3,
            explicit_rw: a.read_write,
            fs,
            cache_root,
            attr_cache_size: attr_cache_size(a)?,
            allow_other: a.allow_other,
            allow_root: a.allow_root || a.auto_unmount && !a.allow_other,
            auto_unmount: a.auto_unmount,
            foreground: a.foreground,
            log_level: if a.debug {
                "debug".into()
            } else {
                a.log_level.clone()
            },
            log_file: a.log_file.clone(),
            kernel_readahead_kb: a.kernel_readahead_kb,
            metrics_listen: a.metrics_listen,
            tuning: Tuning::from_args(a),
        })
    }
}

/// The filesystem's settings from the mount's flags and the connection `conn`, over `fs`
/// (the defaults for the mount's prefix and directory).
fn fs_config(
    a: &MountArgs,
    conn: Option<&Connection>,
    mut fs: FsConfig,
) -> Result<FsConfig, CliError> {
    let v = a.negative_metadata_ttl;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(CliError::Invalid(format!(
            "--negative-metadata-ttl {v} must be between 0 and 86400 seconds"
        )));
    }
    if a.part_size.0 < crate::store::MIN_PART_SIZE {
        return Err("--part-size must be at least 5M (S3's smallest part)".into());
    }
    if a.memory_limit.0 < 64 << 20 {
        return Err("--memory-limit must be at least 64M".into());
    }
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    fs.defaults = Defaults {
        uid: a.uid.unwrap_or(uid),
        gid: a.gid.unwrap_or(gid),
        file_mode: a.file_mode.0,
        dir_mode: a.dir_mode.0,
        keep_setid: a.keep_setuid_bits,
        stored_owners: !a.ignore_stored_owners,
    };
    fs.read_only = a.read_only || conn.is_some_and(|c| c.read_only) && !a.read_write;
    fs.metadata_ttl = Duration::from_secs_f64(a.metadata_ttl.0);
    fs.negative_ttl = Duration::from_secs_f64(a.negative_metadata_ttl);
    if !(0.0..=86_400.0).contains(&a.open_ttl) {
        return Err(CliError::Invalid(format!(
            "--open-ttl {} must be between 0 and 86400 seconds",
            a.open_ttl
        )));
    }
    fs.open_ttl = Duration::from_secs_f64(a.open_ttl);
    fs.max_spool_bytes = a.max_spool_size.0;
    fs.part_size = a.part_size.0;
    fs.upload_concurrency = a.upload_concurrency.clamp(1, 64);
    fs.memory_limit = a.memory_limit.0;
    fs.fast_listing = a.fast_listing;
    fs.case_insensitive = a.case_insensitive || conn.is_some_and(|c| c.case_insensitive);
    fs.case_collision = a.case_collision;
    fs.max_rename_objects = a.max_rename_objects;
    fs.conflicts.mode = a.on_conflict;
    if let Some(h) = &a.host_name {
        if !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(CliError::Invalid(format!(
                "--host-name {h:?} may hold only ASCII letters, digits, '.', '_' and '-'"
            )));
        }
        fs.conflicts.host = h.clone();
    }
    Ok(fs)
}

impl MountConfig {
    /// What the mount's directory in the cache is named for.
    pub fn identity(&self) -> Identity<'_> {
        identity(&self.s3, &self.source, &self.mountpoint)
    }

    /// Where the bucket's attribute cache lives (shared by its mounts under this cache root).
    pub fn attr_cache_path(&self) -> PathBuf {
        let id = self.identity();
        crate::cache::attrs::path_of(&self.cache_root, id.endpoint, id.bucket)
    }
}

/// The attribute cache's default bound: about 250,000 objects.
pub const DEFAULT_ATTR_CACHE_SIZE: u64 = 64 << 20;

fn attr_cache_size(a: &MountArgs) -> Result<u64, CliError> {
    let n = a.attr_cache_size.0;
    if n > 0 && n < crate::cache::attrs::MIN_CAP {
        return Err(CliError::Invalid(format!(
            "--attr-cache-size {n}: too small to hold anything; give at least 256K, or 0 to turn it off"
        )));
    }
    Ok(n)
}

/// The on-disk block cache's cap: `--disk-cache-size`, or mount-s3's `--max-cache-size` (MiB
/// when no unit is given), or with mount-s3's `--cache DIR` alone 5% of the space free there.
fn disk_cache_size(a: &MountArgs, cache_root: &Path) -> Result<u64, CliError> {
    if let Some(m) = &a.max_cache_size {
        let bytes = match m.parse::<u64>() {
            Ok(mib) => mib << 20,
            Err(_) => parse_size(m).map_err(|e| e.within("--max-cache-size"))?,
        };
        return Ok(bytes);
    }
    if a.cache.is_none() || a.disk_cache_size.0 > 0 {
        return Ok(a.disk_cache_size.0);
    }
    let existing = cache_root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|_| CliError::Invalid(format!("--cache {}: not a path", cache_root.display())))?;
    // SAFETY: statvfs fills the struct it is given; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CliError::failed(
            format!("cannot measure the space free in {}", existing.display()),
            e,
        ));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64 / 20)
}

/// What names a mount's directory in the cache: the endpoint, bucket, prefix and mountpoint.
fn identity<'a>(s3: &'a S3Settings, source: &'a Source, mountpoint: &'a Path) -> Identity<'a> {
    Identity {
        endpoint: s3.endpoint_url.as_deref().unwrap_or_default(),
        bucket: &source.bucket,
        prefix: &source.prefix,
        mountpoint,
    }
}

/// Checks that `p` can be mounted on and returns it absolute.
pub fn check_mountpoint(p: &Path) -> Result<PathBuf, CliError> {
    let shown = p.display();
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(CliError::Invalid(format!(
                "mountpoint {shown} is a dead FUSE mount; clear it with: fusermount3 -u {shown}"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::Invalid(format!(
                "mountpoint {shown} does not exist; create it with: mkdir -p {shown}"
            )));
        }
        Err(e) => {
            return Err(CliError::Invalid(format!(
                "cannot use mountpoint {shown}: {e}"
            )));
        }
    };
    if !meta.is_dir() {
        return Err(CliError::Invalid(format!(
            "mountpoint {shown} is not a directory"
        )));
    }
    let abs = std::fs::canonicalize(p)
        .map_err(|e| CliError::failed(format!("cannot resolve mountpoint {shown}"), e))?;
    if is_mounted(&abs) {
        return Err(CliError::Invalid(format!(
            "{} is already a mount point; unmount it first (umount {} or fusermount3 -u {})",
            abs.display(),
            abs.display(),
            abs.display()
        )));
    }
    Ok(abs)
}

/// True when `/proc/self/mountinfo` lists `abs` as a mount point.
pub fn is_mounted(abs: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = abs.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_and_sse_c_exclude_each_other_even_when_one_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, [1u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let flags = crate::cli::RequestArgs {
            sse_c_key_file: Some(key),
            ..Default::default()
        };
        let saved = crate::cli::RequestArgs {
            sse: Some("AES256".into()),
            ..Default::default()
        };
        let e = request_options(&flags.over(Some(&saved))).unwrap_err();
        assert!(e.to_string().contains("exclude each other"), "{e}");
        assert!(request_options(&flags).is_ok());
    }

    #[test]
    fn sources() {
        let s = Source::parse("my-bucket").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("my-bucket", ""));
        let s = Source::parse("my-bucket:photos/2024").unwrap();
        assert_eq!(s.prefix, "photos/2024/");
        let s = Source::parse("s3://my-bucket/photos/2024/").unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("my-bucket", "photos/2024/")
        );
        assert!(Source::parse("My_Bucket!").is_err());
        assert!(Source::parse("b").is_err());
        assert!(Source::parse("bucket:a//b").is_err());
    }

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert!(parse_mode("999").is_err());
        // The help text shows defaults the way they are typed, and they parse back.
        for s in ["0", "4K", "8M", "256M", "16G", "1T"] {
            assert_eq!(s.parse::<Size>().unwrap().to_string(), s);
        }
        assert_eq!(Size(1536).to_string(), "1536");
        assert_eq!("0755".parse::<Mode>().unwrap().to_string(), "755");
    }

    /// A mount-s3 command line means what it means to mount-s3.
    #[test]
    fn mount_s3_flags_mean_what_they_mean_there() {
        use clap::Parser;
        let mp = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "pailfs",
                "mount",
                "some-bucket",
                mp.path().to_str().unwrap(),
            ];
            argv.extend(extra);
            let crate::cli::Command::Mount(a) = crate::cli::Cli::parse_from(argv).command else {
                unreachable!("a mount command")
            };
            MountConfig::from_args(&a).unwrap()
        };
        let c = cache.path().to_str().unwrap();
        let cfg = parse(&[
            "--prefix",
            "logs/2024",
            "--cache",
            c,
            "--max-cache-size",
            "64",
            "--metadata-ttl",
            "indefinite",
            "--max-threads",
            "3",
            "--debug",
            "--allow-delete",
            "--allow-overwrite",
            "--auto-unmount",
            "--max-spool-size",
            "2G",
        ]);
        assert_eq!(cfg.source.prefix, "logs/2024/");
        assert_eq!(cfg.cache_root, cache.path());
        assert_eq!(cfg.fs.disk_cache_size, 64 << 20);
        assert_eq!(cfg.fs.max_spool_bytes, 2 << 30);
        assert!(cfg.fs.metadata_ttl.as_secs_f64() >= INDEFINITE_TTL_SECS);
        assert_eq!(cfg.tuning.fuse_threads, 3);
        assert_eq!(cfg.log_level, "debug");
        assert!(cfg.auto_unmount && cfg.allow_root && !cfg.allow_other);
        // --cache alone turns the disk cache on; minimal asks S3 every time.
        let cfg = parse(&["--cache", c, "--metadata-ttl", "minimal"]);
        assert!(cfg.fs.disk_cache_size > 0);
        assert_eq!(cfg.fs.metadata_ttl, Duration::ZERO);
        let cfg = parse(&["--max-cache-size", "1G"]);
        assert_eq!(cfg.fs.disk_cache_size, 1 << 30);
        assert!("forever".parse::<Ttl>().is_err() && "90000".parse::<Ttl>().is_err());
    }

    /// The attribute cache is on by default, under the cache root, per bucket; `0` turns it
    /// off; a bound too small to hold anything is refused with what to give instead.
    #[test]
    fn attr_cache_sizes() {
        use clap::Parser;
        let mp = tempfile::tempdir().unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["pailfs", "mount", "bkt", mp.path().to_str().unwrap()];
            argv.extend(extra);
            let crate::cli::Command::Mount(a) = crate::cli::Cli::parse_from(argv).command else {
                unreachable!("a mount command")
            };
            MountConfig::from_args(&a)
        };
        let cfg = parse(&["--cache-dir", "/c"]).unwrap();
        assert_eq!(cfg.attr_cache_size, DEFAULT_ATTR_CACHE_SIZE);
        let path = cfg.attr_cache_path();
        assert!(
            path.to_str().unwrap().starts_with("/c/attrs/bkt-"),
            "{path:?}"
        );
        assert_eq!(
            parse(&["--attr-cache-size", "0"]).unwrap().attr_cache_size,
            0
        );
        assert_eq!(
            parse(&["--attr-cache-size", "1G"]).unwrap().attr_cache_size,
            1 << 30
        );
        let err = parse(&["--attr-cache-size", "4K"]).unwrap_err().to_string();
        assert!(err.contains("at least 256K, or 0 to turn it off"), "{err}");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn mountpoint_errors_say_what_to_do() {
        let e = check_mountpoint(Path::new("/no/such/dir")).unwrap_err();
        assert!(
            e.to_string().contains("does not exist") && e.to_string().contains("mkdir -p"),
            "{e}"
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = check_mountpoint(f.path()).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(is_mounted(Path::new("/proc")));
        let e = check_mountpoint(Path::new("/proc")).unwrap_err();
        assert!(e.to_string().contains("already a mount point"), "{e}");
    }
}
