//! A fault-injecting HTTP proxy between pailfs and the S3 server, for the failure tests.
//!
//! Real networks and real S3 fail in ways a local server never does: throttling (`503
//! SlowDown`), connections reset before an answer, bodies that stop half way, `500` answers
//! with an XML error document. The proxy forwards every request unchanged (the `Host` header
//! too, so SigV4 signatures stay valid) and injects those faults on demand, counting each one
//! so a test can assert that the faults it relies on really happened.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// A body cut: GETs of keys containing `key_part` whose range spans object offset `at`
/// (strictly inside it) deliver the bytes before `at`, then the connection breaks.
#[derive(Clone, Debug)]
pub struct Cut {
    pub key_part: String,
    pub at: u64,
}

/// What to inject. Change it at any time; requests in flight keep what they saw.
#[derive(Default)]
pub struct Faults {
    /// Percent of requests (0..=100) answered `503 SlowDown` or with a reset, alternately.
    pub fail_percent: AtomicU32,
    pub cut: Mutex<Option<Cut>>,
    /// The `n`th (1-based) GET of a key containing the string gets a `500` with an XML body.
    pub error_on_get: Mutex<Option<(String, u32)>>,
    /// Rewrites the body of every LIST answer (a hostile or broken server).
    pub list_rewrite: Mutex<Option<Rewrite>>,
    /// Removes `x-amz-checksum-*` headers from answers, as a server that ignores upload
    /// checksums answers (it neither checks nor keeps them).
    pub strip_checksums: std::sync::atomic::AtomicBool,
}

/// A rewrite of a LIST answer's XML body.
pub type Rewrite = Arc<dyn Fn(String) -> String + Send + Sync>;

/// What was injected, and how much went through.
#[derive(Default, Debug)]
pub struct Counts {
    pub forwarded: AtomicU64,
    /// Requests with an `Authorization` header (signed ones).
    pub signed: AtomicU64,
    /// Requests carrying a session token (`x-amz-security-token`).
    pub with_token: AtomicU64,
    /// PUTs carrying data (objects and parts, not server-side copies).
    pub data_puts: AtomicU64,
    /// Requests carrying a checksum of their body (`x-amz-checksum-crc32c` and the like).
    pub checksummed: AtomicU64,
    /// Requests whose payload is not signed (`x-amz-content-sha256: UNSIGNED-PAYLOAD`).
    pub unsigned_payload: AtomicU64,
    /// Requests that said the requester pays and named the expected bucket owner.
    pub paid: AtomicU64,
    /// Requests that named the expected bucket owner, and GetBucketLocation requests (which
    /// take an owner but no payer).
    pub owned: AtomicU64,
    pub locations: AtomicU64,
    /// DELETEs of objects (not of multipart uploads) and PUTs of objects (not of parts).
    pub object_deletes: AtomicU64,
    pub object_puts: AtomicU64,
    pub slowdowns: AtomicU64,
    pub resets: AtomicU64,
    pub cuts: AtomicU64,
    pub errors: AtomicU64,
    gets_matching: AtomicU32,
    dice: AtomicU64,
}

pub struct FaultProxy {
    pub url: String,
    pub faults: Arc<Faults>,
    pub counts: Arc<Counts>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let faults = Arc::new(Faults::default());
        let counts = Arc::new(Counts::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream: hyper::Uri = upstream.parse().unwrap();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Body> =
            Client::builder(TokioExecutor::new()).build(connector);
        let (f, c) = (faults.clone(), counts.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (f, c, client, upstream) =
                    (f.clone(), c.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, f.clone(), c.clone(), client.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            url,
            faults,
            counts,
            _runtime: runtime,
        }
    }

    pub fn set_fail_percent(&self, p: u32) {
        self.faults.fail_percent.store(p, Ordering::SeqCst);
    }

    pub fn set_cut(&self, cut: Option<Cut>) {
        *self.faults.cut.lock().unwrap() = cut;
    }

    pub fn set_error_on_get(&self, key_part: &str, nth: u32) {
        self.counts.gets_matching.store(0, Ordering::SeqCst);
        *self.faults.error_on_get.lock().unwrap() = Some((key_part.to_string(), nth));
    }

    pub fn set_list_rewrite(&self, r: Option<Rewrite>) {
        *self.faults.list_rewrite.lock().unwrap() = r;
    }

    pub fn count(&self, which: fn(&Counts) -> &AtomicU64) -> u64 {
        which(&self.counts).load(Ordering::SeqCst)
    }
}

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
const INTERNAL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><Resource>injected</Resource></Error>";

/// A cheap deterministic dice roll (splitmix64 of a counter), in 0..100.
fn roll(c: &Counts) -> u32 {
    let mut z = c
        .dice
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % 100) as u32
}

/// `bytes=a-b` → `a..b+1`.
fn parse_range(h: Option<&hyper::header::HeaderValue>) -> Option<(u64, u64)> {
    let s = h?.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse::<u64>().ok()? + 1))
}

