//! The argument form of `mount(8)` and `/etc/fstab`: `pailfs SOURCE MOUNTPOINT -o opt,opt`.
//!
//! `mount -t fuse.pailfs LABEL /mnt/x -o allow_other,ro` runs fuse3's `mount.fuse` helper,
//! which runs `pailfs LABEL /mnt/x -o allow_other,ro`. Rather than keep a second list of
//! options, every long flag of `pailfs mount` has an `-o` spelling derived from the command
//! line definition itself: `--memory-limit 512M` is `-o memory_limit=512M` (or
//! `memory-limit=512M`), `--allow-other` is `-o allow_other`. The generic options mount(8)
//! and fstab carry (`rw`, `nodev`, `_netdev`, `x-systemd.*`, ...) are accepted and ignored,
//! `ro` means `--read-only`, and anything else is an error naming the option.
//!
//! An fstab line written for s3fs works too: its options become the pailfs flags that mean
//! the same (`url` the endpoint, `endpoint` the region, `passwd_file`, `umask`, ...; see
//! [`s3fs`]). Options that only tune s3fs or libfuse change nothing important here: they are
//! accepted with a notice on standard error (a boot mount never fails for them), and those
//! whose meaning pailfs cannot give (an ACL other than private, a `use_sse=custom` without its
//! key file) are refused by name rather than silently lost.

use std::ffi::OsString;

/// Options of mount(8), fstab and systemd that concern the mount table or the kernel's VFS,
/// not pailfs; they are accepted and ignored.
const GENERIC: &[&str] = &[
    "rw",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "async",
    "sync",
    "dirsync",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "silent",
    "loud",
    // Always on: the kernel checks permissions.
    "default_permissions",
];

/// A command line after [`rewrite`]: the arguments, and one line for each option that was
/// accepted but changes nothing here (printed before the mount, so a boot log says it).
#[derive(Debug, Default)]
pub struct Rewritten {
    pub args: Vec<OsString>,
    pub notices: Vec<String>,
}

/// Rewrites `pailfs SOURCE MOUNTPOINT -o ...` into `pailfs mount SOURCE MOUNTPOINT --flags`,
/// and expands `-o` in `pailfs mount ...` the same way. Other command lines are unchanged.
pub fn rewrite(args: Vec<OsString>, cli: &clap::Command) -> Result<Rewritten, String> {
    let unchanged = |args| {
        Ok(Rewritten {
            args,
            notices: Vec::new(),
        })
    };
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return unchanged(args);
    };
    let Some(mount) = cli.find_subcommand("mount") else {
        return unchanged(args);
    };
    let helper_form = !first.starts_with('-') && cli.find_subcommand(first).is_none();
    if !helper_form && first != "mount" {
        return unchanged(args);
    }
    let mut out = vec![args[0].clone(), OsString::from("mount")];
    let mut notices = Vec::new();
    let rest = if helper_form { &args[1..] } else { &args[2..] };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let opts = match a.to_str() {
            Some("-o") => Some(
                it.next()
                    .ok_or("-o needs a list of options")?
                    .to_str()
                    .ok_or("mount options must be UTF-8")?
                    .to_string(),
            ),
            Some(s) if s.starts_with("-o") && !s.starts_with("--") => Some(s[2..].to_string()),
            _ => None,
        };
        match opts {
            Some(list) => {
                for opt in list.split(',') {
                    match translate(opt, mount)? {
                        Translated::Flags(f) => out.extend(f.into_iter().map(OsString::from)),
                        Translated::Ignored(why) => {
                            notices.push(format!("mount option {opt:?} ignored: {why}"))
                        }
                    }
                }
            }
            None => out.push(a.clone()),
        }
    }
    Ok(Rewritten { args: out, notices })
}

