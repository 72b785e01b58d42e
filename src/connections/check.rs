//! The permission self-check: which S3 actions the credentials may perform where pailfs will
//! work, probed with real requests, in order, with a result line each.
//!
//! 1. credentials and bucket (GetBucketLocation, which also gives the region; a wrong
//!    configured region is corrected with a notice and the rest runs in the right one);
//! 2. listing, at the bucket root or, for credentials restricted to a subfolder, at that
//!    subfolder only (the root is then never probed);
//! 3. reading an existing object (or the probe object);
//! 4. writing, reading ACLs, deleting and aborting a multipart upload, with a unique temporary
//!    key `SUBFOLDER.pailfs-check-<random>` that is removed afterwards. It never writes to,
//!    deletes or changes the ACL of an existing key.
//!
//! The result is a classification (full access, read-only, insufficient), the actions that are
//! missing for the mode the connection needs, and the minimal policy for that mode. Servers that
//! do not implement an action (ACLs on some S3-compatible stores) are reported as such and do
//! not count against the credentials. Error kinds are told apart where the server does:
//! AWS and moto answer `InvalidAccessKeyId`, `SignatureDoesNotMatch` and `ExpiredToken`;
//! Garage answers `AccessDenied` for all of them.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::policy::{
    FULL_ACTIONS, Mode, PolicyForm, READ_ONLY_ACTIONS, bucket_policy, minimal_policy,
};
use crate::store::aws::{AwsStore, ProbePut};
use crate::store::client::S3Settings;
use crate::store::{ListRequest, ObjectStore, StoreError, UserMeta};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckTarget {
    pub label: Option<String>,
    pub bucket: String,
    /// "" or ending in `/`.
    pub subfolder: String,
    pub s3: S3Settings,
    pub need: Mode,
    /// The form the policy is printed in.
    pub policy_form: PolicyForm,
    /// Describes where the credentials come from (never the secret).
    pub credentials: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Warning,
    Denied,
    Failed,
    Skipped,
    Unsupported,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Allowed,
    Denied,
    Untested,
    Unsupported,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    FullAccess,
    ReadOnly,
    Insufficient,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegionInfo {
    pub configured: Option<String>,
    pub detected: Option<String>,
    pub corrected: bool,
}

/// Everything `pailfs check` found out.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub connection: Option<String>,
    pub bucket: String,
    pub subfolder: String,
    pub endpoint: Option<String>,
    pub credentials: String,
    pub region: RegionInfo,
    pub steps: Vec<Step>,
    pub actions: BTreeMap<String, Access>,
    pub classification: Classification,
    pub required: Mode,
    pub missing: Vec<String>,
    pub untested: Vec<String>,
    pub policy: serde_json::Value,
    /// Where the policy goes (the IAM user, or the bucket with `principal`).
    pub policy_form: PolicyForm,
    /// The identity the credentials belong to, for a bucket policy.
    pub principal: Option<String>,
    /// A probe key that could not be removed (DeleteObject denied).
    pub leftover: Option<String>,
    pub ok: bool,
}

const ABORT: &str = "s3:AbortMultipartUpload";
/// Bound on each probe request, retries included.
const STEP_BOUND: Duration = Duration::from_secs(15);

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STEP_BOUND, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Timeout(format!(
                "no answer within {} s",
                STEP_BOUND.as_secs()
            )))
        })
}

fn access_of<T>(r: &Result<T, StoreError>) -> Access {
    match r {
        Ok(_) => Access::Allowed,
        Err(StoreError::AccessDenied(_)) => Access::Denied,
        Err(StoreError::NotImplemented(_)) => Access::Unsupported,
        Err(_) => Access::Untested,
    }
}

fn is_credential_error(e: &StoreError) -> Option<&'static str> {
    match e {
        StoreError::InvalidAccessKey => Some("the access key id is not known to the server"),
        StoreError::SignatureMismatch => Some("the secret key does not match the access key id"),
        StoreError::ExpiredToken => Some("the session token has expired"),
        _ => None,
    }
}

fn unique_suffix() -> String {
    let mut b = [0u8; 8];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ (std::process::id() as u128) << 64;
    let mut x = (seed as u64) ^ ((seed >> 64) as u64) | 1;
    for v in b.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
    b.iter().map(|v| format!("{v:02x}")).collect()
}

