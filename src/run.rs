//! The life of a mount: daemonize, check access, mount, serve, unmount on a signal.
//!
//! Without `--foreground`, `pailfs mount` forks before any thread exists; the child does all
//! the work and reports back through a pipe, so the command returns only once the mount is live
//! (exit 0) or with the child's one-line reason (exit 1). The first S3 request is a one-key LIST
//! of the mount's prefix with a hard time bound, so bad credentials, a missing bucket, a wrong
//! region or an unreachable endpoint are reported before anything is mounted.
//!
//! Each mount gets its own spool directory under the cache root, locked with `flock`, so two
//! pailfs processes never share one.

use crate::error::CliError;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::sync::atomic::AtomicU64;

use crate::cache::attrs::AttrCache;
use crate::cache_dir::MountDir;
use crate::config::MountConfig;
use crate::connections::check::WriteProbe;
use crate::diagnose::{Target, explain};
use crate::fs::Fs;
use crate::fs::conflict::OnConflict;
use crate::fuse::adapter::Adapter;
use crate::fuse::session::{MountSettings, mount};
use crate::store::aws::AwsStore;
use crate::store::journal::Journaled;
use crate::store::metered::{Metered, StoreStats};
use crate::store::remembered::Remembered;
use crate::store::{ListRequest, ObjectStore};

/// How long the pre-mount access check may take in all.
const CHECK_BOUND: Duration = Duration::from_secs(20);
/// How long the parent waits for the daemon's report.
const READY_BOUND: Duration = Duration::from_secs(60);

/// Mounts as configured; returns when the mount ends (foreground) or is live (daemon).
pub fn mount_command(cfg: MountConfig) -> Result<(), CliError> {
    let mut host = Host {
        pipe: None,
        on_signals: true,
    };
    if !cfg.foreground {
        host.pipe = Some(daemonize()?);
    }
    let result = prepare_process().and_then(|()| serve(&cfg, Aws, &mut host));
    if let (Err(e), Some(pipe)) = (&result, host.pipe.as_mut()) {
        let _ = writeln!(pipe, "ERR {}", e.to_string().replace('\n', " "));
    }
    result
}

/// What the process around a mount provides: the pipe to the parent waiting for the mount to
/// be live (a daemon), and whether SIGTERM and SIGINT stop the mount (the `pailfs` binary;
/// not a test that mounts in its own process).
pub struct Host {
    pub pipe: Option<File>,
    pub on_signals: bool,
}

/// Builds the store a mount serves, once the I/O runtime runs: the real one checks access
/// first (and may find the mount must be read-only); a test hands in a memory store.
pub trait StoreBuilder {
    type Store: ObjectStore;
    fn build(
        self,
        cfg: &MountConfig,
        attempts: Arc<AtomicU64>,
    ) -> impl Future<Output = Result<Built<Self::Store>, CliError>> + Send;
}

/// A store ready to serve, whether to mount it read-only, and what to tell the user.
pub struct Built<S> {
    pub store: S,
    pub read_only: bool,
    /// Whether the server checks conditional writes, when the mount found out.
    pub conditional_writes: Option<bool>,
    pub notices: Vec<String>,
}

/// S3 through aws-sdk-s3, after the access check (see [`prepare`]).
pub struct Aws;

impl StoreBuilder for Aws {
    type Store = AwsStore;
    async fn build(
        self,
        cfg: &MountConfig,
        attempts: Arc<AtomicU64>,
    ) -> Result<Built<AwsStore>, CliError> {
        prepare(cfg, attempts).await
    }
}

/// A store already made: tests mount the real FUSE filesystem over the memory store, with
/// failures injected through their own handle to it.
pub struct Ready<S>(pub S);

impl<S: ObjectStore> StoreBuilder for Ready<S> {
    type Store = S;
    async fn build(self, cfg: &MountConfig, _: Arc<AtomicU64>) -> Result<Built<S>, CliError> {
        Ok(Built {
            store: self.0,
            read_only: cfg.fs.read_only,
            conditional_writes: None,
            notices: Vec::new(),
        })
    }
}