/// What one `-o` option became.
#[derive(Debug, PartialEq)]
enum Translated {
    /// `pailfs mount` flags (none for the options of mount(8) that concern the mount table).
    Flags(Vec<String>),
    /// Accepted, changing nothing here, for this reason.
    Ignored(&'static str),
}

/// One `-o` option as `pailfs mount` flags.
fn translate(opt: &str, mount: &clap::Command) -> Result<Translated, String> {
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (opt, None),
    };
    if name.is_empty() || GENERIC.contains(&name) || name.starts_with("x-") || name == "comment" {
        return Ok(Translated::Flags(Vec::new()));
    }
    if name == "ro" {
        return Ok(Translated::Flags(vec!["--read-only".into()]));
    }
    if FUSE_TUNING.contains(&name) {
        return Ok(Translated::Ignored(
            "a libfuse or kernel tuning option; pailfs sets its own FUSE options",
        ));
    }
    if let Some(t) = s3fs(name, value)? {
        return Ok(t);
    }
    let long = name.replace('_', "-");
    let arg = mount
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
        .ok_or_else(|| {
            format!(
                "unknown mount option {name:?}; every `pailfs mount --flag` works as `-o flag` (see pailfs mount --help)"
            )
        })?;
    let flag = format!("--{long}");
    match (arg.get_action().takes_values(), value) {
        (true, Some(v)) => Ok(Translated::Flags(vec![flag, v.to_string()])),
        (true, None) => Err(format!("mount option {name:?} needs a value ({name}=...)")),
        (false, None) => Ok(Translated::Flags(vec![flag])),
        (false, Some(_)) => Err(format!("mount option {name:?} takes no value")),
    }
}

/// Options of libfuse's high-level API and of older kernels that s3fs fstab lines carry
/// (pailfs chooses its FUSE options itself): accepted, with a notice.
const FUSE_TUNING: &[&str] = &[
    "kernel_cache",
    "auto_cache",
    "noauto_cache",
    "big_writes",
    "max_read",
    "max_write",
    "max_readahead",
    "max_background",
    "congestion_threshold",
    "async_read",
    "sync_read",
    "atomic_o_trunc",
    "splice_read",
    "splice_write",
    "splice_move",
    "no_splice_read",
    "no_splice_write",
    "no_splice_move",
    "attr_timeout",
    "entry_timeout",
    "negative_timeout",
    "ac_attr_timeout",
    "noforget",
    "remember",
    "use_ino",
    "readdir_ino",
    "direct_io",
    "hard_remove",
    "intr",
    "intr_signal",
    "fsname",
    "subtype",
    "blksize",
    "modules",
];

/// s3fs options that tune only s3fs itself (its caches, debugging, request details): dropped.
const S3FS_TUNING: &[&str] = &[
    "nonempty",
    "mp_umask",
    "iam_role",
    "enable_noobj_cache",
    "max_stat_cache_size",
    "stat_cache_interval_expire",
    "dbglevel",
    "curldbg",
    "complement_stat",
    "compat_dir",
    "notsup_compat_dir",
    "sigv2",
    "sigv4",
    "ensure_diskfree",
    "del_cache",
    "use_xattr",
    "enable_content_md5",
    "connect_timeout",
    "readwrite_timeout",
    "list_object_max_keys",
    "multireq_max",
    "singlepart_copy_limit",
    "max_dirty_data",
    "instance_name",
    "ssl_verify_hostname",
    "no_check_certificate",
    "cipher_suites",
    "nomultipart",
    "nomixupload",
    "streamupload",
    "max_thread_count",
    "multipart_copy_size",
    "nocopyapi",
    "norenameapi",
    "noxmlns",
    "nosscache",
    "fake_diropen",
    "tmpdir",
    "logfile",
    "mime",
    "use_wtf8",
    "disable_noobj_cache",
    "free_space_ratio",
    "check_cache_dir_exist",
    "update_parent_dir_stat",
    "no_time_stamp_msg",
    "newcache_conf",
    "ecs",
    "ibm_iam_auth",
    "ibm_iam_endpoint",
    "imdsv1only",
    "credlib",
    "credlib_opts",
    "set_check_cache_sigusr1",
    "dirmode_compat",
    "enable_unsigned_payload",
    "cache_size",
];