struct Probe {
    store: AwsStore,
    steps: Vec<Step>,
    actions: BTreeMap<String, Access>,
}

impl Probe {
    fn step(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.steps.push(Step {
            name,
            outcome,
            detail: detail.into(),
        });
    }

    fn set(&mut self, action: &str, a: Access) {
        self.actions.insert(action.to_string(), a);
    }

    fn get(&self, action: &str) -> Access {
        self.actions
            .get(action)
            .copied()
            .unwrap_or(Access::Untested)
    }
}

/// Runs the whole check.
pub async fn run(target: &CheckTarget) -> CheckReport {
    let mut s3 = target.s3.clone();
    s3.max_attempts = s3.max_attempts.clamp(1, 2);
    s3.connect_timeout = Duration::from_secs(5);
    s3.attempt_timeout = Duration::from_secs(10);
    // The check is about permissions; whether the server takes upload checksums is the
    // mount's own probe (`checksums_taken`).
    s3.requests.checksum = None;
    let mut p = Probe {
        store: AwsStore::connect(&s3, &target.bucket).await,
        steps: Vec::new(),
        actions: FULL_ACTIONS
            .iter()
            .chain([ABORT].iter())
            .map(|a| (a.to_string(), Access::Untested))
            .collect(),
    };
    let mut region = RegionInfo {
        configured: s3.region.clone(),
        detected: None,
        corrected: false,
    };
    let mut leftover = None;
    let probed = probe_all(target, &mut s3, &mut p, &mut region, &mut leftover).await;
    if probed.is_err() {
        for name in ["list", "read", "write", "delete", "multipart"] {
            if !p.steps.iter().any(|s| s.name == name) {
                p.step(name, Outcome::Skipped, "not probed after the failure above");
            }
        }
    }
    let principal = match target.policy_form {
        PolicyForm::Bucket => match crate::store::client::caller_arn(&s3).await {
            Ok(arn) => Some(arn),
            Err(e) => {
                eprintln!(
                    "pailfs: notice: cannot find the identity of these credentials (STS GetCallerIdentity: {e}); the policy is printed for the IAM user"
                );
                None
            }
        },
        PolicyForm::User => None,
    };
    finish(target, p, region, leftover, principal)
}

/// The probes stopped early; the failure that stopped them is already recorded as a step.
struct Stopped;

/// What earlier probes found out that later probes and the summary depend on.
#[derive(Default)]
struct Findings {
    /// Some answer showed that the server accepted the credentials.
    creds_proven: bool,
    /// A non-empty object under the subfolder, found by the listing.
    existing: Option<String>,
    /// The temporary probe key, chosen when writing is probed.
    probe: String,
    /// The probe object was written (and so is ours to read, change and delete).
    created: bool,
}

/// The probes in order, then the summary steps; `Err` when they had to stop early.
async fn probe_all(
    target: &CheckTarget,
    s3: &mut S3Settings,
    p: &mut Probe,
    region: &mut RegionInfo,
    leftover: &mut Option<String>,
) -> Result<(), Stopped> {
    let sub = target.subfolder.as_str();
    let mut f = Findings {
        creds_proven: probe_bucket(target, s3, p, region).await?,
        ..Findings::default()
    };
    probe_list(target, p, &mut f).await?;
    let read_done = probe_existing(p, &mut f).await;
    probe_write(sub, p, &mut f).await;
    if !read_done {
        read_probe_key(p, &f).await;
    }
    report_read(sub, p, &mut f);
    probe_acl(p, &f).await;
    probe_delete(sub, p, &f, leftover).await;
    probe_multipart(sub, p, &f).await;
    let summary = [
        credentials_step(f.creds_proven),
        bucket_step(&target.bucket, f.creds_proven),
        region_step(region, p.get("s3:GetBucketLocation")),
    ];
    p.steps.splice(0..0, summary);
    Ok(())
}

/// Credentials, bucket and region, from GetBucketLocation. A region found that differs
/// from the configured one is used for the rest of the probes. Returns whether the
/// credentials are proven.
async fn probe_bucket(
    target: &CheckTarget,
    s3: &mut S3Settings,
    p: &mut Probe,
    region: &mut RegionInfo,
) -> Result<bool, Stopped> {
    let loc = bounded(p.store.bucket_region()).await;
    p.set("s3:GetBucketLocation", access_of(&loc));
    let creds_proven = read_location(target, p, region, &loc)?;
    if let Some(d) = &region.detected
        && region.configured.as_deref() != Some(d.as_str())
    {
        region.corrected = true;
        s3.region = Some(d.clone());
        p.store = AwsStore::connect(s3, &target.bucket).await;
    }
    Ok(creds_proven)
}

