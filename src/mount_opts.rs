//! The argument form of `mount(8)` and `/etc/fstab`: `pailfs SOURCE MOUNTPOINT -o opt,opt`.
//!
//! `mount -t fuse.pailfs LABEL /mnt/x -o allow_other,ro` runs fuse3's `mount.fuse` helper,
//! which runs `pailfs LABEL /mnt/x -o allow_other,ro`. Rather than keep a second list of
//! options, every long flag of `pailfs mount` has an `-o` spelling derived from the command
//! line definition itself: `--memory-limit 512M` is `-o memory_limit=512M` (or
//! `memory-limit=512M`), `--allow-other` is `-o allow_other`. The generic options mount(8)
//! and fstab carry (`rw`, `nodev`, `_netdev`, `x-systemd.*`, ...) are accepted and ignored,
//! `ro` means `--read-only`, and anything else is an error naming the option.

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

/// Rewrites `pailfs SOURCE MOUNTPOINT -o ...` into `pailfs mount SOURCE MOUNTPOINT --flags`,
/// and expands `-o` in `pailfs mount ...` the same way. Other command lines are unchanged.
pub fn rewrite(args: Vec<OsString>, cli: &clap::Command) -> Result<Vec<OsString>, String> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    let Some(mount) = cli.find_subcommand("mount") else {
        return Ok(args);
    };
    let helper_form = !first.starts_with('-') && cli.find_subcommand(first).is_none();
    if !helper_form && first != "mount" {
        return Ok(args);
    }
    let mut out = vec![args[0].clone(), OsString::from("mount")];
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
                    out.extend(translate(opt, mount)?.into_iter().map(OsString::from));
                }
            }
            None => out.push(a.clone()),
        }
    }
    Ok(out)
}

/// One `-o` option as `pailfs mount` flags.
fn translate(opt: &str, mount: &clap::Command) -> Result<Vec<String>, String> {
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (opt, None),
    };
    if name.is_empty() || GENERIC.contains(&name) || name.starts_with("x-") || name == "comment" {
        return Ok(Vec::new());
    }
    if name == "ro" {
        return Ok(vec!["--read-only".into()]);
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
        (true, Some(v)) => Ok(vec![flag, v.to_string()]),
        (true, None) => Err(format!("mount option {name:?} needs a value ({name}=...)")),
        (false, None) => Ok(vec![flag]),
        (false, Some(_)) => Err(format!("mount option {name:?} takes no value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        let args = args.iter().map(OsString::from).collect();
        rewrite(args, &crate::cli::Cli::command())
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
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
            assert!(translate(&opt, mount).is_ok(), "{opt}");
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
