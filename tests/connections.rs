//! Named connections and the permission check, against Garage (its own keys) and moto's
//! server with IAM user policies enforced (`scripts/moto-server`): classification, missing
//! actions, printed policies, subfolder-restricted credentials, mounts by label, read-only
//! fallback, and secrets never printed or logged.

use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use pailfs::store::{ObjectStore, UserMeta};
use serde_json::Value;

use crate::common::{self, Mount, S3Env, rt, unique_prefix};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run through scripts/test (it starts scripts/moto-server and scripts/s3-server)")
    })
}

/// Runs pailfs with a private config dir and the given environment (nothing inherited from
/// the server variables unless passed).
fn pailfs(
    config: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let mut c = Command::new(common::pailfs_bin());
    c.args(args)
        .env("PAILFS_CONFIG_DIR", config)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn garage_env() -> Vec<(&'static str, String)> {
    let e = S3Env::get();
    vec![
        ("AWS_ENDPOINT_URL", e.endpoint),
        ("AWS_ACCESS_KEY_ID", e.key),
        ("AWS_SECRET_ACCESS_KEY", e.secret),
        ("AWS_REGION", e.region),
    ]
}

fn moto_env(user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", var("PAILFS_MOTO_ENDPOINT")),
        ("AWS_ACCESS_KEY_ID", var(&format!("PAILFS_MOTO_{user}_KEY"))),
        (
            "AWS_SECRET_ACCESS_KEY",
            var(&format!("PAILFS_MOTO_{user}_SECRET")),
        ),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// moto's server as the user with the full-access policy, for mounts and raw requests.
fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// `pailfs check ... --json`: (exit code, parsed report, and the text run's output).
fn check(args: &[&str], env: &[(&'static str, String)]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = vec!["check"];
    a.extend_from_slice(args);
    let human = pailfs(dir.path(), &a, &refs(env), None);
    a.push("--json");
    let out = pailfs(dir.path(), &a, &refs(env), None);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json did not print JSON ({e}): {}", text(&out)));
    assert_eq!(out.status.code(), human.status.code());
    (out.status.code().unwrap_or(-1), json, text(&human))
}

fn actions(policy: &Value) -> Vec<String> {
    let mut v: Vec<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
        })
        .collect();
    v.sort();
    v
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

// ----- connections on disk -----

#[test]
fn connections_are_saved_privately_and_secrets_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "SuperSecretValue/1234567890abcdefEXAMPLE";
    let add = pailfs(
        dir.path(),
        &[
            "connection",
            "add",
            "work",
            "--bucket",
            "team-bucket",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
            "--secret-stdin",
            "--subfolder",
            "/projects/x",
        ],
        &[],
        Some(&format!("{secret}\n")),
    );
    assert!(add.status.success(), "{}", text(&add));
    let file = dir.path().join("connections.toml");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        fs::read_to_string(&file).unwrap().contains(secret),
        "the secret is stored in the file"
    );
    let again = pailfs(
        dir.path(),
        &["connection", "add", "work", "--bucket", "other"],
        &[],
        None,
    );
    assert!(!again.status.success() && text(&again).contains("--force"));
    let env_add = pailfs(
        dir.path(),
        &[
            "connection",
            "add",
            "second",
            "--bucket",
            "team-bucket",
            "--access-key-id",
            "AKIA2222222222222222",
            "--secret-env",
            "MY_SECRET",
        ],
        &[("MY_SECRET", secret)],
        None,
    );
    assert!(env_add.status.success(), "{}", text(&env_add));
    let no_source = pailfs(
        dir.path(),
        &[
            "connection",
            "add",
            "third",
            "--bucket",
            "b-3",
            "--access-key-id",
            "AKIA3333333333333333",
        ],
        &[],
        None,
    );
    assert!(!no_source.status.success());
    assert!(
        text(&no_source).contains("--secret-stdin"),
        "{}",
        text(&no_source)
    );

    let list = pailfs(dir.path(), &["connection", "list"], &[], None);
    let list_text = text(&list);
    assert!(
        list_text.contains("work") && list_text.contains("s3://team-bucket/projects/x/"),
        "{list_text}"
    );
    let show = pailfs(dir.path(), &["connection", "show", "work"], &[], None);
    let show_text = text(&show);
    assert!(
        show.status.success() && show_text.contains("********"),
        "{show_text}"
    );
    for out in [&add, &env_add, &list, &show, &no_source] {
        assert!(!text(out).contains(secret), "secret printed: {}", text(out));
    }

    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let refused = pailfs(dir.path(), &["connection", "list"], &[], None);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains(&format!("chmod 600 {}", file.display())),
        "{}",
        text(&refused)
    );
    let mount_refused = pailfs(dir.path(), &["mount", "work", "/tmp"], &[], None);
    assert!(
        text(&mount_refused).contains("chmod 600"),
        "{}",
        text(&mount_refused)
    );
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

    let rm = pailfs(dir.path(), &["connection", "remove", "work"], &[], None);
    assert!(rm.status.success());
    let show = pailfs(dir.path(), &["connection", "show", "work"], &[], None);
    assert!(!show.status.success());
}

