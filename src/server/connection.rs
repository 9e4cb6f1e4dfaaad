//! The accept loop (HTTP/1.1 over hyper, with a header timeout, a connection limit and a
//! bounded shutdown) and reading a request body within its limits.

use super::*;

/// The accept loop: HTTP/1.1 over hyper with a header timeout, at most `max` connections at
/// once, and a shutdown that no client can hold open past `grace`. (`axum::serve` has none
/// of the three.)
pub(super) struct Connections {
    pub(super) header_timeout: Duration,
    pub(super) max: usize,
    pub(super) grace: Duration,
    /// Connections per client ([`ServeConfig::max_connections_per_client`]).
    pub(super) per_client: Arc<OpenConnections>,
}

impl Connections {
    pub(super) async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max));
        let (closing, closed) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next() => continue,
                a = async {
                    // A free slot first: past the limit, clients wait in the accept queue.
                    let permit = slots.clone().acquire_owned().await.expect("never closed");
                    (permit, listener.accept().await)
                } => a,
            };
            let (permit, stream, peer) = match accepted {
                (p, Ok((stream, peer))) => (p, stream, peer),
                (_, Err(e)) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    eprintln!("idgraph: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Past the client's limit: closed at once (dropped with its slot).
            let Some(held) = self.per_client.open(peer) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service =
                hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
                    app.clone(),
                    move |mut r: hyper::Request<hyper::body::Incoming>| {
                        r.extensions_mut().insert(ConnectInfo(peer));
                        r
                    },
                ));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(self.header_timeout);
            let mut closed = closed.clone();
            tasks.spawn(async move {
                let _permit = (permit, held);
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = closed.changed() => {}
                }
                // Finish the request in flight, then close (no new request on this connection).
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            });
        }
        drop(listener);
        let _ = closing.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            eprintln!(
                "idgraph: {} connections still open {:?} after shutdown: dropped",
                tasks.len(),
                self.grace
            );
            tasks.shutdown().await;
        }
    }
}

/// A request body, read by [`read_body`] within the limits.
pub(super) type Body = axum::body::Body;

/// Why a request body was not read.
pub(super) enum BodyError {
    /// More than the limit of bytes.
    TooLarge,
    /// Not all there within the body timeout.
    Slow,
    /// The connection broke.
    Broken(String),
}

/// Reads a body of at most `max` bytes that arrives within `within`: neither a huge body nor
/// a slow one holds memory or a connection for longer than the limits say.
pub(super) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
    within: Duration,
) -> std::result::Result<Bytes, BodyError> {
    use axum::body::HttpBody;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(BodyError::Slow))
}
