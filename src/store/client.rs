//! Builds the aws-sdk-s3 client from pailfs settings on top of aws-config's standard chain.
//!
//! Credentials, region and endpoint come from the environment, `~/.aws` profiles (SSO included)
//! and instance metadata exactly as the AWS CLI finds them; explicit settings (a flag or a saved
//! connection) override them. Retries, backoff with jitter, SigV4 and timeouts are the SDK's;
//! this file only chooses the numbers. The SDK's HTTP client sets `TCP_NODELAY` on its sockets,
//! so small requests are not held back by Nagle's algorithm on our side.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};

/// Explicit S3 settings; `None` means "whatever the standard chain says".
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Static credentials (from a saved connection); never logged.
    pub static_keys: Option<StaticKeys>,
    /// Unsigned requests, no credentials looked for (`--no-sign-request`: public buckets).
    pub anonymous: bool,
    /// A command printing credentials as JSON (AWS's `credential_process` format).
    pub credential_process: Option<String>,
    /// PEM certificates trusted beside the system's roots (`--ca-bundle`, `AWS_CA_BUNDLE`): a
    /// private endpoint's certificate authority.
    pub ca_bundle: Option<Vec<u8>>,
    pub force_path_style: bool,
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    /// Bound on one attempt of one request (the whole response for a GET).
    pub attempt_timeout: Duration,
    /// Counts HTTP attempts (retries included), for the mount's statistics.
    pub attempts: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Encryption, storage class, payer and expected owner of every request.
    pub requests: super::requests::RequestOptions,
}

/// An access key pair. `Debug` masks the secret.
#[derive(Clone)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"****")
            .finish()
    }
}

/// The default `--max-attempts`: attempts per S3 request, retries included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

impl S3Settings {
    /// Settings with the defaults pailfs mounts with.
    pub fn with_defaults() -> Self {
        S3Settings {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(60),
            ..Default::default()
        }
    }
}

/// True when the endpoint is an address that cannot take virtual-hosted bucket names
/// (an IP address or `localhost`), so path-style addressing is the only one that works.
pub fn needs_path_style(endpoint: &str) -> bool {
    let host = endpoint_host(endpoint);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

/// The host of an endpoint URL, without scheme, port, path or IPv6 brackets.
pub fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let host_port = rest.split(['/', '?']).next().unwrap_or("");
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// The S3 endpoint aws-config finds when none is given explicitly, as the S3 client itself
/// would: `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then the profile's `endpoint_url`
/// (its `services` section included); none of them when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`
/// is true. `None`: AWS itself. Found once, at start, so the cache directory, the messages and
/// the addressing style all know where the bucket is.
pub fn configured_endpoint(s: &S3Settings) -> Option<String> {
    let profile = s.profile.clone();
    // Profile files are read asynchronously; a thread of its own keeps this callable from
    // anywhere, inside a runtime or not.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            // A region and no credentials: nothing but the endpoint is looked up.
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .no_credentials();
            if let Some(p) = &profile {
                loader = loader.profile_name(p);
            }
            let shared = without_ignored_endpoints(loader.load().await).await;
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id("S3")
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .ok()?;
            shared
                .service_config()
                .and_then(|c| c.load_config(key))
                .or_else(|| shared.endpoint_url().map(str::to_string))
                .filter(|e| !e.is_empty())
        })
    })
    .join()
    .ok()
    .flatten()
}

/// The S3 client looks up its endpoint in the environment itself (`AWS_ENDPOINT_URL_S3`, then
/// `AWS_ENDPOINT_URL`, then the profile), and aws-config 1.8 applies
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` only to the shared endpoint: this wrapper answers
/// no endpoint to that lookup when the setting is on, and passes every other setting through.
#[derive(Debug)]
struct WithoutEndpoints(aws_config::SdkConfig);

impl aws_types::service_config::LoadServiceConfig for WithoutEndpoints {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        if key.profile() == "endpoint_url" {
            return None;
        }
        self.0.service_config()?.load_config(key)
    }
}

/// `shared`, with configured endpoints dropped when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`
/// (or the default profile's `ignore_configured_endpoint_urls`) is true.
async fn without_ignored_endpoints(shared: aws_config::SdkConfig) -> aws_config::SdkConfig {
    use aws_config::default_provider::ignore_configured_endpoint_urls as ignore;
    let conf = aws_config::provider_config::ProviderConfig::without_region();
    if !ignore::ignore_configured_endpoint_urls_provider(&conf)
        .await
        .unwrap_or(false)
    {
        return shared;
    }
    let mut b = shared.clone().into_builder();
    b.set_service_config(Some(WithoutEndpoints(shared)));
    b.build()
}