/// Forks. The parent waits for the child's report and exits; the child gets the pipe.
fn daemonize() -> Result<File, CliError> {
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CliError::Mount(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    let (rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    match unsafe { libc::fork() } {
        -1 => Err(CliError::Mount(format!(
            "cannot fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(rd);
            unsafe { libc::setsid() };
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            Ok(wr)
        }
        _child => {
            drop(wr);
            std::process::exit(wait_for_report(rd));
        }
    }
}

/// The parent side: the exit status and message for the user.
fn wait_for_report(mut rd: File) -> i32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = rd.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let report = rx.recv_timeout(READY_BOUND).map(|s| {
        let mut last = String::new();
        for line in s.lines() {
            match line.strip_prefix("NOTE ") {
                Some(note) => eprintln!("pailfs: notice: {note}"),
                None => last = line.to_string(),
            }
        }
        last
    });
    match report {
        Ok(s) if s.starts_with("OK") => 0,
        Ok(s) if s.starts_with("ERR ") => {
            eprintln!("pailfs: {}", s[4..].trim());
            1
        }
        Ok(_) => {
            eprintln!(
                "pailfs: the mount process exited before the mount was live; run with --foreground to see why"
            );
            1
        }
        Err(_) => {
            eprintln!(
                "pailfs: the mount was not live after {} s; run with --foreground to see why",
                READY_BOUND.as_secs()
            );
            1
        }
    }
}

/// The mount's directory in the cache, private and locked for this process. A directory
/// named the way earlier versions named it is taken over, so its crash-recovery data is not
/// skipped. Returns the lock (held while the mount lives) and notices about repairs.
fn lock_mount_dir(cfg: &MountConfig) -> Result<(File, Vec<String>), CliError> {
    let mut notices: Vec<String> = crate::private::private_dir(&cfg.cache_root)?
        .into_iter()
        .collect();
    let dir = &cfg.fs.dir;
    let legacy = MountDir::legacy(&cfg.cache_root, &cfg.identity());
    if !dir.path().exists() && legacy.is_dir() {
        std::fs::rename(&legacy, dir.path()).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                legacy.display(),
                dir.path().display()
            )
        })?;
    }
    notices.extend(crate::private::private_dir(dir.path())?);
    let lock_path = dir.lock();
    let lock = crate::private::open_file(&lock_path)
        .map_err(|e| CliError::failed(format!("cannot open {}", lock_path.display()), e))?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(CliError::Mount(format!(
            "cache directory {} is in use by another pailfs process; use another --cache-dir",
            dir.path().display()
        )));
    }
    let _ = lock.set_len(0);
    let mut l = &lock;
    let _ = l.write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok((lock, notices))
}

/// Settings of the whole process, made once before a mount: /dev/fuse is usable, memory goes
/// back to the system, enough descriptors, private files.
fn prepare_process() -> Result<(), CliError> {
    check_fuse_device()?;
    keep_malloc_honest();
    raise_descriptor_limit();
    crate::private::private_umask();
    Ok(())
}

/// Makes freed data buffers go back to the system. glibc raises its mmap threshold each time a
/// large block is freed, after which 1-8 MiB buffers come from arenas that never shrink: the
/// process then keeps its peak forever and `--memory-limit` would not bound it. A fixed
/// threshold keeps every buffer from 256 KiB up in its own mapping, returned on free.
fn keep_malloc_honest() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Raises the soft limit on open descriptors to the hard one (often 1,024 against 524,288):
/// every open file, S3 connection and statistics client takes one, and running out makes S3
/// requests fail.
fn raise_descriptor_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(1 << 20);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                log::debug!(
                    "cannot raise the descriptor limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

fn check_fuse_device() -> Result<(), CliError> {
    match File::options().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "/dev/fuse does not exist: load the FUSE module (modprobe fuse) or, in a container, pass --device /dev/fuse"
                .into(),
        ),
        Err(e) => Err(CliError::Mount(format!(
            "cannot open /dev/fuse ({e}): run as a user allowed to use FUSE, or fix its permissions"
        ))),
    }
}

