//! One-line explanations of S3 failures for people: what failed, where, and what to do.
//!
//! Used by `mount` when its first request fails and by `check`. Never includes a secret: the
//! messages are built from the error kind, the bucket, the endpoint and the access key id only.

use crate::store::StoreError;

/// Where a request went, for messages.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
}

impl Target<'_> {
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn endpoint(&self) -> String {
        self.endpoint.unwrap_or("AWS S3").to_string()
    }
}

/// Explains `e`, which came from listing `t`.
pub fn explain(e: &StoreError, t: &Target<'_>) -> String {
    match e {
        StoreError::InvalidAccessKey => format!(
            "the access key id is not known to {}: check AWS_ACCESS_KEY_ID, --profile or the connection's key",
            t.endpoint()
        ),
        StoreError::SignatureMismatch => format!(
            "the secret key does not match the access key id at {}: check AWS_SECRET_ACCESS_KEY or the connection's secret",
            t.endpoint()
        ),
        StoreError::ExpiredToken => {
            "the session token has expired: refresh the credentials (aws sso login, or new temporary keys)".to_string()
        }
        StoreError::AccessDenied(msg) => format!(
            "access denied listing {} ({}): the key or secret is wrong, or the credentials lack s3:ListBucket there; run `pailfs check` to see which permissions are missing",
            t.url(),
            if msg.is_empty() { "403" } else { msg.as_str() }
        ),
        StoreError::NoSuchBucket => format!(
            "bucket {:?} does not exist at {}: check the bucket name, --endpoint-url and --region",
            t.bucket,
            t.endpoint()
        ),
        StoreError::WrongRegion(Some(r)) => format!(
            "bucket {:?} is in region {r}, not {}: pass --region {r}",
            t.bucket,
            t.region.unwrap_or("the configured one")
        ),
        StoreError::WrongRegion(None) => format!(
            "bucket {:?} is not in region {}: pass the bucket's --region",
            t.bucket,
            t.region.unwrap_or("(none configured)")
        ),
        StoreError::Credentials(d) if d.contains(".aws/login/") => format!(
            "the profile's `aws login` session has no credentials cached here, or they expired: run `aws login` for that profile, then try again ({})",
            first_line(d)
        ),
        // The default chain ends with instance metadata: its failure means nothing was found.
        StoreError::Credentials(d)
            if ["no credentials", "not loaded", "IMDS"]
                .iter()
                .any(|w| d.contains(w)) =>
        {
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use --profile, save a connection, or pass --no-sign-request for a public bucket".to_string()
        }
        StoreError::Credentials(d) => format!(
            "cannot load the AWS credentials: {}; check the profile, connection or credential process",
            first_line(d)
        ),
        StoreError::Unreachable(d) if d.contains("certificate") => format!(
            "the TLS certificate of {} is not trusted ({}): pass --ca-bundle FILE with the certificate authority that signed it (or set AWS_CA_BUNDLE)",
            t.endpoint(),
            first_line(d)
        ),
        StoreError::Unreachable(d) | StoreError::Timeout(d) => format!(
            "cannot reach the S3 endpoint {}: check --endpoint-url and the network ({})",
            t.endpoint(),
            first_line(d)
        ),
        StoreError::Throttled(m) => format!("{} is throttling requests or unavailable ({m}); try again later", t.endpoint()),
        StoreError::Other(m) if m.contains("credentials") => {
            "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use --profile, or save a connection"
                .to_string()
        }
        other => format!("listing {} at {} failed: {}", t.url(), t.endpoint(), first_line(&other.to_string())),
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.len() > 300 {
        format!(
            "{}...",
            &line[..line.char_indices().take(300).last().map_or(0, |(i, _)| i)]
        )
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_what_to_do() {
        let t = Target {
            bucket: "b",
            prefix: "p/",
            endpoint: Some("http://127.0.0.1:1"),
            region: Some("garage"),
        };
        let cases = [
            StoreError::InvalidAccessKey,
            StoreError::SignatureMismatch,
            StoreError::AccessDenied(String::new()),
            StoreError::NoSuchBucket,
            StoreError::WrongRegion(Some("eu-west-1".into())),
            StoreError::Unreachable("dispatch failure\nio error".into()),
        ];
        for e in cases {
            let m = explain(&e, &t);
            assert!(!m.contains('\n'), "{m}");
            assert!(
                m.contains("check") || m.contains("pass") || m.contains("run"),
                "{m}"
            );
        }
        assert!(
            explain(&StoreError::WrongRegion(Some("eu-west-1".into())), &t)
                .contains("--region eu-west-1")
        );
    }
}
