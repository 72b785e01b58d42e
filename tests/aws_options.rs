//! What real AWS buckets need, shown on what S3 stored: moto's server (`scripts/moto-server`)
//! answers SSE, storage classes, Glacier states and the headers of stored objects; each test
//! writes through a real mount and then asks the server with a plain SDK client, so a flag that
//! parsed but reached no request fails here.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use pailfs::store::ObjectStore;

use crate::common::{
    Mount, S3Env, crc32c_b64, head_object as head, rt, unique_prefix, write_synced,
};

/// `--sse aws:kms --sse-kms-key-id K --bucket-key --storage-class STANDARD_IA` reach every
/// object pailfs writes, as S3 (moto) stored them: a PUT, a multipart upload, a chmod (a
/// self-copy), a rename of a multipart object (a copy), and a directory marker.
#[test]
fn encryption_and_storage_class_reach_every_object_written() {
    let moto = S3Env::moto_full();
    let prefix = unique_prefix("sse");
    let source = format!("{}:{prefix}", moto.bucket);
    let flags = [
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        "alias/pailfs-test",
        "--bucket-key",
        "--storage-class",
        "STANDARD_IA",
        "--part-size",
        "5M",
    ];
    let mut m = Mount::on(moto.clone(), &source, &prefix, &flags, &[]);
    fs::write(m.p("small.txt"), b"encrypted").unwrap();
    fs::write(m.p("big.bin"), vec![7u8; 6 << 20]).unwrap();
    fs::write(m.p("big2.bin"), vec![8u8; 6 << 20]).unwrap();
    fs::set_permissions(m.p("small.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(m.p("big2.bin"), m.p("moved.bin")).unwrap();
    fs::create_dir(m.p("dir")).unwrap();
    m.unmount();
    // big.bin is as its multipart upload made it; moved.bin as the rename's copy did.
    for key in ["small.txt", "big.bin", "moved.bin", "dir/"] {
        let head = head(&moto, &format!("{prefix}{key}"));
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms"),
            "{key}"
        );
        assert!(
            head.ssekms_key_id()
                .is_some_and(|k| k.contains("pailfs-test")),
            "{key}: {:?}",
            head.ssekms_key_id()
        );
        // moto keeps no bucket-key flag for a multipart upload (its CreateMultipartUpload
        // drops the header), so only the others show it.
        if key != "big.bin" {
            assert_eq!(head.bucket_key_enabled(), Some(true), "{key}");
        }
        assert_eq!(
            head.storage_class().map(|s| s.as_str()),
            Some("STANDARD_IA"),
            "{key}"
        );
    }
}

/// The other two kinds of server-side encryption, SSE-S3 (`AES256`) and dual-layer KMS
/// (`aws:kms:dsse`), reach a PUT and a multipart upload as S3 (moto) stored them.
#[test]
fn sse_s3_and_dual_layer_kms_reach_puts_and_multipart_uploads() {
    let moto = S3Env::moto_full();
    for sse in ["AES256", "aws:kms:dsse"] {
        let prefix = unique_prefix("sse-kinds");
        let source = format!("{}:{prefix}", moto.bucket);
        let flags = ["--sse", sse, "--part-size", "5M"];
        let mut m = Mount::on(moto.clone(), &source, &prefix, &flags, &[]);
        fs::write(m.p("small.txt"), b"encrypted").unwrap();
        fs::write(m.p("big.bin"), vec![7u8; 6 << 20]).unwrap();
        m.unmount();
        for key in ["small.txt", "big.bin"] {
            let head = head(&moto, &format!("{prefix}{key}"));
            assert_eq!(
                head.server_side_encryption().map(|s| s.as_str()),
                Some(sse),
                "{key}"
            );
        }
    }
}

/// A read-write mount of a versioned bucket with exactly the minimal full policy (no
/// AbortMultipartUpload): afterwards the bucket holds one version of the file written and
/// nothing of the mount's own: no probe object, no version of one, no delete marker, no
/// upload left open.
#[test]
fn a_mount_leaves_nothing_of_its_own_on_a_versioned_bucket() {
    let bucket = std::env::var("PAILFS_MOTO_VERSIONED_BUCKET").expect("run through scripts/test");
    let moto = S3Env {
        bucket,
        ..S3Env::moto_full()
    };
    let prefix = unique_prefix("versioned");
    let source = format!("{}:{prefix}", moto.bucket);
    let mut m = Mount::on(moto.clone(), &source, &prefix, &[], &[]);
    fs::write(m.p("kept.txt"), b"one version").unwrap();
    m.unmount();
    let admin = S3Env {
        bucket: moto.bucket.clone(),
        ..S3Env::moto_admin()
    };
    let client = rt().block_on(pailfs::store::client::build_client(&admin.settings()));
    let versions = rt()
        .block_on(
            client
                .list_object_versions()
                .bucket(&admin.bucket)
                .prefix(&prefix)
                .send(),
        )
        .unwrap();
    let keys: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
    assert_eq!(keys, [format!("{prefix}kept.txt")], "{versions:?}");
    assert!(versions.delete_markers().is_empty(), "{versions:?}");
    let uploads = rt()
        .block_on(
            client
                .list_multipart_uploads()
                .bucket(&admin.bucket)
                .prefix(&prefix)
                .send(),
        )
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{uploads:?}");
}

/// An Object Lock bucket with a default retention refuses a PUT that carries neither a
/// Content-MD5 nor a checksum: with the default upload checksums a mount writes files there
/// and reads back what it wrote. (Not a multipart upload: moto answers
/// CompleteMultipartUpload on a versioned bucket with a `CompleteMultipartUploadResponse`
/// element, which the AWS SDK for Rust refuses to parse, where AWS answers
/// `CompleteMultipartUploadResult`. Not a chmod or rename either: those are copies, which
/// moto refuses there without an upload's checksum header, see docs/SEMANTICS.md.)
#[test]
fn an_object_lock_bucket_takes_what_the_mount_writes() {
    let bucket = std::env::var("PAILFS_MOTO_LOCKED_BUCKET").expect("run through scripts/test");
    let moto = S3Env {
        bucket,
        ..S3Env::moto_full()
    };
    let prefix = unique_prefix("locked");
    let source = format!("{}:{prefix}", moto.bucket);
    let big = crate::common::pseudo_random(3 << 20, 9);
    let mut m = Mount::on(moto.clone(), &source, &prefix, &[], &[]);
    write_synced(&m.p("small.txt"), b"retained").unwrap();
    write_synced(&m.p("big.bin"), &big).unwrap();
    assert_eq!(fs::read(m.p("big.bin")).unwrap(), big);
    m.unmount();
    assert_eq!(moto.stored(&format!("{prefix}small.txt")), b"retained");
    assert_eq!(moto.stored(&format!("{prefix}big.bin")), big);
    // Without upload checksums the same write is refused, and close() says so.
    let mut off = Mount::on(
        moto.clone(),
        &source,
        &prefix,
        &["--upload-checksums", "off"],
        &[],
    );
    let err = write_synced(&off.p("unchecked.txt"), b"no checksum").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    off.unmount();
    assert!(
        off.log_text()
            .contains("MissingUploadObjectWithObjectLockHeaders"),
        "the log says why"
    );
}

/// An object in a Glacier class cannot be read until restored: a read answers at once with
/// `EACCES` and the log says to restore it (S3's `InvalidObjectState`), not a hang or EIO;
/// `pailfs doctor` lists it.
#[test]
fn an_archived_object_is_refused_at_once_with_what_to_do() {
    let moto = S3Env::moto_full();
    let prefix = unique_prefix("glacier");
    let client = rt().block_on(pailfs::store::client::build_client(&moto.settings()));
    rt().block_on(
        client
            .put_object()
            .bucket(&moto.bucket)
            .key(format!("{prefix}cold.bin"))
            .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"frozen"))
            .send(),
    )
    .unwrap();
    rt().block_on(
        client
            .put_object()
            .bucket(&moto.bucket)
            .key(format!("{prefix}warm.txt"))
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"readable"))
            .send(),
    )
    .unwrap();
    let source = format!("{}:{prefix}", moto.bucket);
    let m = Mount::on(moto.clone(), &source, &prefix, &[], &[]);
    let started = std::time::Instant::now();
    let err = fs::read(m.p("cold.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert!(started.elapsed().as_secs() < 10);
    let log = m.log_text();
    assert!(log.contains("archived") && log.contains("restore"), "{log}");
    drop(m);
    // `pailfs doctor` lists it, and only it, as waiting for a restore.
    let mut doctor = std::process::Command::new(crate::common::pailfs_bin());
    moto.apply(&mut doctor)
        .args(["doctor", &source, "--json"])
        .arg("--cache-dir")
        .arg(std::env::temp_dir().join(format!("pailfs-doctor-{}", std::process::id())));
    let out = doctor.output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["archived_total"], 1, "{report}");
    assert_eq!(
        report["archived"][0],
        format!("{prefix}cold.bin"),
        "{report}"
    );
    assert_eq!(out.status.code(), Some(1), "a finding: exit 1");
}