/// What the GetBucketLocation answer tells: the region, whether the credentials are proven,
/// or a failure (credentials, bucket, endpoint) that stops the probes.
fn read_location(
    target: &CheckTarget,
    p: &mut Probe,
    region: &mut RegionInfo,
    loc: &Result<String, StoreError>,
) -> Result<bool, Stopped> {
    let mut creds_proven = false;
    match loc {
        Ok(r) => {
            region.detected = Some(r.clone());
            creds_proven = true;
        }
        Err(StoreError::WrongRegion(Some(r))) => region.detected = Some(r.clone()),
        Err(e) if is_credential_error(e).is_some() => {
            p.step(
                "credentials",
                Outcome::Failed,
                is_credential_error(e).unwrap_or_default(),
            );
            return Err(Stopped);
        }
        Err(StoreError::NoSuchBucket) => {
            p.step("credentials", Outcome::Ok, "accepted");
            p.step(
                "bucket",
                Outcome::Failed,
                format!("bucket {:?} does not exist at this endpoint", target.bucket),
            );
            return Err(Stopped);
        }
        Err(
            e @ (StoreError::Unreachable(_) | StoreError::Timeout(_) | StoreError::Credentials(_)),
        ) => {
            let t = crate::diagnose::Target {
                bucket: &target.bucket,
                prefix: &target.subfolder,
                endpoint: target.s3.endpoint_url.as_deref(),
                region: target.s3.region.as_deref(),
            };
            let step = if matches!(e, StoreError::Credentials(_)) {
                "credentials"
            } else {
                "endpoint"
            };
            p.step(step, Outcome::Failed, crate::diagnose::explain(e, &t));
            return Err(Stopped);
        }
        Err(_) => {}
    }
    Ok(creds_proven)
}

/// Where listing and reading are probed, as the report names it.
fn probed_at(sub: &str) -> String {
    if sub.is_empty() {
        "the bucket root".to_string()
    } else {
        format!("the subfolder {sub:?} (the bucket root is not probed)")
    }
}

/// Listing, where the credentials are meant to work. A denial is recorded and the probes
/// go on; any other failure stops them.
async fn probe_list(target: &CheckTarget, p: &mut Probe, f: &mut Findings) -> Result<(), Stopped> {
    let sub = target.subfolder.as_str();
    let req = ListRequest {
        prefix: sub.to_string(),
        delimiter: None,
        token: None,
        start_after: None,
        max_keys: 20,
    };
    let list = bounded(p.store.list(&req)).await;
    p.set("s3:ListBucket", access_of(&list));
    let where_ = probed_at(sub);
    match &list {
        Ok(page) => {
            f.creds_proven = true;
            f.existing = page
                .objects
                .iter()
                .find(|o| !o.key.ends_with('/') && o.size > 0)
                .map(|o| o.key.clone());
            p.step("list", Outcome::Ok, format!("allowed at {where_}"));
        }
        Err(e) if is_credential_error(e).is_some() => {
            p.step(
                "credentials",
                Outcome::Failed,
                is_credential_error(e).unwrap_or_default(),
            );
            return Err(Stopped);
        }
        Err(StoreError::NoSuchBucket) => {
            p.step(
                "bucket",
                Outcome::Failed,
                format!("bucket {:?} does not exist", target.bucket),
            );
            return Err(Stopped);
        }
        Err(StoreError::AccessDenied(_)) => {
            p.step(
                "list",
                Outcome::Denied,
                format!("denied at {where_} (s3:ListBucket){}", root_hint(sub)),
            );
        }
        Err(e) => {
            p.step("list", Outcome::Failed, e.to_string());
            return Err(Stopped);
        }
    }
    Ok(())
}

/// Reading the existing object the listing found, if any. Returns whether its answer
/// settled s3:GetObject.
async fn probe_existing(p: &mut Probe, f: &mut Findings) -> bool {
    let Some(key) = &f.existing else {
        return false;
    };
    let a = access_of(&bounded(p.store.get_range(key, 0..1, None)).await);
    if a == Access::Untested {
        return false;
    }
    p.set("s3:GetObject", a);
    f.creds_proven |= a == Access::Allowed;
    true
}

