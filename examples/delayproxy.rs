//! A TCP proxy that delays every byte by a fixed time each way, for `scripts/bench`: a local
//! S3 server behind it answers like a distant one (a 10 ms delay each way is a 20 ms round
//! trip), without limiting throughput (a delay line, not a pause per chunk).
//!
//! ```text
//! delayproxy LISTEN_ADDR UPSTREAM_ADDR DELAY_MS_EACH_WAY
//! ```

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Some((at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

async fn serve(client: TcpStream, upstream: String, delay: Duration) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(delay_line(cr, sw, delay), delay_line(sr, cw, delay));
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 4 {
        eprintln!("usage: delayproxy LISTEN_ADDR UPSTREAM_ADDR DELAY_MS_EACH_WAY");
        std::process::exit(2);
    }
    let delay = Duration::from_millis(a[3].parse().expect("a delay in milliseconds"));
    let listener = TcpListener::bind(&a[1]).await.expect("listen");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(client, a[2].clone(), delay));
    }
}
