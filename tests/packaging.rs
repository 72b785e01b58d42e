//! The Debian package, installed for real: `dpkg -i`, a mount through `mount -t fuse.pailfs`
//! with a connection label, two through an fstab file (a pailfs line and an s3fs line), the
//! man page, bash completions, the systemd unit, and `dpkg -r`. `scripts/test` builds the
//! package first (`scripts/package`) and passes its path in `PAILFS_DEB`.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The package's test purges /var/cache/pailfs, which the demo's mount uses: one at a time.
/// Every other test runs beside these in the same binary, so none may use that directory:
/// each mount gets a cache directory of its own (`Mount` does it, other spawns pass
/// `--cache-dir`).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(cmd: &str) -> (bool, String) {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Copies a few files in through `dir` and checks them back.
fn copy_through(dir: &Path, tag: &str) {
    let src = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(
            src.path().join(format!("{tag}-{i}")),
            pseudo_random(1000 * i + 1, i as u64),
        )
        .unwrap();
    }
    sh(&format!(
        "cp {0}/* {1}/ && cd {0} && for f in *; do cmp \"$f\" {1}/\"$f\"; done",
        src.path().display(),
        dir.display()
    ));
}

#[test]
fn the_debian_package_installs_mounts_through_mount_8_and_fstab_and_removes_cleanly() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let deb = std::env::var("PAILFS_DEB")
        .expect("PAILFS_DEB is not set: run the tests through scripts/test, which builds the package with scripts/package");
    assert!(Path::new(&deb).exists(), "{deb} does not exist");
    let env = S3Env::get();
    sh(&format!("dpkg -i {deb}"));
    let version = sh("pailfs --version");
    assert!(version.contains("(commit "), "{version}");

    // A system-wide connection, as fstab and systemd mounts use.
    let label = format!("pkgtest{}", std::process::id());
    let prefix = unique_prefix("deb");
    let out = Command::new("/usr/bin/pailfs")
        .args([
            "connection",
            "add",
            "--system",
            &label,
            "--bucket",
            &env.bucket,
        ])
        .args([
            "--subfolder",
            &prefix,
            "--endpoint-url",
            &env.endpoint,
            "--region",
            &env.region,
        ])
        .args([
            "--path-style",
            "--access-key-id",
            &env.key,
            "--secret-env",
            "PAILFS_DEB_SECRET",
        ])
        .env("PAILFS_DEB_SECRET", &env.secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().display().to_string();
    // mount(8) -> fuse3's mount.fuse -> `pailfs LABEL DIR -o allow_other`.
    let (ok, msg) = run(&format!(
        "env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY mount -t fuse.pailfs {label} {m} -o allow_other"
    ));
    assert!(ok, "mount -t fuse.pailfs failed: {msg}");
    assert!(is_mounted(mnt.path()));
    copy_through(mnt.path(), "mount8");
    sh(&format!("umount {m}"));

    // An fstab line with the options admins use.
    let fstab = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        fstab.path(),
        format!("{label} {m} fuse.pailfs _netdev,allow_other,noauto,x-systemd.automount 0 0\n"),
    )
    .unwrap();
    let (ok, msg) = run(&format!(
        "env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY mount --fstab {} {m}",
        fstab.path().display()
    ));
    assert!(ok, "mount --fstab failed: {msg}");
    copy_through(mnt.path(), "fstab");
    // What the first mount wrote is there too.
    assert!(mnt.path().join("mount8-4").exists());
    sh(&format!("umount {m}"));

    // An fstab line written for s3fs, only its type changed: s3fs's source form, its
    // options, its password file; the tuning options are accepted with a notice each.
    let passwd = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        passwd.path(),
        format!("{}:{}:{}\n", env.bucket, env.key, env.secret),
    )
    .unwrap();
    std::fs::write(
        fstab.path(),
        format!(
            "{}:/{} {m} fuse.pailfs _netdev,allow_other,nonempty,use_path_request_style,url={},endpoint={},passwd_file={},umask=022,kernel_cache,max_stat_cache_size=100000 0 0\n",
            env.bucket,
            prefix.trim_end_matches('/'),
            env.endpoint,
            env.region,
            passwd.path().display()
        ),
    )
    .unwrap();
    let (ok, msg) = run(&format!(
        "env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION mount --fstab {} {m}",
        fstab.path().display()
    ));
    assert!(ok, "mount --fstab of an s3fs line failed: {msg}");
    assert!(
        msg.contains("\"kernel_cache\" ignored")
            && msg.contains("\"max_stat_cache_size=100000\" ignored"),
        "{msg}"
    );
    assert!(mnt.path().join("mount8-4").exists());
    copy_through(mnt.path(), "s3fs-line");
    sh(&format!("umount {m}"));

    // The man page renders, completions load, the unit is valid.
    let page = sh("MANWIDTH=80 man -P cat pailfs 2>/dev/null");
    assert!(page.contains("pailfs") && page.contains("mount"), "{page}");
    let page = sh("MANWIDTH=80 man -P cat pailfs-mount 2>/dev/null");
    assert!(page.contains("--memory-limit"), "{page}");
    let complete =
        sh("bash -c 'source /usr/share/bash-completion/completions/pailfs && complete -p pailfs'");
    assert!(complete.contains("pailfs"), "{complete}");
    let units = tempfile::tempdir().unwrap();
    let unit = units.path().join(format!("pailfs@{label}.service"));
    std::fs::copy("/lib/systemd/system/pailfs@.service", &unit).unwrap();
    let (ok, msg) = run(&format!("systemd-analyze verify {}", unit.display()));
    assert!(ok, "systemd-analyze verify: {msg}");
    // The unit's hardening, as systemd scores it (9.6 "UNSAFE" without any).
    let (_, msg) = run(&format!(
        "systemd-analyze security --offline=true {}",
        unit.display()
    ));
    let score: f64 = msg
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no score: {msg}"));
    assert!(score <= 4.5, "exposure {score}: {msg}");
    // The unit keeps only CAP_SYS_ADMIN, with no new privileges: enough to mount.
    let capped = tempfile::tempdir().unwrap();
    let c = capped.path().display().to_string();
    let (ok, msg) = run(&format!(
        "env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
         setpriv --no-new-privs --bounding-set=-all,+sys_admin --inh-caps=-all \
         /usr/bin/pailfs mount {label} {c}"
    ));
    assert!(ok, "mount with the unit's capabilities failed: {msg}");
    copy_through(capped.path(), "capped");
    sh(&format!("umount {c}"));

    // Removal keeps the connections and the cache; purge deletes them (they hold secrets and
    // kept data), as the maintainer scripts say.
    let info = sh(&format!("dpkg-deb -I {deb}"));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script} in the package: {info}");
    }
    sh("mkdir -p /var/cache/pailfs && touch /var/cache/pailfs/pkgtest-marker");
    sh("dpkg -r pailfs");
    assert!(!Path::new("/usr/bin/pailfs").exists());
    assert!(!Path::new("/lib/systemd/system/pailfs@.service").exists());
    let status = run("dpkg -s pailfs").1;
    assert!(
        !status.contains("Status: install ok installed"),
        "the package is still installed: {status}"
    );
    assert!(Path::new("/etc/pailfs/connections.toml").exists());
    assert!(Path::new("/var/cache/pailfs/pkgtest-marker").exists());
    sh(&format!("dpkg -i {deb}"));
    sh(&format!(
        "/usr/bin/pailfs connection remove --system {label}"
    ));
    sh("dpkg --purge pailfs");
    assert!(
        !run("dpkg -s pailfs").0,
        "the package is still known after purge"
    );
    assert!(!Path::new("/etc/pailfs").exists(), "purge kept /etc/pailfs");
    assert!(
        !Path::new("/var/cache/pailfs").exists(),
        "purge kept the cache"
    );
    rt().block_on(async { delete_prefix(&env.store().await, &prefix).await });
}

/// The README's first command runs to its end on this machine: it builds, mounts the local
/// server's bucket at ./mnt, copies files through the mount and lists them straight from S3
/// with `pailfs ls`, then prints how to unmount. (Its earlier last step, curl's `--aws-sigv4`,
/// signs query strings wrongly on Debian 12.)
#[test]
fn the_demo_runs_to_its_end() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mnt = root.join("mnt");
    let (ok, out) = run(&format!("cd {} && scripts/demo", root.display()));
    let listed = out.contains("README.md") && out.contains("PRE") && out.contains("src/");
    let (_, _) = run(&format!(
        "umount {} 2>/dev/null || umount -l {}",
        mnt.display(),
        mnt.display()
    ));
    assert!(ok, "scripts/demo failed:\n{out}");
    assert!(listed, "pailfs ls did not show the copied files:\n{out}");
    assert!(
        out.contains("Unmount with"),
        "the closing instructions are missing:\n{out}"
    );
}