/// Writing, with a probe key nobody else uses.
async fn probe_write(sub: &str, p: &mut Probe, f: &mut Findings) {
    f.probe = format!("{sub}.pailfs-check-{}", unique_suffix());
    let put = bounded(p.store.put(
        &f.probe,
        Bytes::from_static(b"pailfs permission check\n"),
        &UserMeta::new(),
    ))
    .await;
    p.set("s3:PutObject", access_of(&put));
    f.created = put.is_ok();
    f.creds_proven |= f.created;
    match &put {
        Ok(_) => p.step(
            "write",
            Outcome::Ok,
            "allowed (a temporary probe object was written)",
        ),
        Err(StoreError::AccessDenied(_)) => {
            p.step("write", Outcome::Denied, "denied (s3:PutObject)")
        }
        Err(e) => p.step("write", Outcome::Failed, e.to_string()),
    }
}

/// Reading when no existing object settled it: the probe object if it was written;
/// otherwise a key that does not exist.
async fn read_probe_key(p: &mut Probe, f: &Findings) {
    let r = bounded(p.store.get_range(&f.probe, 0..1, None)).await;
    match &r {
        Ok(_) => p.set("s3:GetObject", Access::Allowed),
        // A missing key answers NoSuchKey only to those who may read it (or list).
        Err(StoreError::NotFound) if p.get("s3:ListBucket") == Access::Allowed => {
            p.set("s3:GetObject", Access::Allowed)
        }
        Err(StoreError::AccessDenied(_))
            if f.created || p.get("s3:ListBucket") == Access::Allowed =>
        {
            p.set("s3:GetObject", Access::Denied)
        }
        _ => {}
    }
}

/// The read step, from what the read probes settled.
fn report_read(sub: &str, p: &mut Probe, f: &mut Findings) {
    let read = p.get("s3:GetObject");
    p.step(
        "read",
        match read {
            Access::Allowed => Outcome::Ok,
            Access::Denied => Outcome::Denied,
            _ => Outcome::Skipped,
        },
        match read {
            Access::Allowed => "allowed".to_string(),
            Access::Denied => format!(
                "denied at {} (s3:GetObject){}",
                probed_at(sub),
                root_hint(sub)
            ),
            _ => "could not be tested: no object to read".to_string(),
        },
    );
    f.creds_proven |= read == Access::Allowed;
}

/// ACLs: read on the probe or an existing object; write only on our own probe.
async fn probe_acl(p: &mut Probe, f: &Findings) {
    if let Some(k) = if f.created {
        Some(f.probe.clone())
    } else {
        f.existing.clone()
    } {
        let a = access_of(&bounded(p.store.get_object_acl(&k)).await);
        p.set("s3:GetObjectAcl", a);
    }
    if f.created {
        let a = access_of(&bounded(p.store.put_object_acl_private(&f.probe)).await);
        p.set("s3:PutObjectAcl", a);
    }
    let (ga, pa) = (p.get("s3:GetObjectAcl"), p.get("s3:PutObjectAcl"));
    let acl_outcome = match (ga, pa) {
        (Access::Unsupported, _) | (_, Access::Unsupported) => Outcome::Unsupported,
        (Access::Allowed, Access::Allowed) => Outcome::Ok,
        (Access::Denied, _) | (_, Access::Denied) => Outcome::Denied,
        _ => Outcome::Skipped,
    };
    p.step(
        "acl",
        acl_outcome,
        format!("read ACL: {}, write ACL: {}", describe(ga), describe(pa)),
    );
}

/// Deleting: the probe, or a key that does not exist (S3 answers 204 if allowed). A probe
/// object that cannot be deleted is reported as left over.
async fn probe_delete(sub: &str, p: &mut Probe, f: &Findings, leftover: &mut Option<String>) {
    let victim = if f.created {
        f.probe.clone()
    } else {
        format!("{sub}.pailfs-check-{}", unique_suffix())
    };
    let del = bounded(p.store.delete(&victim)).await;
    p.set("s3:DeleteObject", access_of(&del));
    let probe = &f.probe;
    match &del {
        Ok(_) => p.step("delete", Outcome::Ok, "allowed"),
        Err(StoreError::AccessDenied(_)) => {
            if f.created {
                *leftover = Some(probe.clone());
                p.step(
                    "delete",
                    Outcome::Denied,
                    format!("denied (s3:DeleteObject); the probe object {probe:?} is left behind: remove it with credentials that may delete"),
                );
            } else {
                p.step("delete", Outcome::Denied, "denied (s3:DeleteObject)");
            }
        }
        Err(e) => p.step("delete", Outcome::Failed, e.to_string()),
    }
}

