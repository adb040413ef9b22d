//! The HTTP server itself: an accept loop over hyper's HTTP/1 connections (what `axum::serve`
//! does, plus what it cannot be told): a header-read timeout, a cap on open connections, load
//! shedding with 503 instead of accept errors, and a bounded drain at shutdown.
//!
//! - **Header-read timeout.** A request's head must arrive within `header_read_timeout` of the
//!   moment the connection waits for one (hyper's HTTP/1 `header_read_timeout`); the timer also
//!   runs while a keep-alive connection sits idle between requests, so it is the idle timeout
//!   too. A half-sent request, or a silent connection, is closed when it fires.
//! - **Connection cap.** Every connection holds a permit of a semaphore of `max_connections`.
//!   When none is left, a new connection is still accepted (so the listen queue does not fill
//!   up and the kernel does not leave clients hanging) and answered at once with `503` and
//!   `Retry-After: 1` in the API's error shape, then closed after the client's request is read
//!   away (at most 1 s; closing with unread input would reset the connection before the client
//!   reads the answer). At most [`SHED_AT_ONCE`] connections are being answered so; beyond
//!   that they are closed at once. The default cap stays below the open-file limit
//!   ([`default_max_connections`]), so accepting never fails with "too many open files"; if it
//!   still does (other descriptors), the loop waits briefly and goes on.
//! - **Shutdown.** When `stop` fires, the listener closes, every connection is asked to finish
//!   (`graceful_shutdown`: idle ones close, busy ones after their answer; long-polls answer
//!   with the current status, see `invocations::result`), and one that takes longer than
//!   [`DRAIN`] is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections answered 503 at the same time at most.
pub const SHED_AT_ONCE: usize = 64;

/// Longest a connection may take to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// See the module documentation.
    pub header_read_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

/// Half the process's open-file limit (soft), at most 4096; 512 where the limit is unknown.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<usize>().ok())
    });
    soft.map_or(512, |n| (n / 2).clamp(16, 4096))
}

/// The 503 a connection over the cap gets.
fn busy_response() -> Vec<u8> {
    let body = r#"{"error":{"code":"overloaded","message":"too many open connections; retry later"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection over the cap with 503 and closes it (see the module documentation).
fn shed(mut stream: TcpStream, shedding: &Arc<Semaphore>, tracker: &TaskTracker) {
    let Ok(permit) = shedding.clone().try_acquire_owned() else {
        return; // dropping the stream closes it
    };
    tracker.spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&busy_response()).await?;
            stream.shutdown().await?;
            let mut buf = [0u8; 4096];
            while stream.read(&mut buf).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// Serves `app` on `listener` until `stop`, then drains the connections (see the module
/// documentation). Returns once every connection is closed.
pub async fn serve(listener: TcpListener, app: Router, cfg: ServeConfig, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let shedding = Arc::new(Semaphore::new(SHED_AT_ONCE));
    let tracker = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(cfg.header_read_timeout).keep_alive(true);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // A connection that failed before we took it is not our problem; anything else
                // (out of file descriptors) is waited out briefly, not spun on.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) {
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "cannot accept connections; retrying");
                        last_warning = Some(tokio::time::Instant::now());
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shed(stream, &shedding, &tracker);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