/// Builds a client. Loading may read profile files and query instance metadata.
pub async fn build_client(s: &S3Settings) -> aws_sdk_s3::Client {
    s3_client(s, &shared_config(s).await)
}

/// The identity the credentials of `s` belong to (an IAM ARN), from STS GetCallerIdentity,
/// which needs no permission. An S3-compatible endpoint is asked too (moto answers STS there).
pub async fn caller_arn(s: &S3Settings) -> Result<String, String> {
    let shared = shared_config(s).await;
    let mut b = aws_sdk_sts::config::Builder::from(&shared);
    if shared.region().is_none() {
        b = b.region(Region::new("us-east-1"));
    }
    let out = aws_sdk_sts::Client::from_conf(b.build())
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| aws_sdk_sts::error::DisplayErrorContext(&e).to_string())?;
    out.arn()
        .map(str::to_string)
        .ok_or_else(|| "STS answered without an ARN".to_string())
}

/// The SDK's own HTTPS client (rustls), trusting `pem`'s certificates beside the system's
/// roots. aws-config reads no `AWS_CA_BUNDLE`, so this is how a private endpoint's authority is
/// trusted.
fn https_client_trusting(pem: &[u8]) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    let store = tls::TrustStore::default().with_pem_certificate(pem.to_vec());
    let context = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .expect("a TLS context of a trust store always builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

/// What aws-config finds, with pailfs's explicit settings on top.
async fn shared_config(s: &S3Settings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(s.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(s.connect_timeout)
                .operation_attempt_timeout(s.attempt_timeout)
                .build(),
        );
    if let Some(p) = &s.profile {
        loader = loader.profile_name(p);
    }
    if let Some(pem) = &s.ca_bundle {
        loader = loader.http_client(https_client_trusting(pem));
    }
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &s.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    if s.anonymous {
        loader = loader.no_credentials();
    } else if let Some(c) = &s.credential_process {
        loader = loader.credentials_provider(
            aws_config::credential_process::CredentialProcessProvider::new(c.clone()),
        );
    } else if let Some(k) = &s.static_keys {
        loader = loader.credentials_provider(Credentials::new(
            k.access_key_id.clone(),
            k.secret_access_key.clone(),
            k.session_token.clone(),
            None,
            "pailfs-connection",
        ));
    }
    let shared = loader.load().await;
    if s.endpoint_url.is_some() {
        return shared;
    }
    without_ignored_endpoints(shared).await
}

fn s3_client(s: &S3Settings, shared: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(shared)
        // Checksums only where S3 requires them: S3-compatible servers differ in support for
        // the newer trailing-checksum encoding, and TLS already protects the bytes in transit.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    let endpoint = s
        .endpoint_url
        .clone()
        .or(shared.endpoint_url().map(str::to_string));
    let path_style = s.force_path_style || endpoint.as_deref().is_some_and(needs_path_style);
    builder = builder.force_path_style(path_style);
    if shared.region().is_none() {
        // S3-compatible servers often ignore the region; AWS itself redirects, which the
        // connection check reports.
        builder = builder.region(Region::new("us-east-1"));
    }
    if let Some(a) = &s.attempts {
        builder = builder.interceptor(super::metered::AttemptCounter(a.clone()));
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_for_addresses_only() {
        assert!(needs_path_style("http://127.0.0.1:3900"));
        assert!(needs_path_style("http://localhost:9000/"));
        assert!(needs_path_style("http://[::1]:9000"));
        assert!(!needs_path_style("https://s3.eu-west-1.amazonaws.com"));
        assert!(!needs_path_style("https://minio.example.org"));
    }

    #[test]
    fn debug_masks_the_secret() {
        let k = StaticKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: None,
        };
        let s = format!("{k:?}");
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("wJalrXUtnFEMI"));
    }
}