/// s3fs option `name` as pailfs flags; `None` when it is not one of s3fs's.
fn s3fs(name: &str, value: Option<&str>) -> Result<Option<Translated>, String> {
    if S3FS_TUNING.contains(&name) {
        return Ok(Some(Translated::Ignored(
            "it tunes s3fs itself; pailfs has its own caches, threads and request handling",
        )));
    }
    // Objects are private unless a bucket policy says otherwise; pailfs sets no ACL, so
    // `private` (s3fs's default) changes nothing and any other ACL cannot be given.
    if name == "default_acl" {
        return match value {
            None | Some("private") => Ok(Some(Translated::Ignored(
                "objects are private, as with default_acl=private",
            ))),
            Some(v) => Err(format!(
                "s3fs option \"default_acl={v}\" has no pailfs equivalent (pailfs sets no ACL: grant access with a bucket policy); remove it from the mount options"
            )),
        };
    }
    let flags = |f: Vec<String>| Ok(Some(Translated::Flags(f)));
    let plain = |flag: &str| -> Result<Option<Translated>, String> {
        let v = value.ok_or(format!("s3fs option {name:?} needs a value ({name}=...)"))?;
        flags(vec![flag.to_string(), v.to_string()])
    };
    let number = || -> Result<u64, String> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or(format!("s3fs option {name:?} needs a number ({name}=N)"))
    };
    match name {
        "use_path_request_style" => flags(vec!["--force-path-style".into()]),
        "requester_pays" => flags(vec!["--requester-pays".into()]),
        "public_bucket" if value.is_none_or(|v| v == "1") => {
            flags(vec!["--no-sign-request".into()])
        }
        // s3fs's default.
        "public_bucket" if value == Some("0") => flags(vec![]),
        "storage_class" => plain("--storage-class"),
        // s3fs's older spelling of storage_class=REDUCED_REDUNDANCY.
        "use_rrs" if value.is_none_or(|v| v == "1") => {
            flags(vec!["--storage-class".into(), "REDUCED_REDUNDANCY".into()])
        }
        "use_rrs" => Ok(Some(Translated::Ignored("use_rrs=0 is s3fs's default"))),
        "use_sse" => use_sse(value).map(|f| Some(Translated::Flags(f))),
        "url" => plain("--endpoint-url"),
        // s3fs's `endpoint` is the region.
        "endpoint" => plain("--region"),
        "passwd_file" => plain("--passwd-file"),
        "use_cache" => plain("--cache-dir"),
        "stat_cache_expire" => plain("--metadata-ttl"),
        "parallel_count" => plain("--upload-concurrency"),
        "multipart_size" => flags(vec!["--part-size".into(), format!("{}M", number()?)]),
        // s3fs retries this many times after the first attempt.
        "retries" => flags(vec!["--max-attempts".into(), (number()? + 1).to_string()]),
        "umask" => {
            let mask = value
                .and_then(|v| u16::from_str_radix(v.trim_start_matches("0o"), 8).ok())
                .filter(|m| *m <= 0o777)
                .ok_or("s3fs option \"umask\" needs an octal mask (umask=022)".to_string())?;
            flags(vec![
                "--file-mode".into(),
                format!("{:o}", 0o666 & !mask),
                "--dir-mode".into(),
                format!("{:o}", 0o777 & !mask),
            ])
        }
        _ => Ok(None),
    }
}