// ----- the check against Garage -----

#[test]
fn garage_keys_are_classified() {
    let e = S3Env::get();
    let rw = garage_env();
    let (code, r, human) = check(&[&e.bucket], &rw);
    assert_eq!(code, 0, "{human}");
    assert_eq!(r["classification"], "full-access");
    assert!(human.contains("Result: full access"));

    let mut ro = garage_env();
    ro[1].1 = var("PAILFS_RO_ACCESS_KEY_ID");
    ro[2].1 = var("PAILFS_RO_SECRET_ACCESS_KEY");
    let (code, r, _) = check(&[&e.bucket], &ro);
    assert_eq!(code, 1, "read-only keys do not allow full access");
    assert_eq!(r["classification"], "read-only");
    assert!(strs(&r["missing"]).contains(&"s3:PutObject".to_string()));
    let (code, r, _) = check(&[&e.bucket, "--read-only"], &ro);
    assert_eq!(code, 0, "they do allow read-only");
    assert_eq!(
        actions(&r["policy"]),
        vec!["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"]
    );

    let mut wrong = garage_env();
    wrong[2].1 = "0".repeat(64);
    let (code, r, human) = check(&[&e.bucket], &wrong);
    assert_eq!(code, 1);
    assert_eq!(r["classification"], "insufficient");
    assert!(
        human.contains("credentials") && human.contains("refused"),
        "{human}"
    );

    let (code, r, human) = check(&["no-such-bucket-pailfs"], &rw);
    assert_eq!(code, 1);
    assert!(human.contains("does not exist"), "{human}");
    assert_eq!(r["classification"], "insufficient");
    assert!(!human.contains(&e.secret));
}

// ----- the check against moto's IAM -----

#[test]
fn moto_full_access_user_and_its_policy() {
    let bucket = var("PAILFS_MOTO_BUCKET");
    let env = moto_env("FULL");
    let (code, r, human) = check(&[&bucket], &env);
    assert_eq!(code, 0, "{human}");
    assert_eq!(r["classification"], "full-access");
    assert!(strs(&r["missing"]).is_empty());
    let mut want: Vec<String> = pailfs::connections::policy::FULL_ACTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(actions(&r["policy"]), want);
    assert_eq!(
        r["policy"]["Statement"][1]["Resource"],
        format!("arn:aws:s3:::{bucket}/*")
    );
    assert!(human.contains("\"Version\": \"2012-10-17\""), "{human}");
    assert!(!human.contains(&env[2].1), "secret printed");
}

