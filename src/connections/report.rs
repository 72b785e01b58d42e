//! `pailfs check` output: one line per step for people, or the whole report as JSON.

use std::fmt::Write;

use super::check::{CheckReport, Classification, Outcome};
use super::policy::PolicyForm;

fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "[ok]  ",
        Outcome::Warning => "[warn]",
        Outcome::Denied => "[no]  ",
        Outcome::Failed => "[FAIL]",
        Outcome::Skipped => "[skip]",
        Outcome::Unsupported => "[n/a] ",
    }
}

pub fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::FullAccess => "full access",
        Classification::ReadOnly => "read-only",
        Classification::Insufficient => "insufficient",
    }
}

/// The report for people.
pub fn text(r: &CheckReport) -> String {
    let mut out = String::new();
    let label = r
        .connection
        .as_ref()
        .map(|l| format!(" (connection {l:?})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Checking s3://{}/{}{label} at {} with {}",
        r.bucket,
        r.subfolder,
        r.endpoint.as_deref().unwrap_or("AWS S3"),
        r.credentials
    );
    for s in &r.steps {
        let _ = writeln!(out, "  {} {:<12} {}", mark(s.outcome), s.name, s.detail);
    }
    let _ = writeln!(out, "Result: {}", classification_name(r.classification));
    if !r.missing.is_empty() {
        let _ = writeln!(
            out,
            "Missing for {}: {}",
            r.required.name(),
            r.missing.join(", ")
        );
    }
    if !r.untested.is_empty() {
        let _ = writeln!(out, "Could not be tested: {}", r.untested.join(", "));
    }
    let verdict = if r.ok {
        format!(
            "These credentials allow {} as this connection needs.",
            r.required.name()
        )
    } else {
        format!(
            "These credentials do NOT allow {} as this connection needs.",
            r.required.name()
        )
    };
    let _ = writeln!(out, "{verdict}");
    let _ = match (&r.policy_form, &r.principal) {
        (PolicyForm::Bucket, Some(arn)) => writeln!(
            out,
            "Minimal bucket policy for {} on s3://{}/{} (Bucket policy: put it on the bucket, in the S3 console under Permissions; its Principal is these credentials' identity, {arn}):",
            r.required.name(),
            r.bucket,
            r.subfolder
        ),
        _ => writeln!(
            out,
            "Minimal IAM policy for {} on s3://{}/{} (attach it to the IAM user or role these credentials belong to; --bucket-policy prints it for the bucket instead):",
            r.required.name(),
            r.bucket,
            r.subfolder
        ),
    };
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&r.policy).unwrap_or_default()
    );
    out
}

/// The report for scripts.
pub fn json(r: &CheckReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|_| "{}".into())
}