/// Objects get the Content-Type their name implies (a website or CDN serves them with it): on
/// a PUT, a multipart upload, a rename to a name of another type (as editors and rsync save:
/// a temporary name, then the real one) and a chmod (a metadata-rewriting self-copy).
#[test]
fn objects_get_the_content_type_of_their_name_across_renames_and_chmod() {
    let moto = S3Env::moto_full();
    let prefix = unique_prefix("ctype");
    let source = format!("{}:{prefix}", moto.bucket);
    // Another tool's type, replaced by the name's when pailfs rewrites the metadata.
    let client = rt().block_on(pailfs::store::client::build_client(&moto.settings()));
    rt().block_on(
        client
            .put_object()
            .bucket(&moto.bucket)
            .key(format!("{prefix}other.html"))
            .content_type("text/x-custom")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"<p>x</p>"))
            .send(),
    )
    .unwrap();
    let mut m = Mount::on(moto.clone(), &source, &prefix, &["--part-size", "5M"], &[]);
    fs::set_permissions(m.p("other.html"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(m.p("page.html"), b"<p>hi</p>").unwrap();
    fs::write(m.p("video.mp4"), vec![1u8; 6 << 20]).unwrap();
    fs::write(m.p(".style.css.Xy12ab"), b"p{}").unwrap();
    fs::rename(m.p(".style.css.Xy12ab"), m.p("style.css")).unwrap();
    fs::write(m.p("data.json"), b"{}").unwrap();
    fs::rename(m.p("data.json"), m.p("kept.json")).unwrap();
    fs::set_permissions(m.p("page.html"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.p("README"), b"no extension").unwrap();
    m.unmount();
    for (key, want) in [
        ("page.html", Some("text/html")),
        ("video.mp4", Some("video/mp4")),
        ("style.css", Some("text/css")),
        ("kept.json", Some("application/json")),
        ("other.html", Some("text/html")),
    ] {
        let h = head(&moto, &format!("{prefix}{key}"));
        assert_eq!(h.content_type(), want, "{key}");
    }
    let h = head(&moto, &format!("{prefix}page.html"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("mode")).map(String::as_str),
        Some("33152"),
        "the chmod copy kept the mode beside the type"
    );
    let none = head(&moto, &format!("{prefix}README"));
    assert_ne!(none.content_type(), Some("text/html"));
}

fn key_file(dir: &std::path::Path, name: &str, byte: u8) -> String {
    let p = dir.join(name);
    fs::write(&p, [byte; 32]).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p.to_str().unwrap().to_string()
}

/// SSE-C on Garage: every object written through the mount (a PUT, a multipart upload, a
/// chmod self-copy, a rename copy, a directory marker) is encrypted with the key, so S3 refuses
/// to read it without the key; the mount reads it back after a remount; a mount with another
/// key, or none, answers `EACCES` at once and says which flag it needs.
#[test]
fn sse_c_encrypts_every_object_and_a_mount_without_the_key_says_so() {
    let e = S3Env::get();
    let prefix = unique_prefix("ssec");
    let keys = tempfile::tempdir().unwrap();
    let right = key_file(keys.path(), "right", 7);
    let wrong = key_file(keys.path(), "wrong", 9);
    let big = crate::common::pseudo_random(6 << 20, 3);
    // A "folder" another tool made, without a key: shown as a directory all the same.
    rt().block_on(async {
        let s = e.store().await;
        s.put(
            &format!("{prefix}console-folder/"),
            bytes::Bytes::new(),
            &Default::default(),
        )
        .await
        .unwrap();
    });
    let args = ["--sse-c-key-file", right.as_str(), "--part-size", "5M"];
    let mut m = Mount::with_args(&prefix, &args);
    assert!(m.p("console-folder").is_dir());
    write_synced(&m.p("small.txt"), b"sealed").unwrap();
    write_synced(&m.p("big.bin"), &big).unwrap();
    fs::set_permissions(m.p("small.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(m.p("big.bin"), m.p("moved.bin")).unwrap();
    fs::create_dir(m.p("dir")).unwrap();
    m.remount();
    assert_eq!(fs::read(m.p("small.txt")).unwrap(), b"sealed");
    assert_eq!(fs::read(m.p("moved.bin")).unwrap(), big);
    assert!(m.p("dir").is_dir());
    drop(m);
    let plain = rt().block_on(async { e.store().await.head(&format!("{prefix}small.txt")).await });
    assert!(
        matches!(plain, Err(pailfs::store::StoreError::EncryptionKey(_))),
        "{plain:?}"
    );
    // The key goes with every request: never over plain HTTP to another host.
    let mut plain = std::process::Command::new(crate::common::pailfs_bin());
    e.apply(&mut plain)
        .args(["check", &e.bucket, "--sse-c-key-file", &right]);
    plain.env("AWS_ENDPOINT_URL", "http://192.0.2.1:9000");
    let out = plain.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("https://") && err.lines().count() == 1,
        "{err}"
    );
    for (what, flags) in [
        ("another key", vec!["--sse-c-key-file", wrong.as_str()]),
        ("no key", vec![]),
    ] {
        let m = Mount::with_args(&prefix, &flags);
        let err = fs::read(m.p("small.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{what}: {err}");
        let log = m.log_text();
        assert!(
            log.contains("encrypted with a customer key (SSE-C)")
                && log.contains("mount with --sse-c-key-file"),
            "{what}: {log}"
        );
    }
}

/// `--no-sign-request` mounts a public bucket with no credentials anywhere: every request goes
/// out unsigned (a proxy counts `Authorization` headers), files read, and the mount is
/// read-only; without the flag the same mount fails, saying credentials are missing.
#[test]
fn no_sign_request_mounts_a_public_bucket_read_only_without_credentials() {
    let endpoint = std::env::var("PAILFS_MOTO_PUBLIC_ENDPOINT")
        .expect("PAILFS_MOTO_PUBLIC_ENDPOINT is not set: run through scripts/test");
    let bucket = "pailfs-public";
    let prefix = unique_prefix("public");
    let owner = S3Env {
        endpoint: endpoint.clone(),
        bucket: bucket.into(),
        key: "owner".into(),
        secret: "owner-secret".into(),
        region: "us-east-1".into(),
    };
    rt().block_on(async {
        let client = pailfs::store::client::build_client(&owner.settings()).await;
        let _ = client.create_bucket().bucket(bucket).send().await;
        client
            .put_object()
            .bucket(bucket)
            .key(format!("{prefix}data/open.txt"))
            .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(
                b"open data",
            ))
            .send()
            .await
            .unwrap();
    });
    let proxy = crate::common::proxy::FaultProxy::start(&endpoint);
    let anonymous = S3Env {
        endpoint: proxy.url.clone(),
        key: String::new(),
        secret: String::new(),
        ..owner
    };
    let source = format!("{bucket}:{prefix}");
    let no_keys = [("HOME", "/nonexistent"), ("AWS_PROFILE", "")];
    let m = Mount::on(
        anonymous.clone(),
        &source,
        &prefix,
        &["--no-sign-request"],
        &no_keys,
    );
    assert_eq!(fs::read(m.p("data/open.txt")).unwrap(), b"open data");
    let err = fs::write(m.p("data/new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(proxy.count(|c| &c.forwarded) > 0);
    assert_eq!(proxy.count(|c| &c.signed), 0, "every request unsigned");
    drop(m);
    let mut check = std::process::Command::new(crate::common::pailfs_bin());
    anonymous
        .apply(&mut check)
        .args(["check", &source])
        .envs(no_keys);
    let out = check.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("no AWS credentials found") && report.contains("--no-sign-request"),
        "{report}"
    );
}

/// Upload checksums on Garage, through a proxy that sees the headers: by default every PUT and
/// part carries a CRC32C with an unsigned payload (a loopback address: nothing can change the
/// bytes on the way), and S3 keeps it. A server that ignores checksums (the proxy strips them
/// from answers) is found at mount, which says so and uploads with a signed payload and no
/// checksum; the files arrive intact either way.
#[test]
fn uploads_carry_a_crc32c_and_a_server_that_ignores_it_is_found_at_mount() {
    use std::sync::atomic::Ordering::SeqCst;
    let e = S3Env::get();
    let small = b"checked on arrival".to_vec();
    let big = crate::common::pseudo_random(6 << 20, 11);
    for ignored in [false, true] {
        let proxy = crate::common::proxy::FaultProxy::start(&e.endpoint);
        proxy.faults.strip_checksums.store(ignored, SeqCst);
        let via = S3Env {
            endpoint: proxy.url.clone(),
            ..e.clone()
        };
        let prefix = unique_prefix("checksums");
        let source = format!("{}:{prefix}", e.bucket);
        let mut m = Mount::on(via, &source, &prefix, &["--part-size", "5M"], &[]);
        let sums = proxy.count(|c| &c.checksummed);
        let unsigned = proxy.count(|c| &c.unsigned_payload);
        let puts = proxy.count(|c| &c.data_puts);
        write_synced(&m.p("small.txt"), &small).unwrap();
        write_synced(&m.p("big.bin"), &big).unwrap();
        m.unmount();
        let sums = proxy.count(|c| &c.checksummed) - sums;
        let unsigned = proxy.count(|c| &c.unsigned_payload) - unsigned;
        let puts = proxy.count(|c| &c.data_puts) - puts;
        let log = m.log_text();
        let fell_back = log.contains("does not take CRC32C upload checksums");
        assert_eq!(fell_back, ignored, "{log}");
        // At least one PUT and two parts (more if one was retried), each with a checksum and an
        // unsigned payload, or, after the fallback, none.
        assert!(puts >= 3, "{puts} data PUTs");
        let want = if ignored { 0 } else { puts };
        assert_eq!((sums, unsigned), (want, want), "ignored: {ignored}");
        assert_eq!(e.stored(&format!("{prefix}small.txt")), small);
        assert_eq!(e.stored(&format!("{prefix}big.bin")), big);
        if !ignored {
            let h = head(&e, &format!("{prefix}small.txt"));
            let want = crc32c_b64(&small);
            assert_eq!(h.checksum_crc32_c(), Some(want.as_str()));
        }
    }
}

/// What moto (as AWS) stores with `--upload-checksums sha256`, `crc32c` and `crc64nvme`: the
/// object's checksum of that algorithm, for a PUT (of the whole object) and for a multipart
/// upload (composite for SHA-256 and CRC32C, of the parts' checksums with `-N`; of the whole
/// object for CRC64NVME, the only way S3 keeps it).
#[test]
fn the_chosen_checksum_is_what_s3_keeps() {
    use base64::Engine;
    let moto = S3Env::moto_full();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let raw = |alg: &str, data: &[u8]| -> Vec<u8> {
        use crc_fast::{CrcAlgorithm, checksum};
        match alg {
            "sha256" => {
                use sha2::Digest;
                sha2::Sha256::digest(data).to_vec()
            }
            "crc32c" => (checksum(CrcAlgorithm::Crc32Iscsi, data) as u32)
                .to_be_bytes()
                .to_vec(),
            _ => checksum(CrcAlgorithm::Crc64Nvme, data)
                .to_be_bytes()
                .to_vec(),
        }
    };
    let big = crate::common::pseudo_random(6 << 20, 5);
    for alg in ["sha256", "crc32c", "crc64nvme"] {
        let prefix = unique_prefix("sums");
        let source = format!("{}:{prefix}", moto.bucket);
        let flags = ["--upload-checksums", alg, "--part-size", "5M"];
        let mut m = Mount::on(moto.clone(), &source, &prefix, &flags, &[]);
        fs::write(m.p("f"), alg.as_bytes()).unwrap();
        fs::write(m.p("big"), &big).unwrap();
        m.unmount();
        assert!(!m.log_text().contains("does not take"), "{}", m.log_text());
        let stored = |key: &str| {
            let h = head(&moto, &format!("{prefix}{key}"));
            let v = match alg {
                "sha256" => h.checksum_sha256(),
                "crc32c" => h.checksum_crc32_c(),
                _ => h.checksum_crc64_nvme(),
            };
            v.map(str::to_string)
        };
        assert_eq!(stored("f"), Some(b64(&raw(alg, alg.as_bytes()))), "{alg}");
        let whole = if alg == "crc64nvme" {
            b64(&raw(alg, &big))
        } else {
            let (p1, p2) = big.split_at(5 << 20);
            b64(&raw(alg, &[raw(alg, p1), raw(alg, p2)].concat()))
        };
        // AWS writes a composite checksum with `-N`; moto leaves the suffix off.
        let big_sum = stored("big").map(|v| v.split('-').next().unwrap().to_string());
        assert_eq!(big_sum, Some(whole), "{alg}, multipart");
    }
}