/// Serves a mount of `cfg` over the store `builder` makes, until it is unmounted.
pub fn serve<B: StoreBuilder>(
    cfg: &MountConfig,
    builder: B,
    host: &mut Host,
) -> Result<(), CliError> {
    let (_lock, dir_notices) = lock_mount_dir(cfg)?;
    let rt = io_runtime(cfg)?;
    let stats = Arc::new(StoreStats::default());
    if host.on_signals {
        rt.spawn(reopen_log_on_hangup());
    }
    let built = rt.block_on(builder.build(cfg, stats.attempts.clone()))?;
    let metrics_tcp = bind_metrics(&rt, cfg)?;
    let mut notices = built.notices;
    notices.extend(dir_notices);
    notices.extend(rt.block_on(clean_up_after_crash(&built.store, cfg)));
    let dir = &cfg.fs.dir;
    let store = Journaled::new(built.store, dir.uploads())
        .map_err(|e| CliError::failed(format!("cannot create {}", dir.uploads().display()), e))?;
    let store = Metered::new(store, stats.clone());
    let attrs = open_attr_cache(cfg, &mut notices);
    let store = Remembered::new(store, attrs.clone());
    tell(&notices, &mut host.pipe);
    let mut fs_config = cfg.fs.clone();
    fs_config.read_only = built.read_only;
    if let Some(checks) = built.conditional_writes {
        fs_config.conflicts.server_checks = checks;
    }
    let fs = Fs::new(store, fs_config).map_err(|e| e.to_string())?;
    let mut session = mount_fuse(cfg, &fs, rt.handle(), built.read_only)?;
    if let Some(mut pipe) = host.pipe.take() {
        let _ = pipe.write_all(b"OK\n");
    }
    match crate::fuse::notify::NotifyThread::spawn(session.notifier()) {
        Ok(n) => fs.set_kernel_cache(Box::new(n)),
        Err(e) => log::warn!("kernel cache notifications unavailable: {e}"),
    }
    let socket = serve_statistics(&rt, cfg, &fs, (&stats, attrs.clone()), metrics_tcp);
    sd_notify("READY=1");
    if host.on_signals {
        let unmounter = session.unmount_callable();
        rt.spawn(shut_down_on_signal(
            fs.clone(),
            unmounter,
            cfg.mountpoint.clone(),
        ));
    }
    let served = session.run();
    let _ = std::fs::remove_file(&socket);
    drop(fs);
    rt.shutdown_timeout(Duration::from_secs(5));
    // After the last upload of the shutdown, so what it stored is written too.
    if let Some(a) = &attrs {
        a.close();
    }
    served.map_err(|e| CliError::failed("the FUSE session ended with an error", e))
}

/// The tokio runtime for S3 requests and the core's work.
fn io_runtime(cfg: &MountConfig) -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.tuning.io_threads.into())
        .thread_name("pailfs-io")
        .enable_all()
        .build()
        .map_err(|e| CliError::failed("cannot start the I/O runtime", e))
}

/// Binds `--metrics-listen` before mounting, so a busy address fails the mount clearly.
fn bind_metrics(
    rt: &tokio::runtime::Runtime,
    cfg: &MountConfig,
) -> Result<Option<tokio::net::TcpListener>, CliError> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(None);
    };
    rt.block_on(tokio::net::TcpListener::bind(addr))
        .map(Some)
        .map_err(|e| CliError::failed(format!("cannot listen on {addr} for --metrics-listen"), e))
}

/// Logs each notice and shows it to the user: through the daemon's pipe, or on stderr.
fn tell(notices: &[String], pipe: &mut Option<File>) {
    for n in notices {
        log::warn!("{n}");
        match pipe.as_mut() {
            Some(pipe) => {
                let _ = writeln!(pipe, "NOTE {n}");
            }
            None => eprintln!("pailfs: notice: {n}"),
        }
    }
}

/// Mounts the filesystem on the mountpoint; the session serves once run.
fn mount_fuse<S: ObjectStore>(
    cfg: &MountConfig,
    fs: &Arc<Fs<S>>,
    rt: &tokio::runtime::Handle,
    read_only: bool,
) -> Result<fuser::Session<Adapter<S>>, CliError> {
    let adapter = Adapter::new(fs.clone(), rt.clone(), cfg.tuning.max_background);
    let settings = MountSettings {
        fsname: format!("pailfs:{}", cfg.source.display()),
        read_only,
        allow_other: cfg.allow_other,
        allow_root: cfg.allow_root,
        auto_unmount: cfg.auto_unmount,
        threads: cfg.tuning.fuse_threads.into(),
    };
    let session = mount(adapter, &cfg.mountpoint, &settings).map_err(|e| {
        CliError::failed(format!("cannot mount on {}", cfg.mountpoint.display()), e)
    })?;
    set_kernel_readahead(&cfg.mountpoint, cfg.kernel_readahead_kb);
    log::info!(
        "mounted s3://{} at {}",
        cfg.source.display(),
        cfg.mountpoint.display()
    );
    Ok(session)
}