#[test]
fn moto_subfolder_restricted_read_only_user() {
    let bucket = var("PAILFS_MOTO_BUCKET");
    let env = moto_env("ROSUB");
    // At the bucket root the restriction shows: reading is denied there.
    let (code, r, human) = check(&[&bucket], &env);
    assert_eq!(code, 1);
    assert_eq!(r["classification"], "insufficient");
    assert!(
        human.contains("denied at the bucket root (s3:GetObject)"),
        "{human}"
    );
    assert!(human.contains("--subfolder"), "{human}");
    // At the subfolder it is read-only; the root is not probed.
    let (code, r, human) = check(
        &[&bucket, "--subfolder", "path/to/subfolder", "--read-only"],
        &env,
    );
    assert_eq!(code, 0, "{human}");
    assert_eq!(r["classification"], "read-only");
    assert!(human.contains("the bucket root is not probed"), "{human}");
    assert_eq!(
        actions(&r["policy"]),
        vec!["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"]
    );
    assert_eq!(
        r["policy"]["Statement"][2]["Resource"],
        format!("arn:aws:s3:::{bucket}/path/to/subfolder/*")
    );
    // Needing full access there, the missing write actions are named.
    let (code, r, _) = check(&[&format!("{bucket}:path/to/subfolder")], &env);
    assert_eq!(code, 1);
    assert_eq!(r["classification"], "read-only");
    let missing = strs(&r["missing"]);
    assert!(
        missing.contains(&"s3:PutObject".to_string())
            && missing.contains(&"s3:DeleteObject".to_string()),
        "{missing:?}"
    );
}

#[test]
fn moto_write_only_user_is_insufficient() {
    let bucket = var("PAILFS_MOTO_BUCKET");
    let env = moto_env("WO");
    let (code, r, human) = check(&[&bucket], &env);
    assert_eq!(code, 1);
    assert_eq!(r["classification"], "insufficient");
    let missing = strs(&r["missing"]);
    for a in ["s3:ListBucket", "s3:GetObject", "s3:DeleteObject"] {
        assert!(
            missing.contains(&a.to_string()),
            "{a} not reported missing: {missing:?}"
        );
    }
    assert!(!missing.contains(&"s3:PutObject".to_string()));
    assert!(
        human.contains("left behind"),
        "the undeletable probe is reported: {human}"
    );
    let (_, r2, _) = check(&[&bucket, "--read-only"], &env);
    assert_eq!(r2["classification"], "insufficient");
}

#[test]
fn moto_bad_keys_are_told_apart() {
    let bucket = var("PAILFS_MOTO_BUCKET");
    let mut env = moto_env("FULL");
    env[2].1 = "not-the-secret".into();
    let (code, _, human) = check(&[&bucket], &env);
    assert_eq!(code, 1);
    assert!(human.contains("secret key does not match"), "{human}");
    env[1].1 = "AKIAUNKNOWNUNKNOWN00".into();
    let (_, _, human) = check(&[&bucket], &env);
    assert!(human.contains("access key id is not known"), "{human}");
}

/// An endpoint nobody listens on: one line for the endpoint step, saying it once, naming the
/// endpoint and what to check, without the SDK's multi-line error dump.
#[test]
fn an_unreachable_endpoint_is_one_clear_line() {
    let mut env = garage_env();
    env[0].1 = "http://127.0.0.1:1".into();
    let (code, json, human) = check(&["some-bucket"], &env);
    assert_eq!(code, 1, "{human}");
    let line = human
        .lines()
        .find(|l| l.contains("endpoint"))
        .unwrap_or_else(|| panic!("no endpoint line: {human}"));
    assert_eq!(line.matches("reach").count(), 1, "{line}");
    assert!(
        line.contains("127.0.0.1:1") && line.contains("--endpoint-url"),
        "{line}"
    );
    assert!(
        !human.contains("DispatchFailure") && !human.contains("source:"),
        "{human}"
    );
    assert!(json.to_string().contains("127.0.0.1:1"), "{json}");
}

// ----- mounts by label and the mount-time check -----

/// Saves `label`: the Garage bucket of `e`, restricted to `prefix`, with `e`'s keys.
fn save_subfolder(config: &std::path::Path, label: &str, e: &S3Env, prefix: &str) {
    let args = [
        "--bucket",
        &e.bucket,
        "--endpoint-url",
        &e.endpoint,
        "--region",
        &e.region,
        "--subfolder",
        prefix,
        "--access-key-id",
        &e.key,
    ];
    save(config, label, &args, &e.secret);
}

