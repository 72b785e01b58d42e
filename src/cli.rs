//! The command line, as clap types only. Nothing else sees these: [`crate::config`] turns them
//! into validated settings before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Mode, Size, Ttl};
use crate::fs::case::CaseCollision;
use crate::fs::conflict::OnConflict;
use crate::fs::{
    self,
    attr::{DEFAULT_DIR_MODE, DEFAULT_FILE_MODE},
};

/// `pailfs --version`: the version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PAILFS_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "pailfs",
    version = VERSION,
    about = "Mount an S3 bucket (or any S3-compatible store) as a POSIX directory",
    long_about = "Mount an S3 bucket (or any S3-compatible store) as a POSIX directory, so that cp, mv, \
rsync, tar, find, git, sqlite3 and other unmodified programs work on it.\n\n\
Mounts also work through mount(8) and /etc/fstab with the type fuse.pailfs, e.g. the fstab line \
`LABEL /mnt/x fuse.pailfs _netdev,allow_other,noauto,x-systemd.automount 0 0`: every \
`pailfs mount --flag value` has the -o spelling `flag=value` (underscores or dashes). The \
systemd unit pailfs@LABEL mounts the connection LABEL at /mnt/pailfs/LABEL."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the mount variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a bucket, the keys under a prefix, or a saved connection, at a directory.
    Mount(MountArgs),
    /// Save, list, show, remove and test named connections.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Check which S3 permissions the credentials have, and print the minimal IAM policy.
    Check(CheckArgs),
    /// Report keys that would collide on a case-insensitive file system (exit 1 if any).
    Collisions(CollisionsArgs),
    /// Report what a mount cannot show or has left behind: unreachable keys, unfinished
    /// multipart uploads, data kept after a crash or a failed upload (exit 1 if any).
    Doctor(DoctorArgs),
    /// Show a running mount's statistics: requests, retries, errors, bytes, cache, uploads.
    Stats(StatsArgs),
    /// List one level of a bucket or prefix as S3 lists it (what another S3 client sees).
    Ls(LsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write the man pages (pailfs.1 and one per command) into a directory.
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// A connection LABEL, or BUCKET[:PREFIX].
    pub source: String,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Where the bucket is mounted.
    pub mountpoint: PathBuf,
    /// Print the Prometheus text format instead of a summary.
    #[arg(long)]
    pub prometheus: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManpagesArgs {
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// A connection LABEL, or BUCKET[:PREFIX].
    pub source: String,
    #[command(flatten)]
    pub s3: S3Args,
    /// The cache directory the mounts use (as given to `pailfs mount --cache-dir`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CollisionsArgs {
    /// A connection LABEL, or BUCKET[:PREFIX].
    pub source: String,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also report names that differ only in Unicode normalization (NFC and NFD).
    #[arg(long)]
    pub normalization: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConnectionCommand {
    /// Save a connection under LABEL. The secret key is read from a prompt (without echo),
    /// from standard input (--secret-stdin) or from an environment variable (--secret-env),
    /// never from the command line.
    Add(Box<ConnectionAddArgs>),
    /// List saved connections.
    List(SystemArg),
    /// Show one connection, with its secret masked.
    Show(LabelArg),
    /// Remove a connection.
    Remove(LabelArg),
    /// Check the connection's permissions (same as `pailfs check LABEL`).
    Test(TestArgs),
}

#[derive(Args, Debug)]
pub struct SystemArg {
    /// Use the system-wide file /etc/pailfs/connections.toml (for fstab and systemd mounts).
    #[arg(long)]
    pub system: bool,
}

#[derive(Args, Debug)]
pub struct LabelArg {
    pub label: String,
    #[command(flatten)]
    pub system: SystemArg,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    pub label: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ConnectionAddArgs {
    /// A name for this connection: letters, digits, '.', '-', '_'.
    pub label: String,
    #[arg(long)]
    pub bucket: String,
    #[arg(long)]
    pub region: Option<String>,
    /// S3-compatible endpoint, e.g. https://minio.example.org.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Use path-style addressing (ENDPOINT/BUCKET).
    #[arg(long)]
    pub path_style: bool,
    /// The part of the bucket the credentials are restricted to; it becomes the mount's root.
    #[arg(long, value_name = "PATH")]
    pub subfolder: Option<String>,
    /// Mount read-only and check for read-only permissions only.
    #[arg(long)]
    pub read_only: bool,
    /// Match names ignoring case when mounted.
    #[arg(long)]
    pub case_insensitive: bool,
    /// Take credentials from this AWS profile.
    #[arg(long, value_name = "NAME", conflicts_with = "access_key_id")]
    pub profile: Option<String>,
    /// Store this access key id (the secret is asked for separately).
    #[arg(long, value_name = "ID")]
    pub access_key_id: Option<String>,
    /// Read the secret key from standard input (one line).
    #[arg(long, requires = "access_key_id", conflicts_with = "secret_env")]
    pub secret_stdin: bool,
    /// Read the secret key from this environment variable.
    #[arg(long, value_name = "VAR", requires = "access_key_id")]
    pub secret_env: Option<String>,
    /// Temporary keys: read their session token from this environment variable.
    #[arg(long, value_name = "VAR", requires = "access_key_id")]
    pub session_token_env: Option<String>,
    /// Take credentials from this command's output (AWS's `credential_process` JSON).
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["access_key_id", "profile"])]
    pub credential_process: Option<String>,
    /// Encryption, storage class, checksums, payer, owner or anonymous access, saved with the
    /// connection (flags given at mount win).
    #[command(flatten)]
    pub requests: RequestArgs,
    /// Replace an existing connection with the same label.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub system: SystemArg,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A connection LABEL, or BUCKET[:PREFIX] (the prefix is treated as the subfolder the
    /// credentials are restricted to).
    pub source: String,
    #[command(flatten)]
    pub s3: S3Args,
    /// The credentials are restricted to this subfolder: probe there, not at the root.
    #[arg(long, value_name = "PATH")]
    pub subfolder: Option<String>,
    /// Only read access is needed.
    #[arg(long)]
    pub read_only: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the minimal policy as a bucket policy whose Principal is these credentials'
    /// identity (found with STS GetCallerIdentity), instead of a policy for the IAM user.
    #[arg(long)]
    pub bucket_policy: bool,
}

/// Where the bucket is and how to reach it.
#[derive(Args, Debug, Clone, Default)]
pub struct S3Args {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:3900 (default: the connection's, then
    /// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or the profile's endpoint_url, unless
    /// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true; then AWS).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Region of the bucket (default: AWS_REGION or the profile's region).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET instead of BUCKET.ENDPOINT (automatic for IP
    /// addresses and localhost).
    #[arg(long)]
    pub force_path_style: bool,
    /// AWS profile from ~/.aws/config and ~/.aws/credentials (SSO included).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Keys from an s3fs password file: `ACCESS_KEY_ID:SECRET` lines, or
    /// `BUCKET:ACCESS_KEY_ID:SECRET` for one bucket (mode 600, as s3fs wants it).
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    pub passwd_file: Option<PathBuf>,
    /// How objects are written and requests made (these can be saved in a connection).
    #[command(flatten)]
    pub requests: RequestArgs,
    /// Trust the certificate authorities in this PEM file (beside the system's) for an HTTPS
    /// endpoint (default: AWS_CA_BUNDLE, as the AWS CLI reads it).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Attempts per S3 request, retries included, with exponential backoff and jitter.
    #[arg(long, value_name = "N", default_value_t = crate::store::client::DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// How long one attempt of one request may take (the whole answer of a GET), in
    /// seconds: a server that stops answering fails an operation after about
    /// max-attempts x this.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
}

/// How objects are written and requests made: flags of every command that talks to S3, and
/// what a saved connection can store (`[connections.LABEL.requests]`); flags win over it.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestArgs {
    /// Send unsigned requests and look for no credentials: a public bucket, mounted read-only.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_sign_request: bool,
    /// Server-side encryption of every object pailfs writes: AES256, aws:kms or aws:kms:dsse.
    #[arg(long, value_name = "KIND")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
    /// The KMS key for --sse aws:kms or aws:kms:dsse (id, ARN or alias; default: S3's key).
    #[arg(long, value_name = "KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
    /// S3 Bucket Keys with --sse aws:kms (fewer KMS requests).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bucket_key: bool,
    /// SSE-C: encrypt every object written, and read every object, with the 32-byte AES-256
    /// key in FILE (raw or base64, mode 600); objects written with another key cannot be read.
    #[arg(long, value_name = "FILE", conflicts_with = "sse")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_c_key_file: Option<PathBuf>,
    /// The checksum S3 checks on every upload (PUTs and parts): with one, over HTTPS or to a
    /// loopback address, the payload goes unsigned (no SHA-256 pass over every byte). A server
    /// that does not take it is found at mount, which falls back to the payload hash.
    /// [default: crc32c]
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_checksums: Option<crate::store::checksums::UploadChecksums>,
    /// Storage class of every object pailfs writes (STANDARD_IA, INTELLIGENT_TIERING, ...).
    #[arg(long, value_name = "CLASS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The requester pays for requests and transfer (requester-pays buckets).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requester_pays: bool,
    /// Work on the bucket only if this AWS account (12 digits) owns it.
    #[arg(long, value_name = "ACCOUNT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bucket_owner: Option<String>,
}

impl RequestArgs {
    /// These flags over what a connection saved: a flag given wins, a switch given turns on.
    pub fn over(&self, saved: Option<&RequestArgs>) -> RequestArgs {
        let Some(b) = saved else {
            return self.clone();
        };
        RequestArgs {
            no_sign_request: self.no_sign_request || b.no_sign_request,
            sse: self.sse.clone().or(b.sse.clone()),
            sse_kms_key_id: self.sse_kms_key_id.clone().or(b.sse_kms_key_id.clone()),
            bucket_key: self.bucket_key || b.bucket_key,
            sse_c_key_file: self.sse_c_key_file.clone().or(b.sse_c_key_file.clone()),
            upload_checksums: self.upload_checksums.or(b.upload_checksums),
            storage_class: self.storage_class.clone().or(b.storage_class.clone()),
            requester_pays: self.requester_pays || b.requester_pays,
            expected_bucket_owner: self
                .expected_bucket_owner
                .clone()
                .or(b.expected_bucket_owner.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == RequestArgs::default()
    }
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// A saved connection's LABEL (LABEL:PATH for a path under its subfolder), or BUCKET,
    /// BUCKET:PREFIX or s3://BUCKET/PREFIX (always a bucket).
    pub source: String,
    /// An existing, empty directory to mount on.
    pub mountpoint: PathBuf,

    #[command(flatten)]
    pub s3: S3Args,

    /// Refuse every change (EROFS).
    #[arg(long, conflicts_with = "read_write")]
    pub read_only: bool,
    /// Insist on a writable mount: fail if the credentials can only read (without it, such
    /// credentials give a read-only mount and a notice).
    #[arg(long)]
    pub read_write: bool,
    /// Owner of files without stored attributes (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of files without stored attributes (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permissions of files without stored attributes, in octal.
    #[arg(long, value_name = "OCTAL", default_value_t = Mode(DEFAULT_FILE_MODE))]
    pub file_mode: Mode,
    /// Permissions of directories without stored attributes, in octal.
    #[arg(long, value_name = "OCTAL", default_value_t = Mode(DEFAULT_DIR_MODE))]
    pub dir_mode: Mode,
    /// Let other users use the mount (the kernel still checks permissions).
    #[arg(long)]
    pub allow_other: bool,
    /// Stay in the foreground instead of returning once the mount is live.
    #[arg(short, long)]
    pub foreground: bool,

    /// Match names ignoring case (Unicode case folding), keeping the case they were written in.
    #[arg(long)]
    pub case_insensitive: bool,
    /// With --case-insensitive: `resolve` (a name differing only in case opens the existing
    /// file) or `error` (creating such a name fails with EEXIST).
    #[arg(long, value_name = "MODE", default_value_t = CaseCollision::default())]
    pub case_collision: CaseCollision,

    /// When a file changed in S3 since this mount read it (another host wrote it): `fail`
    /// (close and fsync fail with ESTALE, the data is kept in the cache's failed/),
    /// `keep-both` (this version is stored as NAME.conflict-HOST-TIME beside the winner) or
    /// `overwrite` (no check: the last close wins).
    #[arg(long, value_name = "MODE", default_value_t = OnConflict::default())]
    pub on_conflict: OnConflict,
    /// The name this host stores with every file it uploads (object metadata `pailfs-host`)
    /// and puts in conflict copies' names [default: the machine's host name; "" stores none].
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,

    /// Show setuid and setgid bits stored in objects' metadata. Off by default: anyone who
    /// can write to the bucket writes that metadata, and `cp -a` or `rsync -a` out of the
    /// mount as root would make real setuid files of it.
    #[arg(long)]
    pub keep_setuid_bits: bool,
    /// Show every object as owned by --uid and --gid, whatever owner its metadata names (as
    /// mountpoint-s3 always does); chown still stores owners for other tools.
    #[arg(long)]
    pub ignore_stored_owners: bool,

    /// Take attributes from listings: `ls -l` costs no request per entry, but objects not
    /// looked at yet show the default owner and modes and their S3 date instead of what is
    /// stored in their metadata (chmod, chown, touch from any tool).
    #[arg(long)]
    pub fast_listing: bool,

    /// Seconds attributes, names and directory listings are trusted without asking S3;
    /// `minimal` (0: ask every time) and `indefinite` (never expire) as in mount-s3.
    #[arg(long, value_name = "SECONDS", default_value_t = Ttl(fs::DEFAULT_METADATA_TTL_SECS as f64))]
    pub metadata_ttl: Ttl,
    /// Seconds "no such file" is trusted (at most --metadata-ttl).
    #[arg(long, value_name = "SECONDS", default_value_t = fs::DEFAULT_NEGATIVE_TTL_MS as f64 / 1000.0)]
    pub negative_metadata_ttl: f64,
    /// Seconds what S3 said about a file may be old when open() picks the version it reads:
    /// 0 (every open asks S3: after a close on another host returned, an open here reads it),
    /// or up to --metadata-ttl, saving a HEAD per open where one host writes.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub open_ttl: f64,
    /// Directory for spool files of open files (default: $XDG_CACHE_HOME/pailfs, or
    /// /var/cache/pailfs for root).
    #[arg(long, value_name = "DIR", conflicts_with = "cache")]
    pub cache_dir: Option<PathBuf>,
    /// Most disk the write spool may use, e.g. 10G; writes wait for room, then fail with
    /// ENOSPC.
    #[arg(long, value_name = "SIZE", default_value_t = Size(fs::DEFAULT_MAX_SPOOL_BYTES))]
    pub max_spool_size: Size,
    /// Keep blocks read from S3 on disk too, in the cache directory, up to SIZE (e.g. 10G), so
    /// re-reads after eviction or a remount cost no GET; 0 (the default) turns it off.
    #[arg(long, value_name = "SIZE", default_value_t = Size(0), conflicts_with = "max_cache_size")]
    pub disk_cache_size: Size,
    /// Keep the stored attributes (mode, owner, times) of objects on disk under the cache
    /// directory, by ETag, up to SIZE (e.g. 64M), so `ls -l` needs no HEAD for an object seen
    /// before, also after a remount; shared by the mounts of one bucket; 0 turns it off.
    #[arg(long, value_name = "SIZE", default_value_t = Size(crate::config::DEFAULT_ATTR_CACHE_SIZE))]
    pub attr_cache_size: Size,
    /// mount-s3's `--cache DIR`: the cache directory is DIR and blocks read from S3 are kept
    /// on disk there (up to --max-cache-size, else 5% of the space free there).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// mount-s3's: the on-disk block cache's size in MiB (a unit may be given: 10G).
    #[arg(long, value_name = "MIB")]
    pub max_cache_size: Option<String>,
    /// mount-s3's: mount only the keys under this prefix of the bucket (added to SOURCE's).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Threads reading FUSE requests (mount-s3's flag; pailfs hands each request to its I/O
    /// runtime at once, so a few suffice).
    #[arg(long, value_name = "N", default_value_t = crate::config::DEFAULT_FUSE_THREADS,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_threads: u16,
    /// mount-s3's: log at debug level (as --log-level debug).
    #[arg(long)]
    pub debug: bool,
    /// Unmount when pailfs exits, even if it is killed (FUSE's auto_unmount; implies
    /// --allow-root unless --allow-other is given, as fusermount needs one of them).
    #[arg(long)]
    pub auto_unmount: bool,
    /// Let root use the mount too (FUSE's allow_root).
    #[arg(long, conflicts_with = "allow_other")]
    pub allow_root: bool,
    /// mount-s3's: pailfs always allows deleting files; accepted for mount-s3 command lines.
    #[arg(long)]
    pub allow_delete: bool,
    /// mount-s3's: pailfs always allows overwriting files; accepted for mount-s3 command lines.
    #[arg(long)]
    pub allow_overwrite: bool,
    /// Size of the first multipart parts (files up to this size are one PUT), e.g. 8M.
    #[arg(long, value_name = "SIZE", default_value_t = Size(fs::DEFAULT_PART_SIZE))]
    pub part_size: Size,
    /// Bound on the process's memory: cached blocks, read-ahead and uploads share what is left
    /// after 40M for the process itself, e.g. 256M (at least 64M).
    #[arg(long, value_name = "SIZE", default_value_t = Size(fs::DEFAULT_MEMORY_LIMIT))]
    pub memory_limit: Size,
    /// Kernel read-ahead for the mount in KiB (set through sysfs when running as root).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub kernel_readahead_kb: u32,
    /// Parts uploaded at once across the mount.
    #[arg(long, value_name = "N", default_value_t = fs::DEFAULT_UPLOAD_CONCURRENCY)]
    pub upload_concurrency: usize,
    /// Directories with more objects than this are not renamed (EPERM).
    #[arg(long, value_name = "N", default_value_t = fs::DEFAULT_MAX_RENAME_OBJECTS)]
    pub max_rename_objects: u64,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides it).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Write the log to this file (default: standard error in the foreground, syslog or the
    /// journal when running in the background).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Also serve statistics in Prometheus format over HTTP on this address, e.g.
    /// 127.0.0.1:9187 (`pailfs stats MOUNTPOINT` works without it).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Experiments only: tokio worker threads for S3 and spool I/O (0: one per core, 2 to 8).
    #[arg(long, hide = true, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub io_threads: u16,
    /// Experiments only: asynchronous requests the kernel keeps in flight (max_background).
    #[arg(long, hide = true, default_value_t = crate::config::DEFAULT_MAX_BACKGROUND,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub fuse_max_background: u16,
}