/// Serves statistics on the mount's socket (and `--metrics-listen`); returns the socket path.
fn serve_statistics<S: ObjectStore>(
    rt: &tokio::runtime::Runtime,
    cfg: &MountConfig,
    fs: &Arc<Fs<S>>,
    (stats, attrs): (&Arc<StoreStats>, Option<Arc<AttrCache>>),
    tcp: Option<tokio::net::TcpListener>,
) -> PathBuf {
    let render: crate::metrics::Render = {
        let (fs, stats) = (fs.clone(), stats.clone());
        Arc::new(move || crate::metrics::render(&fs, &stats, attrs.as_deref()))
    };
    let socket = crate::metrics::socket_path(&cfg.mountpoint);
    {
        let (socket, render) = (socket.clone(), render.clone());
        rt.spawn(async move {
            if let Err(e) = crate::metrics::serve_unix(socket.clone(), render).await {
                log::warn!("statistics socket {} unavailable: {e}", socket.display());
            }
        });
    }
    if let Some(l) = tcp {
        rt.spawn(crate::metrics::serve_tcp(l, render));
    }
    socket
}

/// The bucket's attribute cache, unless `--attr-cache-size 0`; one that cannot be opened
/// leaves the mount without it, with a notice saying why.
fn open_attr_cache(cfg: &MountConfig, notices: &mut Vec<String>) -> Option<Arc<AttrCache>> {
    if cfg.attr_cache_size == 0 {
        return None;
    }
    match AttrCache::open(&cfg.attr_cache_path(), cfg.attr_cache_size) {
        Ok((c, notice)) => {
            notices.extend(notice);
            Some(c)
        }
        Err(e) => {
            notices.push(format!(
                "the attribute cache is off for this mount: {e}; every file's attributes are asked of S3"
            ));
            None
        }
    }
}

/// What an earlier pailfs with this cache directory left when it died: multipart uploads it
/// never finished (aborted now) and written data it never uploaded (rebuilt as local files).
async fn clean_up_after_crash<S: ObjectStore>(store: &S, cfg: &MountConfig) -> Vec<String> {
    let mut notices = Vec::new();
    let dir = &cfg.fs.dir;
    let left = crate::store::journal::abort_leftovers(store, &dir.uploads()).await;
    let failed: Vec<_> = left.iter().filter(|l| l.result.is_err()).collect();
    for l in &left {
        match &l.result {
            Ok(()) => log::info!(
                "aborted multipart upload {} of {:?} left by an earlier pailfs",
                l.upload_id,
                l.key
            ),
            Err(e) => log::warn!(
                "cannot abort multipart upload {} of {:?} left by an earlier pailfs: {e}",
                l.upload_id,
                l.key
            ),
        }
    }
    if left.len() > failed.len() {
        notices.push(format!(
            "aborted {} unfinished multipart upload(s) left by an earlier pailfs that stopped uncleanly",
            left.len() - failed.len()
        ));
    }
    if !failed.is_empty() {
        notices.push(format!(
            "{} unfinished multipart upload(s) left by an earlier pailfs could not be aborted (see the log); `pailfs doctor` lists them",
            failed.len()
        ));
    }
    let recovered_dir = &dir.recovered();
    let files =
        crate::fs::recovery::recover_spools(store, &dir.spool(), recovered_dir, &cfg.source.prefix)
            .await;
    if let Some(first) = files.first() {
        let dir = first
            .path
            .ancestors()
            .find(|p| p.parent() == Some(recovered_dir))
            .unwrap_or(recovered_dir);
        let incomplete = files.iter().filter(|f| !f.complete).count();
        notices.push(format!(
            "{} file(s) written before an earlier pailfs stopped uncleanly were never uploaded; they are in {}{} (list: RECOVERY.txt there; to store them: cp -a {}/. {}/)",
            files.len(),
            dir.display(),
            if incomplete > 0 { format!(", {incomplete} of them incomplete") } else { String::new() },
            dir.display(),
            cfg.mountpoint.display()
        ));
        for f in &files {
            log::warn!(
                "recovered {:?} into {} ({})",
                f.key,
                f.path.display(),
                f.note
            );
        }
    }
    notices
}

