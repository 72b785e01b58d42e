//! The minimal IAM policies pailfs needs, with the bucket and subfolder filled in.
//!
//! Full access: `s3:ListBucket`, `s3:GetBucketLocation`, `s3:PutObject`, `s3:PutObjectAcl`,
//! `s3:GetObject`, `s3:GetObjectAcl`, `s3:DeleteObject`. Read-only: `s3:GetObject`,
//! `s3:ListBucket`, `s3:GetBucketLocation`. Bucket-level actions apply to the bucket ARN
//! (listing restricted to the subfolder with an `s3:prefix` condition); object actions to
//! `bucket/subfolder/*`. `GetBucketLocation` has no prefix, so it gets its own statement.

use serde_json::{Value, json};

/// What the connection needs to be able to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Full,
    ReadOnly,
}

pub const FULL_ACTIONS: [&str; 7] = [
    "s3:ListBucket",
    "s3:GetBucketLocation",
    "s3:PutObject",
    "s3:PutObjectAcl",
    "s3:GetObject",
    "s3:GetObjectAcl",
    "s3:DeleteObject",
];

pub const READ_ONLY_ACTIONS: [&str; 3] = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"];

impl Mode {
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Mode::Full => &FULL_ACTIONS,
            Mode::ReadOnly => &READ_ONLY_ACTIONS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full access",
            Mode::ReadOnly => "read-only",
        }
    }
}

/// The policy document for `mode` on `bucket`, restricted to `subfolder` ("" or ending in `/`).
pub fn minimal_policy(mode: Mode, bucket: &str, subfolder: &str) -> Value {
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let objects_arn = format!("arn:aws:s3:::{bucket}/{subfolder}*");
    let object_actions: Vec<&str> = mode
        .actions()
        .iter()
        .copied()
        .filter(|a| !matches!(*a, "s3:ListBucket" | "s3:GetBucketLocation"))
        .collect();
    let mut statements = Vec::new();
    if subfolder.is_empty() {
        statements.push(json!({
            "Sid": "PailfsBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": bucket_arn,
        }));
    } else {
        statements.push(json!({
            "Sid": "PailfsListSubfolder",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [subfolder, format!("{subfolder}*")]}},
        }));
        statements.push(json!({
            "Sid": "PailfsBucketLocation",
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation"],
            "Resource": bucket_arn,
        }));
    }
    statements.push(json!({
        "Sid": "PailfsObjects",
        "Effect": "Allow",
        "Action": object_actions,
        "Resource": objects_arn,
    }));
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Where a policy goes: attached to the IAM user (or role) whose credentials these are, or on
/// the bucket with that identity as its Principal (the form bucket owners paste).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyForm {
    User,
    Bucket,
}

/// [`minimal_policy`] as a bucket policy granting it to `principal` (an IAM ARN).
pub fn bucket_policy(mode: Mode, bucket: &str, subfolder: &str, principal: &str) -> Value {
    let mut p = minimal_policy(mode, bucket, subfolder);
    if let Some(statements) = p["Statement"].as_array_mut() {
        for s in statements {
            s["Principal"] = json!({ "AWS": principal });
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(p: &Value) -> Vec<String> {
        let mut v: Vec<String> = p["Statement"]
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

    #[test]
    fn full_policy_has_exactly_the_seven_actions() {
        let p = minimal_policy(Mode::Full, "b", "");
        let mut want: Vec<String> = FULL_ACTIONS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(actions(&p), want);
        assert_eq!(p["Statement"][1]["Resource"], "arn:aws:s3:::b/*");
    }

    #[test]
    fn the_bucket_form_grants_the_same_actions_to_the_principal() {
        let arn = "arn:aws:iam::123456789012:user/u";
        let p = bucket_policy(Mode::Full, "b", "s/", arn);
        assert_eq!(actions(&p), actions(&minimal_policy(Mode::Full, "b", "s/")));
        for s in p["Statement"].as_array().unwrap() {
            assert_eq!(s["Principal"]["AWS"], arn);
        }
    }

    #[test]
    fn read_only_policy_scoped_to_a_subfolder() {
        let p = minimal_policy(Mode::ReadOnly, "b", "path/to/sub/");
        let mut want: Vec<String> = READ_ONLY_ACTIONS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(actions(&p), want);
        assert_eq!(
            p["Statement"][2]["Resource"],
            "arn:aws:s3:::b/path/to/sub/*"
        );
        assert_eq!(
            p["Statement"][0]["Condition"]["StringLike"]["s3:prefix"][1],
            "path/to/sub/*"
        );
    }
}