/// s3fs's `use_sse` (or `=1`) is SSE-S3; `kmsid` / `kmsid:KEY` is SSE-KMS; `custom:FILE` is
/// SSE-C with the keys in FILE.
fn use_sse(value: Option<&str>) -> Result<Vec<String>, String> {
    match value {
        None | Some("1") => Ok(vec!["--sse".into(), "AES256".into()]),
        Some("kmsid") | Some("k") => Ok(vec!["--sse".into(), "aws:kms".into()]),
        Some(v) if v.starts_with("kmsid:") || v.starts_with("k:") => {
            let key = v.split_once(':').map_or("", |(_, k)| k);
            Ok(vec![
                "--sse".into(),
                "aws:kms".into(),
                "--sse-kms-key-id".into(),
                key.into(),
            ])
        }
        Some(v) if v.starts_with("custom:") || v.starts_with("c:") => {
            let file = v.split_once(':').map_or("", |(_, f)| f);
            Ok(vec!["--sse-c-key-file".into(), file.into()])
        }
        Some(v) => Err(format!(
            "s3fs option \"use_sse={v}\" names no key file; write use_sse=custom:FILE (pailfs: --sse-c-key-file FILE)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        notices(args).map(|(args, _)| args)
    }

    fn notices(args: &[&str]) -> Result<(Vec<String>, Vec<String>), String> {
        let args = args.iter().map(OsString::from).collect();
        rewrite(args, &crate::cli::Cli::command()).map(|r| {
            let args = r.args.into_iter().map(|a| a.into_string().unwrap());
            (args.collect(), r.notices)
        })
    }

    #[test]
    fn the_helper_form_becomes_a_mount_command() {
        let got = run(&[
            "pailfs",
            "photos",
            "/mnt/p",
            "-o",
            "rw,nodev,nosuid,_netdev,allow_other,x-systemd.automount,memory_limit=512M,ro,metadata-ttl=2",
        ])
        .unwrap();
        assert_eq!(
            got,
            [
                "pailfs",
                "mount",
                "photos",
                "/mnt/p",
                "--allow-other",
                "--memory-limit",
                "512M",
                "--read-only",
                "--metadata-ttl",
                "2"
            ]
        );
        // The result parses as a mount command.
        let cli = crate::cli::Cli::try_parse_from(&got).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Mount(_)));
    }

    #[test]
    fn every_mount_flag_has_an_o_spelling() {
        let cli = crate::cli::Cli::command();
        let mount = cli.find_subcommand("mount").unwrap();
        for arg in mount.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let opt = if arg.get_action().takes_values() {
                format!("{}=1", long.replace('-', "_"))
            } else {
                long.replace('-', "_")
            };
            assert!(
                matches!(translate(&opt, mount), Ok(Translated::Flags(f)) if !f.is_empty()),
                "{opt}"
            );
        }
    }

    #[test]
    fn unknown_or_malformed_options_are_errors_naming_them() {
        let e = run(&["pailfs", "b", "/m", "-o", "allow_other,frobnicate"]).unwrap_err();
        assert!(e.contains("\"frobnicate\""), "{e}");
        let e = run(&["pailfs", "b", "/m", "-o", "memory_limit"]).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
        let e = run(&["pailfs", "b", "/m", "-o", "allow_other=yes"]).unwrap_err();
        assert!(e.contains("takes no value"), "{e}");
        assert!(run(&["pailfs", "b", "/m", "-o"]).is_err());
    }

    /// An fstab line written for s3fs mounts with pailfs: each s3fs option becomes the flag
    /// that means the same, options that change nothing here are dropped, and the ones whose
    /// meaning pailfs cannot give (ACLs, customer-provided keys) are refused by name.
    #[test]
    fn an_s3fs_fstab_line_means_the_same_here() {
        let got = run(&[
            "pailfs",
            "photos",
            "/mnt/p",
            "-o",
            "_netdev,allow_other,use_path_request_style,url=http://10.0.0.1:3900,endpoint=garage,\
             passwd_file=/etc/passwd-s3fs,nonempty,umask=027,use_cache=/var/cache/s3fs,retries=3,\
             multipart_size=16,parallel_count=4,stat_cache_expire=30,uid=1000,gid=1000,\
             dbglevel=info,mp_umask=022,enable_noobj_cache,use_xattr",
        ])
        .unwrap();
        let expected = "pailfs mount photos /mnt/p --allow-other --force-path-style \
             --endpoint-url http://10.0.0.1:3900 --region garage --passwd-file /etc/passwd-s3fs \
             --file-mode 640 --dir-mode 750 --cache-dir /var/cache/s3fs --max-attempts 4 \
             --part-size 16M --upload-concurrency 4 --metadata-ttl 30 --uid 1000 --gid 1000";
        assert_eq!(
            got.join(" "),
            expected.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        crate::cli::Cli::try_parse_from(&got).unwrap();
        let sse = run(&[
            "pailfs",
            "b",
            "/m",
            "-o",
            "use_sse=kmsid:alias/k,storage_class=STANDARD_IA,requester_pays,public_bucket=1",
        ])
        .unwrap();
        assert_eq!(
            sse[4..].join(" "),
            "--sse aws:kms --sse-kms-key-id alias/k --storage-class STANDARD_IA --requester-pays --no-sign-request"
        );
        let default = run(&["pailfs", "b", "/m", "-o", "public_bucket=0"]).unwrap();
        assert_eq!(default[4..].len(), 0, "{default:?}");
        let ssec = run(&["pailfs", "b", "/m", "-o", "use_sse=custom:/etc/sse-c.keys"]).unwrap();
        assert_eq!(ssec[4..].join(" "), "--sse-c-key-file /etc/sse-c.keys");
        for refused in ["use_sse=custom", "default_acl=public-read"] {
            let e = run(&["pailfs", "b", "/m", "-o", refused]).unwrap_err();
            assert!(
                e.contains("s3fs option") && e.contains(refused.split('=').next().unwrap()),
                "{e}"
            );
        }
    }

    /// What changes nothing here is accepted with one notice per option, so an fstab line
    /// full of s3fs and libfuse tuning still mounts at boot and its log says what was dropped.
    #[test]
    fn tuning_options_are_accepted_with_a_notice_each() {
        let (args, notes) = notices(&[
            "pailfs",
            "b",
            "/m",
            "-o",
            "allow_other,nomultipart,kernel_cache,big_writes,max_background=64,tmpdir=/tmp,\
             logfile=/var/log/s3fs.log,default_acl=private,nonempty,use_rrs",
        ])
        .unwrap();
        assert_eq!(
            args[4..].join(" "),
            "--allow-other --storage-class REDUCED_REDUNDANCY"
        );
        crate::cli::Cli::try_parse_from(&args).unwrap();
        for opt in [
            "nomultipart",
            "kernel_cache",
            "big_writes",
            "max_background=64",
            "tmpdir=/tmp",
            "logfile=/var/log/s3fs.log",
            "default_acl=private",
            "nonempty",
        ] {
            let line = notes.iter().find(|n| n.contains(&format!("{opt:?}")));
            assert!(
                line.is_some_and(|l| l.contains("ignored: ")),
                "{opt}: {notes:?}"
            );
        }
        assert_eq!(notes.len(), 8, "{notes:?}");
        // mount(8)'s own options are no news.
        let (_, quiet) = notices(&["pailfs", "b", "/m", "-o", "rw,_netdev,nofail"]).unwrap();
        assert!(quiet.is_empty(), "{quiet:?}");
    }

    #[test]
    fn other_commands_are_left_alone_and_mount_expands_o_too() {
        let same = ["pailfs", "check", "b", "-o", "x"];
        assert_eq!(run(&same).unwrap(), same);
        assert_eq!(
            run(&["pailfs", "--version"]).unwrap(),
            ["pailfs", "--version"]
        );
        assert_eq!(
            run(&["pailfs", "mount", "b", "/m", "-oallow_other"]).unwrap(),
            ["pailfs", "mount", "b", "/m", "--allow-other"]
        );
    }
}