/// Aborting a multipart upload (what pailfs does when an upload fails).
async fn probe_multipart(sub: &str, p: &mut Probe, f: &Findings) {
    if !(f.created || p.get("s3:PutObject") == Access::Allowed) {
        p.step("multipart", Outcome::Skipped, "writing is denied");
        return;
    }
    let key = format!("{sub}.pailfs-check-{}", unique_suffix());
    match bounded(p.store.create_multipart(&key, &UserMeta::new())).await {
        Ok(id) => {
            let r = bounded(p.store.abort_multipart(&key, &id)).await;
            p.set(ABORT, access_of(&r));
            match r {
                Ok(()) => p.step("multipart", Outcome::Ok, "create and abort allowed"),
                Err(_) => p.step(
                    "multipart",
                    Outcome::Warning,
                    format!("abort denied (s3:AbortMultipartUpload, not in the minimal policy): failed large uploads leave incomplete parts until a lifecycle rule removes them (upload {key:?})"),
                ),
            }
        }
        Err(e) => p.step(
            "multipart",
            Outcome::Skipped,
            format!("could not start one: {e}"),
        ),
    }
}

/// The credentials step of the summary: accepted, or only refusals seen.
fn credentials_step(proven: bool) -> Step {
    if proven {
        Step {
            name: "credentials",
            outcome: Outcome::Ok,
            detail: "accepted".into(),
        }
    } else {
        Step {
            name: "credentials",
            outcome: Outcome::Warning,
            detail: "every request was refused (AccessDenied): the key or secret may be wrong, or the key has no access here".into(),
        }
    }
}

/// The bucket step of the summary: it exists if anything answered for it.
fn bucket_step(bucket: &str, proven: bool) -> Step {
    if proven {
        Step {
            name: "bucket",
            outcome: Outcome::Ok,
            detail: format!("{bucket:?} exists"),
        }
    } else {
        Step {
            name: "bucket",
            outcome: Outcome::Skipped,
            detail: "unknown: every request was refused".into(),
        }
    }
}

/// The region step of the summary; `location` is what GetBucketLocation was found to be.
fn region_step(region: &RegionInfo, location: Access) -> Step {
    Step {
        name: "region",
        outcome: if region.corrected {
            Outcome::Warning
        } else {
            Outcome::Ok
        },
        detail: match (&region.detected, &region.configured, region.corrected) {
            (Some(d), Some(c), true) => {
                format!("{d} (configured {c}: corrected; save --region {d})")
            }
            (Some(d), None, true) => format!("{d} (found from the bucket; none was configured)"),
            (Some(d), _, _) => d.clone(),
            (None, c, _) => format!(
                "{} (not detectable: GetBucketLocation {})",
                c.as_deref().unwrap_or("default"),
                describe(location)
            ),
        },
    }
}

/// At the bucket root, a denial may just mean the credentials are meant for a subfolder.
fn root_hint(sub: &str) -> &'static str {
    if sub.is_empty() {
        "; if these credentials are restricted to a subfolder, check with --subfolder PATH"
    } else {
        ""
    }
}

fn describe(a: Access) -> &'static str {
    match a {
        Access::Allowed => "allowed",
        Access::Denied => "denied",
        Access::Untested => "not tested",
        Access::Unsupported => "not supported by this server",
    }
}

/// The order steps are reported in, whatever order the probes ran in.
const STEP_ORDER: [&str; 11] = [
    "credentials",
    "endpoint",
    "bucket",
    "region",
    "list",
    "read",
    "write",
    "acl",
    "delete",
    "multipart",
    "",
];