async fn handle(
    req: Request<Incoming>,
    faults: Arc<Faults>,
    counts: Arc<Counts>,
    client: Client<HttpConnector, Body>,
    upstream: hyper::Uri,
) -> Result<Response<Body>, BoxError> {
    let h = req.headers();
    if h.contains_key("x-amz-expected-bucket-owner") {
        counts.owned.fetch_add(1, Ordering::SeqCst);
    }
    if req.uri().query().is_some_and(|q| q == "location") {
        counts.locations.fetch_add(1, Ordering::SeqCst);
    }
    if h.get("x-amz-request-payer")
        .is_some_and(|v| v == "requester")
        && h.contains_key("x-amz-expected-bucket-owner")
    {
        counts.paid.fetch_add(1, Ordering::SeqCst);
    }
    if h.contains_key("authorization") {
        counts.signed.fetch_add(1, Ordering::SeqCst);
    }
    if h.contains_key("x-amz-security-token") {
        counts.with_token.fetch_add(1, Ordering::SeqCst);
    }
    let sums = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];
    if sums
        .iter()
        .any(|a| h.contains_key(format!("x-amz-checksum-{a}").as_str()))
    {
        counts.checksummed.fetch_add(1, Ordering::SeqCst);
    }
    if h.get("x-amz-content-sha256")
        .is_some_and(|v| v == "UNSIGNED-PAYLOAD")
    {
        counts.unsigned_payload.fetch_add(1, Ordering::SeqCst);
    }
    let upload = req.uri().query().is_some_and(|q| q.contains("uploadId"));
    if !upload && req.method() == hyper::Method::DELETE {
        counts.object_deletes.fetch_add(1, Ordering::SeqCst);
    }
    if !upload && req.method() == hyper::Method::PUT && !h.contains_key("x-amz-copy-source") {
        counts.object_puts.fetch_add(1, Ordering::SeqCst);
    }
    if req.method() == hyper::Method::PUT && !h.contains_key("x-amz-copy-source") {
        counts.data_puts.fetch_add(1, Ordering::SeqCst);
    }
    let p = faults.fail_percent.load(Ordering::SeqCst);
    if p > 0 && roll(&counts) < p {
        // Drain the request first so the client is not still sending when we answer.
        let _ = req.into_body().collect().await;
        if roll(&counts) % 2 == 0 {
            counts.slowdowns.fetch_add(1, Ordering::SeqCst);
            return Ok(full(StatusCode::SERVICE_UNAVAILABLE, SLOW_DOWN));
        }
        counts.resets.fetch_add(1, Ordering::SeqCst);
        return Err("injected reset".into());
    }
    let is_get = req.method() == hyper::Method::GET;
    let path = req.uri().path().to_string();
    if is_get {
        let target = faults.error_on_get.lock().unwrap().clone();
        if let Some((part, nth)) = target
            && path.contains(&part)
            && req.uri().query().is_none_or(|q| !q.contains("list-type"))
        {
            let n = counts.gets_matching.fetch_add(1, Ordering::SeqCst) + 1;
            if n == nth {
                counts.errors.fetch_add(1, Ordering::SeqCst);
                return Ok(full(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL));
            }
        }
    }
    let cut = if is_get {
        let cut = faults.cut.lock().unwrap().clone();
        match (cut, parse_range(req.headers().get(hyper::header::RANGE))) {
            (Some(c), Some((a, b))) if path.contains(&c.key_part) && a < c.at && c.at < b => {
                Some((c.at - a) as usize)
            }
            _ => None,
        }
    } else {
        None
    };
    let is_list = is_get && req.uri().query().is_some_and(|q| q.contains("list-type"));
    let rewrite = if is_list {
        faults.list_rewrite.lock().unwrap().clone()
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    let mut uri = upstream.clone().into_parts();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = hyper::Uri::from_parts(uri)?;
    let req = Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed());
    let resp = client.request(req).await?;
    counts.forwarded.fetch_add(1, Ordering::SeqCst);
    let (mut parts, body) = resp.into_parts();
    if faults.strip_checksums.load(Ordering::SeqCst) {
        let names: Vec<_> = parts
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-amz-checksum-"))
            .cloned()
            .collect();
        for n in names {
            parts.headers.remove(n);
        }
    }
    if let Some(rw) = rewrite {
        let text = String::from_utf8_lossy(&body.collect().await?.to_bytes()).into_owned();
        let new = rw(text);
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
        return Ok(Response::from_parts(
            parts,
            Full::new(Bytes::from(new)).map_err(|e| match e {}).boxed(),
        ));
    }
    let body: Body = match cut {
        Some(at) if parts.status.is_success() => {
            let data = body.collect().await?.to_bytes();
            if at >= data.len() {
                Full::new(data).map_err(|e| match e {}).boxed()
            } else {
                counts.cuts.fetch_add(1, Ordering::SeqCst);
                // The bytes before the cut go out (headers and all), then the connection dies,
                // as when a network path breaks. Erroring at once would let the server drop
                // the connection before even the headers were flushed.
                let head = data.slice(..at);
                let frames = futures::stream::unfold(0u8, move |step| {
                    let head = head.clone();
                    async move {
                        match step {
                            0 => Some((Ok(Frame::data(head)), 1)),
                            1 => {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                Some((Err::<Frame<Bytes>, BoxError>("injected cut".into()), 2))
                            }
                            _ => None,
                        }
                    }
                });
                StreamBody::new(frames).boxed()
            }
        }
        _ => body.map_err(|e| Box::new(e) as BoxError).boxed(),
    };
    Ok(Response::from_parts(parts, body))
}