fn save(config: &std::path::Path, label: &str, args: &[&str], secret: &str) {
    let mut a = vec!["connection", "add", label];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--secret-stdin"]);
    let out = pailfs(config, &a, &[], Some(&format!("{secret}\n")));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn mount_by_label_of_a_read_only_subfolder_connection() {
    let config = tempfile::tempdir().unwrap();
    let env = moto_env("ROSUB");
    save(
        config.path(),
        "moto-sub",
        &[
            "--bucket",
            &var("PAILFS_MOTO_BUCKET"),
            "--endpoint-url",
            &env[0].1,
            "--region",
            "us-east-1",
            "--subfolder",
            "path/to/subfolder",
            "--read-only",
            "--access-key-id",
            &env[1].1,
        ],
        &env[2].1,
    );
    let test = pailfs(
        config.path(),
        &["connection", "test", "moto-sub"],
        &[],
        None,
    );
    assert!(test.status.success(), "{}", text(&test));
    assert!(text(&test).contains("Result: read-only"));
    let cfg = config.path().to_str().unwrap();
    let m = Mount::custom(
        "moto-sub",
        "path/to/subfolder/",
        &[],
        &[
            ("PAILFS_CONFIG_DIR", cfg),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ],
    );
    assert_eq!(
        fs::read_to_string(m.p("hello.txt")).unwrap(),
        "hello from the subfolder\n"
    );
    let err = fs::write(m.p("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn read_only_credentials_mount_read_only_with_a_notice_or_are_refused() {
    let e = S3Env::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let config = tempfile::tempdir().unwrap();
    // Not root's default /var/cache/pailfs, which the packaging test purges meanwhile.
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    let mut ro = garage_env();
    ro[1].1 = var("PAILFS_RO_ACCESS_KEY_ID");
    ro[2].1 = var("PAILFS_RO_SECRET_ACCESS_KEY");
    let refused = pailfs(
        config.path(),
        &["mount", &e.bucket, d, "--read-write", "--cache-dir", c],
        &refs(&ro),
        None,
    );
    assert!(!refused.status.success());
    let msg = text(&refused);
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    assert!(
        msg.contains("can only read") && msg.contains("--read-write"),
        "{msg}"
    );
    assert!(!common::is_mounted(dir.path()));

    let ok = pailfs(
        config.path(),
        &["mount", &e.bucket, d, "--cache-dir", c],
        &refs(&ro),
        None,
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains("notice") && text(&ok).contains("read-only"),
        "{}",
        text(&ok)
    );
    let err = fs::write(dir.path().join("x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    Command::new("umount").arg(dir.path()).status().unwrap();
}

#[test]
fn a_write_refused_by_s3_fails_at_close_and_keeps_the_old_object() {
    let env = moto_env("PARTIAL");
    let bucket = var("PAILFS_MOTO_BUCKET");
    let envs = refs(&env);
    // The probe objects may be written under partial/, so the mount is read-write; real
    // files may not.
    let m = Mount::custom(
        &format!("{bucket}:partial"),
        "partial/",
        &["--read-write"],
        &envs,
    );
    assert_eq!(fs::read(m.p("doc.txt")).unwrap(), b"version 1");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("doc.txt"))
        .unwrap();
    f.write_all(b"version 2 that S3 refuses").unwrap();
    let rc = unsafe { libc::close(f.into_raw_fd()) };
    let err = std::io::Error::last_os_error();
    assert_eq!(rc, -1, "close() must report the refused upload");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert_eq!(
        fs::read(m.p("doc.txt")).unwrap(),
        b"version 1",
        "nothing of the refused write is served"
    );
    let mut f = fs::File::create(m.p("new.txt")).unwrap();
    f.write_all(b"new").unwrap();
    let rc = unsafe { libc::close(f.into_raw_fd()) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EACCES)
    );
    assert!(
        !m.p("new.txt").exists(),
        "a refused new file does not appear"
    );
}

#[test]
fn mount_by_label_uses_the_subfolder_as_root() {
    let e = S3Env::get();
    let prefix = unique_prefix("label");
    rt().block_on(async {
        let s = e.store().await;
        s.put(
            &format!("{prefix}inside.txt"),
            Bytes::from_static(b"in the subfolder"),
            &UserMeta::new(),
        )
        .await
        .unwrap();
    });
    let config = tempfile::tempdir().unwrap();
    save_subfolder(config.path(), "garage-sub", &e, &prefix);
    let cfg = config.path().to_str().unwrap();
    let m = Mount::custom(
        "garage-sub",
        &prefix,
        &[],
        &[
            ("PAILFS_CONFIG_DIR", cfg),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ],
    );
    let names: Vec<String> = fs::read_dir(m.path())
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["inside.txt"]);
    fs::write(m.p("written.txt"), b"through the label").unwrap();
    assert_eq!(
        e.stored(&format!("{prefix}written.txt")),
        b"through the label"
    );
}

#[test]
fn a_full_trace_log_holds_no_secret() {
    let e = S3Env::get();
    let mut m = Mount::with_env(
        &unique_prefix("secrets"),
        &["--log-level", "trace"],
        &[("RUST_LOG", "trace")],
    );
    fs::write(m.p("a.txt"), b"hello").unwrap();
    assert_eq!(fs::read(m.p("a.txt")).unwrap(), b"hello");
    fs::create_dir(m.p("d")).unwrap();
    fs::rename(m.p("a.txt"), m.p("d/b.txt")).unwrap();
    let _ = fs::read_dir(m.path()).unwrap().count();
    m.unmount();
    let log = m.log_text();
    assert!(
        log.len() > 1000,
        "the trace log is not empty ({} bytes)",
        log.len()
    );
    assert!(
        !log.contains(&e.secret),
        "the secret key appears in the log"
    );
}

/// rclone's `LABEL:PATH`: the path is under the connection's subfolder, not a bucket named
/// LABEL. A label that could also be a bucket's name says that it wins, and how to name the
/// bucket instead.
#[test]
fn a_label_with_a_path_mounts_under_its_subfolder_and_says_it_shadows_a_bucket_name() {
    let e = S3Env::get();
    let prefix = unique_prefix("labelpath");
    for (k, v) in [("deeper/inside.txt", "deeper"), ("top.txt", "top")] {
        e.put(&format!("{prefix}{k}"), v.as_bytes());
    }
    let config = tempfile::tempdir().unwrap();
    save_subfolder(config.path(), "garage-lp", &e, &prefix);
    let cfg = config.path().to_str().unwrap();
    let envs = [
        ("PAILFS_CONFIG_DIR", cfg),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
    ];
    let deeper = format!("{prefix}deeper/");
    let m = Mount::custom("garage-lp:deeper", &deeper, &[], &envs);
    let names: Vec<String> = fs::read_dir(m.path())
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["inside.txt"]);
    drop(m);
    let out = pailfs(config.path(), &["check", "garage-lp:deeper"], &[], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"garage-lp\" is a saved connection") && err.contains("s3://garage-lp"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains(&deeper), "{}", text(&out));
}

/// `--bucket-policy` prints the policy as the bucket's, its Principal the identity these
/// credentials belong to (STS GetCallerIdentity), and says where each form goes.
#[test]
fn the_bucket_policy_form_names_these_credentials_identity() {
    let bucket = var("PAILFS_MOTO_BUCKET");
    let env = moto_env("FULL");
    let (code, r, human) = check(&[&bucket, "--bucket-policy"], &env);
    assert_eq!(code, 0, "{human}");
    assert_eq!(r["policy_form"], "bucket", "{r}");
    let arn = "arn:aws:iam::123456789012:user/pailfs-full";
    for s in r["policy"]["Statement"].as_array().unwrap() {
        assert_eq!(s["Principal"]["AWS"], arn, "{s}");
    }
    assert!(
        human.contains("Bucket policy") && human.contains(arn),
        "{human}"
    );
    let (_, r, human) = check(&[&bucket], &env);
    assert_eq!(r["policy_form"], "user");
    assert!(r["policy"]["Statement"][0].get("Principal").is_none());
    assert!(human.contains("IAM user"), "{human}");
}

/// A home directory whose `~/.aws/config` is `config`.
fn aws_home(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".aws")).unwrap();
    fs::write(home.path().join(".aws/config"), config).unwrap();
    home
}