fn finish(
    target: &CheckTarget,
    mut p: Probe,
    region: RegionInfo,
    leftover: Option<String>,
    principal: Option<String>,
) -> CheckReport {
    p.steps.sort_by_key(|s| {
        STEP_ORDER
            .iter()
            .position(|n| *n == s.name)
            .unwrap_or(STEP_ORDER.len())
    });
    let fine = |a: &str| matches!(p.get(a), Access::Allowed | Access::Unsupported);
    let classification = if FULL_ACTIONS.iter().all(|a| fine(a)) {
        Classification::FullAccess
    } else if READ_ONLY_ACTIONS.iter().all(|a| fine(a)) {
        Classification::ReadOnly
    } else {
        Classification::Insufficient
    };
    let missing: Vec<String> = target
        .need
        .actions()
        .iter()
        .filter(|a| p.get(a) == Access::Denied)
        .map(|a| a.to_string())
        .collect();
    let untested: Vec<String> = target
        .need
        .actions()
        .iter()
        .filter(|a| p.get(a) == Access::Untested)
        .map(|a| a.to_string())
        .collect();
    let ok = match target.need {
        Mode::Full => classification == Classification::FullAccess,
        Mode::ReadOnly => classification != Classification::Insufficient,
    };
    CheckReport {
        connection: target.label.clone(),
        bucket: target.bucket.clone(),
        subfolder: target.subfolder.clone(),
        endpoint: target.s3.endpoint_url.clone(),
        credentials: target.credentials.clone(),
        region,
        steps: p.steps,
        actions: p.actions,
        classification,
        required: target.need,
        missing,
        untested,
        policy: match &principal {
            Some(arn) => bucket_policy(target.need, &target.bucket, &target.subfolder, arn),
            None => minimal_policy(target.need, &target.bucket, &target.subfolder),
        },
        policy_form: if principal.is_some() {
            PolicyForm::Bucket
        } else {
            PolicyForm::User
        },
        principal,
        leftover,
        ok,
    }
}

/// Whether the server checks and keeps the checksum uploads carry (`--upload-checksums`): a
/// part of a multipart upload created and aborted for the purpose must come back with it.
/// `Ok` when it does, when uploads carry none, and when S3 refused the probe for lack of
/// permission (the write probe says what that means); `Err` says why not.
pub async fn checksums_taken(store: &AwsStore, prefix: &str) -> Result<(), String> {
    if store.checksum().is_none() {
        return Ok(());
    }
    let probe = format!("{prefix}.pailfs-checksum-check-{}", unique_suffix());
    let id = match bounded(store.create_multipart(&probe, &UserMeta::new())).await {
        Ok(id) => id,
        Err(StoreError::AccessDenied(_)) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let body = bytes::Bytes::from_static(b"pailfs checksum probe");
    let part = bounded(store.upload_part(&probe, &id, 1, body)).await;
    if let Err(e) = bounded(store.abort_multipart(&probe, &id)).await {
        log::warn!("could not abort the checksum probe's upload of {probe:?} ({e})");
    }
    match part {
        Ok(r) if crate::store::checksums::parse_receipt(&r).1.is_some() => Ok(()),
        Ok(_) => Err("the part came back without its checksum".into()),
        Err(StoreError::AccessDenied(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// What the write probe at mount learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteProbe {
    /// S3 authorized a PUT under the prefix.
    pub writable: bool,
    /// The server checks conditional writes (`If-Match` on a PUT).
    pub conditional_writes: bool,
}

/// The fast part of the check, run by `mount`: may these credentials write here? One PUT
/// under the mount's prefix that S3 authorizes and then refuses to store
/// ([`AwsStore::put_refused_after_authorization`]): it needs only PutObject, and no object is
/// written or deleted and no upload left open, so a versioned bucket keeps no version or
/// delete marker of it, no object event fires, and credentials without DeleteObject or
/// AbortMultipartUpload leave nothing behind. Not writable means S3 refused (read-only
/// credentials).
pub async fn can_write(store: &AwsStore, prefix: &str) -> Result<WriteProbe, StoreError> {
    let probe = format!("{prefix}.pailfs-write-check-{}", unique_suffix());
    let answer = match bounded(store.put_refused_after_authorization(&probe)).await {
        Ok(a) => a,
        Err(StoreError::AccessDenied(_)) => {
            return Ok(WriteProbe {
                writable: false,
                conditional_writes: false,
            });
        }
        Err(e) => return Err(e),
    };
    if answer == ProbePut::Stored {
        // A server that checks neither the condition nor the digest stored it.
        if let Err(e) = bounded(store.delete(&probe)).await {
            log::warn!("could not delete the write probe {probe:?} ({e}); remove it by hand");
        }
    }
    Ok(WriteProbe {
        writable: true,
        conditional_writes: answer == ProbePut::ConditionChecked,
    })
}