/// The fast part of the permission check: can we list (finding the region if the configured
/// one is wrong), and may we write? Returns the store, whether to mount read-only, and notices.
async fn prepare(
    cfg: &MountConfig,
    attempts: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Built<AwsStore>, CliError> {
    let mut s3 = cfg.s3.clone();
    s3.attempts = Some(attempts);
    let mut notices = Vec::new();
    let mut store = AwsStore::connect(&s3, &cfg.source.bucket).await;
    if let Err(e) = check_access(&store, cfg).await {
        match e {
            Access::Redirect(region) => {
                notices.push(format!(
                    "bucket {:?} is in region {region}, not {}; using {region} (pass --region {region} to skip this)",
                    cfg.source.bucket,
                    s3.region.as_deref().unwrap_or("the default")
                ));
                s3.region = Some(region);
                store = AwsStore::connect(&s3, &cfg.source.bucket).await;
                check_access(&store, cfg).await.map_err(Access::message)?;
            }
            other => return Err(CliError::Mount(other.message())),
        }
    }
    let probe = match cfg.fs.read_only {
        true => None,
        false => Some(probe_writes(&mut store, &s3, cfg, &mut notices).await?),
    };
    Ok(Built {
        store,
        read_only: cfg.fs.read_only || probe.is_some_and(|p| !p.writable),
        conditional_writes: probe.map(|p| p.conditional_writes),
        notices,
    })
}

/// The write probes of a read-write mount: may these credentials write (else the mount
/// falls back to read-only), does the server check conditional writes (else uploads are
/// checked by a HEAD, see `fs::conflict`), and does it take upload checksums. The
/// checksum probe (a multipart upload with one part, aborted) runs only where it is needed:
/// not on AWS itself, and not on a server that checks conditional writes (a current S3
/// implementation, which takes checksums too), so with the minimal policy, which has no
/// AbortMultipartUpload, a mount there leaves no upload behind.
async fn probe_writes(
    store: &mut AwsStore,
    s3: &crate::store::client::S3Settings,
    cfg: &MountConfig,
    notices: &mut Vec<String>,
) -> Result<WriteProbe, CliError> {
    let url = format!("s3://{}", cfg.source.display());
    let prefix = &cfg.source.prefix;
    let probe = match crate::connections::check::can_write(store, prefix).await {
        Ok(p) => p,
        Err(e) => {
            log::warn!("could not probe write access to {url} ({e}); mounting read-write");
            return Ok(WriteProbe {
                writable: true,
                conditional_writes: false,
            });
        }
    };
    if !probe.writable && cfg.explicit_rw {
        return Err(CliError::Mount(format!(
            "the credentials can only read {url} (writing was refused) and --read-write was given; drop it to mount read-only, or run `pailfs check` to see what is missing"
        )));
    }
    if !probe.writable {
        notices.push(format!(
            "the credentials can only read {url}: mounted read-only (run `pailfs check` for details; --read-only skips this probe)"
        ));
        return Ok(probe);
    }
    if !probe.conditional_writes && cfg.fs.conflicts.mode != OnConflict::Overwrite {
        notices.push(
            "the server does not check conditional writes (If-Match, If-None-Match): a HEAD before each upload checks that no other host changed the file, which leaves a window of one round trip (see docs/SEMANTICS.md, many hosts)".to_string(),
        );
    }
    // The configuration already resolved aws-config's endpoint (variables, profile) into it.
    let on_aws = s3.endpoint_url.is_none();
    if let Some(alg) = store.checksum().cloned()
        && !on_aws
        && !probe.conditional_writes
        && let Err(why) = crate::connections::check::checksums_taken(store, prefix).await
    {
        notices.push(format!(
            "the server does not take {alg} upload checksums ({why}): uploads are checked by the SigV4 payload hash instead (--upload-checksums off skips this probe)"
        ));
        store.checksums_off();
    }
    Ok(probe)
}

enum Access {
    Redirect(String),
    Failed(String),
}

impl Access {
    fn message(self) -> String {
        match self {
            Access::Redirect(r) => format!("the bucket is in region {r}; pass --region {r}"),
            Access::Failed(m) => m,
        }
    }
}

/// Lists one key under the prefix, bounded in time, and explains any failure.
async fn check_access(store: &AwsStore, cfg: &MountConfig) -> Result<(), Access> {
    let mut req = ListRequest::dir(&cfg.source.prefix);
    req.max_keys = 1;
    let target = Target {
        bucket: &cfg.source.bucket,
        prefix: &cfg.source.prefix,
        endpoint: cfg.s3.endpoint_url.as_deref(),
        region: cfg.s3.region.as_deref(),
    };
    match tokio::time::timeout(CHECK_BOUND, store.list(&req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(crate::store::StoreError::WrongRegion(Some(r)))) => Err(Access::Redirect(r)),
        Ok(Err(e)) => Err(Access::Failed(explain(&e, &target))),
        Err(_) => Err(Access::Failed(format!(
            "no answer from {} within {} s: check --endpoint-url and the network",
            target.endpoint.unwrap_or("AWS S3"),
            CHECK_BOUND.as_secs()
        ))),
    }
}

/// How long a stop (SIGTERM, SIGINT) waits for uploads in progress before unmounting.
pub const STOP_BOUND: Duration = Duration::from_secs(30);

/// On SIGTERM or SIGINT: lets uploads in progress (a `close()` or `fsync()` being served)
/// finish, for at most [`STOP_BOUND`]; keeps files still open with unsaved changes for the
/// next mount to rebuild (uploading them now would store half of what the application is
/// writing) and says which; then unmounts. If open files keep the mount busy, it is
/// detached and the process exits anyway, so a stop never hangs.
/// SIGHUP (logrotate, a closed terminal): the log file is reopened; the mount goes on.
async fn reopen_log_on_hangup() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match crate::logfile::reopen() {
            Some(msg) => log::info!("{msg}"),
            None => log::info!("SIGHUP: no log file to reopen; the mount goes on"),
        }
    }
}