/// AWS's own endpoint settings choose the endpoint through aws-config, as for any AWS tool:
/// `AWS_ENDPOINT_URL_S3` (the S3-only variable), a profile's `endpoint_url`, and
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` turning both off (the check then goes to AWS).
#[test]
fn aws_endpoint_variables_and_profiles_choose_the_endpoint() {
    let e = S3Env::get();
    let config = tempfile::tempdir().unwrap();
    let keys = [
        ("AWS_ACCESS_KEY_ID", e.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", e.secret.as_str()),
        ("AWS_REGION", e.region.as_str()),
        ("AWS_ENDPOINT_URL_S3", e.endpoint.as_str()),
    ];
    let at = format!("at {} ", e.endpoint);
    let out = pailfs(config.path(), &["check", &e.bucket], &keys, None);
    assert!(
        out.status.success() && text(&out).contains(&at),
        "{}",
        text(&out)
    );
    let mut ignored = keys.to_vec();
    ignored.push(("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"));
    let out = pailfs(config.path(), &["check", &e.bucket], &ignored, None);
    assert!(text(&out).contains("at AWS S3"), "{}", text(&out));
    let home = aws_home(&format!(
        "[profile garage]\nendpoint_url = {}\nregion = {}\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        e.endpoint, e.region, e.key, e.secret
    ));
    let home_env = [("HOME", home.path().to_str().unwrap())];
    let out = pailfs(
        config.path(),
        &["check", &e.bucket, "--profile", "garage"],
        &home_env,
        None,
    );
    assert!(
        out.status.success() && text(&out).contains(&at),
        "{}",
        text(&out)
    );
}

/// A connection that names an AWS profile (`--profile`) takes its keys from that profile in
/// `~/.aws`: `pailfs check LABEL` and a mount by the label work with no keys anywhere else.
#[test]
fn a_connection_with_a_profile_checks_and_mounts_with_the_profiles_keys() {
    let e = S3Env::get();
    let config = tempfile::tempdir().unwrap();
    let cfg = config.path().to_str().unwrap();
    let home = aws_home("[profile garage-keys]\nregion = us-east-1\n");
    fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[garage-keys]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            e.key, e.secret
        ),
    )
    .unwrap();
    let h = home.path().to_str().unwrap();
    let prefix = unique_prefix("profile-conn");
    let add = [
        "connection",
        "add",
        "garage-prof",
        "--bucket",
        &e.bucket,
        "--endpoint-url",
        &e.endpoint,
        "--region",
        &e.region,
        "--subfolder",
        &prefix,
        "--profile",
        "garage-keys",
    ];
    let out = pailfs(config.path(), &add, &[("HOME", h)], None);
    assert!(out.status.success(), "{}", text(&out));
    let out = pailfs(
        config.path(),
        &["check", "garage-prof"],
        &[("HOME", h)],
        None,
    );
    assert!(
        out.status.success() && text(&out).contains("full access"),
        "{}",
        text(&out)
    );
    let no_keys = [
        ("PAILFS_CONFIG_DIR", cfg),
        ("HOME", h),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
    ];
    let m = Mount::custom("garage-prof", &prefix, &[], &no_keys);
    fs::write(m.p("via-profile.txt"), b"keys from a profile").unwrap();
    drop(m);
    assert_eq!(
        e.stored(&format!("{prefix}via-profile.txt")),
        b"keys from a profile"
    );
}

/// Request options saved with a connection reach what S3 stores for a mount by its label, and
/// a flag given at mount wins over the saved value.
#[test]
fn a_connection_saves_request_options_and_flags_given_at_mount_win() {
    let moto = S3Env::moto_full();
    let config = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("saved-opts");
    let args = [
        "--bucket",
        &moto.bucket,
        "--endpoint-url",
        &moto.endpoint,
        "--region",
        "us-east-1",
        "--subfolder",
        &prefix,
        "--access-key-id",
        &moto.key,
        "--storage-class",
        "STANDARD_IA",
        "--upload-checksums",
        "sha256",
    ];
    save(config.path(), "moto-opts", &args, &moto.secret);
    let saved = fs::read_to_string(config.path().join("connections.toml")).unwrap();
    assert!(
        saved.contains("[connections.moto-opts.requests]"),
        "{saved}"
    );
    let cfg = config.path().to_str().unwrap();
    let envs = [
        ("PAILFS_CONFIG_DIR", cfg),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
    ];
    for (file, flags) in [
        ("saved.txt", vec![]),
        ("flagged.txt", vec!["--storage-class", "STANDARD"]),
    ] {
        let mut m = Mount::on(moto.clone(), "moto-opts", &prefix, &flags, &envs);
        fs::write(m.p(file), b"options").unwrap();
        m.unmount();
    }
    let head = |k: &str| common::head_object(&moto, &format!("{prefix}{k}"));
    let saved = head("saved.txt");
    assert_eq!(
        saved.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert!(saved.checksum_sha256().is_some(), "{saved:?}");
    let flagged = head("flagged.txt");
    assert_ne!(
        flagged.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
}

/// Credentials a connection can hold besides a key pair: a `credential_process` command (its
/// JSON gives Garage's keys; nothing in the environment) and temporary keys with a session
/// token, which then goes with every request (a proxy in front of the public moto counts it).
#[test]
fn credential_processes_and_session_tokens_in_connections() {
    let e = S3Env::get();
    let config = tempfile::tempdir().unwrap();
    let cfg = config.path().to_str().unwrap();
    let script = config.path().join("creds.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho '{{\"Version\": 1, \"AccessKeyId\": \"{}\", \"SecretAccessKey\": \"{}\"}}'\n",
            e.key, e.secret
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    let prefix = unique_prefix("credproc");
    let add = [
        "connection",
        "add",
        "garage-proc",
        "--bucket",
        &e.bucket,
        "--endpoint-url",
        &e.endpoint,
        "--region",
        &e.region,
        "--subfolder",
        &prefix,
        "--credential-process",
        script.to_str().unwrap(),
    ];
    let out = pailfs(config.path(), &add, &[], None);
    assert!(out.status.success(), "{}", text(&out));
    let no_keys = [
        ("PAILFS_CONFIG_DIR", cfg),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
    ];
    let m = Mount::custom("garage-proc", &prefix, &[], &no_keys);
    fs::write(m.p("via-process.txt"), b"keys from a command").unwrap();
    assert_eq!(
        fs::read(m.p("via-process.txt")).unwrap(),
        b"keys from a command"
    );
    drop(m);

    let endpoint = std::env::var("PAILFS_MOTO_PUBLIC_ENDPOINT").expect("run through scripts/test");
    let proxy = common::proxy::FaultProxy::start(&endpoint);
    let add = [
        "connection",
        "add",
        "temporary",
        "--bucket",
        "pailfs-public",
        "--endpoint-url",
        &proxy.url,
        "--region",
        "us-east-1",
        "--access-key-id",
        "ASIATEMPORARY123",
        "--secret-env",
        "SECRET",
        "--session-token-env",
        "TOKEN",
    ];
    let envs = [
        ("SECRET", "temporary-secret"),
        ("TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN"),
    ];
    let out = pailfs(config.path(), &add, &envs, None);
    assert!(out.status.success(), "{}", text(&out));
    let shown = pailfs(
        config.path(),
        &["connection", "show", "temporary"],
        &[],
        None,
    );
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(
        text(&shown).contains("session_token") && !text(&shown).contains("EXAMPLETOKEN"),
        "{}",
        text(&shown)
    );
    let out = pailfs(
        config.path(),
        &["check", "temporary", "--read-only"],
        &[],
        None,
    );
    assert!(
        text(&out).contains("temporary access key"),
        "{}",
        text(&out)
    );
    let signed = proxy.count(|c| &c.signed);
    assert!(signed > 0);
    assert_eq!(
        proxy.count(|c| &c.with_token),
        signed,
        "the token on every request"
    );
}

/// A profile made by `aws login` (a `login_session`) is read by aws-config's login provider:
/// with no session cached on this machine, the check says to run `aws login`, in one line.
#[test]
fn an_aws_login_profile_without_a_cached_session_says_to_run_aws_login() {
    let e = S3Env::get();
    let config = tempfile::tempdir().unwrap();
    let home = aws_home(
        "[profile console]\nlogin_session = arn:aws:iam::123456789012:user/someone\nregion = us-east-1\n",
    );
    let envs = [
        ("HOME", home.path().to_str().unwrap()),
        ("AWS_ENDPOINT_URL", e.endpoint.as_str()),
    ];
    let out = pailfs(
        config.path(),
        &["check", &e.bucket, "--profile", "console"],
        &envs,
        None,
    );
    assert!(!out.status.success());
    let line = text(&out)
        .lines()
        .find(|l| l.contains("[FAIL]"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("credentials") && line.contains("run `aws login`"),
        "{}",
        text(&out)
    );
}

/// A private certificate authority for an HTTPS endpoint (a TLS front for Garage, its
/// certificate signed by a CA made for the test): refused without it, in one line that says
/// which flag helps; trusted with `--ca-bundle` or `AWS_CA_BUNDLE`.
#[test]
fn a_private_ca_is_trusted_with_ca_bundle_or_aws_ca_bundle() {
    let e = S3Env::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    common::sh(&format!(
        "cd '{d}' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
           -subj /CN=pailfs-test-ca 2>/dev/null \
         && openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null \
         && printf 'subjectAltName=IP:127.0.0.1\\n' > ext \
         && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem \
           -days 2 -extfile ext 2>/dev/null"
    ));
    let upstream = e.endpoint.trim_start_matches("http://");
    let (host, port) = upstream.split_once(':').unwrap();
    let mut front = Killed(
        std::process::Command::new("python3")
            .arg("tests/support/tls_forward.py")
            .arg(dir.path().join("srv.pem"))
            .arg(dir.path().join("srv.key"))
            .args([host, port])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    let out = front.0.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    let https = format!("https://127.0.0.1:{}", line.trim());
    let ca = dir.path().join("ca.pem");
    let keys = [
        ("AWS_ACCESS_KEY_ID", e.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", e.secret.as_str()),
        ("AWS_REGION", e.region.as_str()),
        ("AWS_ENDPOINT_URL", https.as_str()),
        ("AWS_CA_BUNDLE", ""),
    ];
    let config = tempfile::tempdir().unwrap();
    let check = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["check", e.bucket.as_str()];
        args.extend_from_slice(extra);
        pailfs(config.path(), &args, env, None)
    };
    let refused = check(&[], &keys);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("--ca-bundle"), "{}", text(&refused));
    let flag = check(&["--ca-bundle", ca.to_str().unwrap()], &keys);
    assert!(flag.status.success(), "{}", text(&flag));
    let mut env = keys.to_vec();
    env[4].1 = ca.to_str().unwrap();
    let var = check(&[], &env);
    assert!(var.status.success(), "{}", text(&var));
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Credentials that may write but not delete (no s3:DeleteObject) still get a read-write mount:
/// files are written; `rm` answers `EACCES` and the log says once what that means.
#[test]
fn credentials_that_cannot_delete_still_mount_and_say_so_at_the_first_refusal() {
    let moto = S3Env {
        key: var("PAILFS_MOTO_NODEL_KEY"),
        secret: var("PAILFS_MOTO_NODEL_SECRET"),
        ..S3Env::moto_full()
    };
    let prefix = unique_prefix("nodel");
    let source = format!("{}:{prefix}", moto.bucket);
    let mut m = Mount::on(moto, &source, &prefix, &[], &[]);
    fs::write(m.p("kept.txt"), b"written").unwrap();
    for _ in 0..2 {
        let err = fs::remove_file(m.p("kept.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    }
    assert_eq!(fs::read(m.p("kept.txt")).unwrap(), b"written");
    m.unmount();
    let log = m.log_text();
    assert_eq!(log.matches("may not delete objects").count(), 1, "{log}");
}
