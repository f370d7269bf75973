//! Serving a router: the accept loop, with a bound on open connections,
//! and each connection's limits on slow and idle clients.
//!
//! [`ServeOptions`] (in `options`) names the limits; `connection` holds
//! the watcher that applies them to each connection.

mod connection;
mod options;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub(in crate::http) use connection::ReceiveBy;
use connection::{Activity, InFlight, Tracked, watch_limits};
pub use options::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT, ServeOptions,
};

/// Serves `router` on `listener` with `options` until `shutdown`
/// completes; then stops accepting, closes the connections that are idle
/// or have not begun a request, and waits for the requests in flight to
/// be answered.
///
/// Errors accepting a connection do not stop the server: it retries, after
/// a second for errors other than a connection's own (running out of file
/// descriptors, say).
pub async fn serve_with<F>(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let limits = options.limits();
    let slots = Arc::new(Semaphore::new(
        options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = watch::channel(false);
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watcher applies the header timeout (see `connection`).
    http.header_read_timeout(None);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(_) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let activity = Arc::new(Activity::new(limits));
        let io = TokioIo::new(Tracked {
            stream,
            activity: Arc::clone(&activity),
        });
        let answer = {
            let activity = Arc::clone(&activity);
            let service = service.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                let extensions = request.extensions_mut();
                extensions.insert(ConnectInfo(peer));
                extensions.insert(ReceiveBy {
                    request: activity.request_began(),
                    activity: Arc::clone(&activity),
                });
                let answering = InFlight(Arc::clone(&activity));
                let response = hyper::service::Service::call(&service, request);
                async move {
                    let response = response.await;
                    drop(answering);
                    response
                }
            })
        };
        let connection = graceful.watch(http.serve_connection(io, answer));
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                // A client's protocol error or reset ends only its connection.
                _ = connection => {}
                () = watch_limits(&activity, stopping) => {}
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// Errors that concern one connection only (axum's list): accept the next.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