async fn shut_down_on_signal<S: ObjectStore>(
    fs: Arc<Fs<S>>,
    mut unmounter: fuser::SessionUnmounter,
    mountpoint: PathBuf,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    sd_notify("STOPPING=1");
    log::info!(
        "signal received; stopping the mount on {}",
        mountpoint.display()
    );
    let deadline = tokio::time::Instant::now() + STOP_BOUND;
    while fs.uploads_running() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if fs.uploads_running() > 0 {
        log::warn!(
            "{} upload(s) still running after {} s; stopping anyway (their files are kept for the next mount)",
            fs.uploads_running(),
            STOP_BOUND.as_secs()
        );
    }
    let kept = fs.preserve_unsaved().await;
    for key in &kept {
        log::warn!(
            "{key:?} is open with changes not uploaded; kept in the cache directory, the next mount rebuilds it under recovered/"
        );
    }
    if let Err(e) = unmounter.unmount() {
        log::warn!(
            "unmount of {} failed ({e}); detaching it lazily",
            mountpoint.display()
        );
        lazy_unmount(&mountpoint);
        // Open files keep a lazily detached mount alive; do not wait for them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        log::info!("exiting with the mount detached");
        std::process::exit(0);
    }
}

/// Tells systemd (`Type=notify` units) about the mount's state; nothing without systemd.
fn sd_notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = addr.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&addr))
    };
    if let Err(e) = sent {
        log::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// The kernel reads ahead only 128 KiB for FUSE by default; sequential reads need much more
/// in flight. The setting lives in the mount's backing device info, writable by root. The
/// device number comes from /proc/self/mountinfo: a stat of the mountpoint would be answered
/// by this very process, which is not serving requests yet.
fn set_kernel_readahead(mountpoint: &Path, kb: u32) {
    let want = mountpoint.to_string_lossy();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Some(dev) = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[4] == want).then(|| f[2].to_string())
    }) else {
        return;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => log::debug!("kernel read-ahead set to {kb} KiB"),
        Err(e) => log::info!("kernel read-ahead stays at its default ({path}: {e})"),
    }
}

fn lazy_unmount(p: &Path) {
    if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}
