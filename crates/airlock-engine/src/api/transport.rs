//! The connection side of the API: accepting on the Unix socket, the connection cap, the peer
//! check, timeouts, and handing each connection to hyper (HTTP/1.1) and the axum router.
//!
//! Every answer, including those to requests hyper would reject itself, carries the JSON error
//! body. hyper answers a malformed request head with a bare `400` and no body, so the head is
//! read and checked here first (with `httparse`, which hyper itself parses with) and then
//! replayed to hyper; one request per connection keeps that check in front of every request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, Uri};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant, Sleep};

use super::error::ApiError;

/// How much the server lets a connection have: see [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more get `503 busy` at once.
    pub max_connections: usize,
    /// The whole request head must arrive within this, and so must the whole body; a
    /// client that stops reading the answer for this long is dropped.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_head: usize,
    /// Largest request body (a spec is a few KiB).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            idle_timeout: Duration::from_secs(30),
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
        }
    }
}

/// Accepts connections until the listener fails, each on its own task.
pub(super) async fn accept_loop(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    limits: Limits,
    owner_uid: u32,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if transient(&e) => {
                // Out of descriptors or memory: let running connections finish some.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let router = router.clone();
                tokio::spawn(async move {
                    serve_connection(stream, router, limits, owner_uid).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    answer(&mut stream, &ApiError::busy(), &limits).await;
                });
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.kind() == io::ErrorKind::Interrupted
        || e.kind() == io::ErrorKind::ConnectionAborted
        || [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
            .iter()
            .any(|errno| e.raw_os_error() == Some(*errno as i32))
}

/// One connection: peer check, the request head checked, one request through the router.
async fn serve_connection(
    mut stream: UnixStream,
    router: axum::Router,
    limits: Limits,
    owner_uid: u32,
) {
    let refused = match stream.peer_cred() {
        Ok(creds) => super::authorize(creds.uid(), owner_uid).err(),
        Err(e) => Some(ApiError::new(
            403,
            "forbidden",
            format!("cannot read the peer's credentials: {e}"),
            None,
            airlock_model::exit::USAGE,
        )),
    };
    if let Some(refused) = refused {
        // Nothing of the request reaches the router; `answer` reads it (and drops it) so the
        // client sees the 403 rather than a reset.
        answer(&mut stream, &refused, &limits).await;
        return;
    }
    let head = match read_head(&mut stream, &limits).await {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(error) => {
            answer(&mut stream, &error, &limits).await;
            return;
        }
    };
    let io = TokioIo::new(Conn {
        prefix: head,
        read: 0,
        stream,
        write_timeout: limits.idle_timeout,
        write_stall: None,
    });
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(route(router, request, limits).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false)
        // A client may shut down its side once it has sent the request.
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    // Errors here are the client's going away or stalling; there is no one left to tell.
    let _ = http.serve_connection(io, service).await;
}

/// Reads the body (within the limits) and runs the request through the router.
async fn route(
    mut router: axum::Router,
    request: Request<Incoming>,
    limits: Limits,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    // `/v1/sandboxes/` is `/v1/sandboxes`.
    let path = parts.uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match parts.uri.query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            parts.uri = uri;
        }
    }
    let bytes = match timeout(
        limits.idle_timeout,
        axum::body::to_bytes(Body::new(body), limits.max_body),
    )
    .await
    {
        Err(_) => return ApiError::timeout("the request body").into_response(),
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("reading the request body: {e}")).into_response()
        }
        Ok(Ok(bytes)) => bytes,
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    match tower_service::Service::call(&mut router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Reads the request head and checks it: `Ok(None)` if the client closed without sending
/// anything. The bytes read (the head and whatever followed it) are for hyper to parse again.
async fn read_head(stream: &mut UnixStream, limits: &Limits) -> Result<Option<Vec<u8>>, ApiError> {
    let deadline = Instant::now() + limits.idle_timeout;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) if buf.is_empty() => return Err(ApiError::timeout("a request")),
            Err(_) => return Err(ApiError::timeout("the request head")),
            Ok(Err(e)) => return Err(ApiError::bad_request(format!("reading the request: {e}"))),
            Ok(Ok(0)) if buf.is_empty() => return Ok(None),
            Ok(Ok(0)) => return Err(ApiError::bad_request("the request ended early")),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                check_head(&request, limits)?;
                return Ok(Some(buf));
            }
            Ok(httparse::Status::Partial) if buf.len() <= limits.max_head => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ApiError::bad_request(format!(
                    "the request head is over {} bytes",
                    limits.max_head
                )))
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "malformed HTTP request: {e}"
                )))
            }
        }
    }
}

/// What hyper would refuse with a bare 400, refused here first: a request target that is not
/// a URI. And bodies are sized by one `Content-Length` of at most `max_body` bytes.
fn check_head(request: &httparse::Request<'_, '_>, limits: &Limits) -> Result<(), ApiError> {
    let target = request.path.unwrap_or_default();
    if let Err(e) = Uri::try_from(target) {
        return Err(ApiError::bad_request(format!(
            "bad request target {target:?}: {e}"
        )));
    }
    let mut length: Option<u64> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiError::bad_request(
                "Transfer-Encoding is not supported; send Content-Length",
            ));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            // Digits only, as hyper takes it (`u64::from_str` would also take `+2`).
            let value = std::str::from_utf8(header.value)
                .ok()
                .map(|v| v.trim_matches([' ', '\t']))
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("bad Content-Length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(ApiError::bad_request("conflicting Content-Length headers"));
            }
            length = Some(value);
        }
    }
    if length.unwrap_or(0) > limits.max_body as u64 {
        return Err(ApiError::too_large(limits.max_body));
    }
    Ok(())
}

/// Answers outside the router (refused peer, bad head, busy): the error, then the rest of
/// what the client sends is read and dropped for a moment, because closing a socket with
/// unread data resets it and the client would never see the answer.
async fn answer(stream: &mut UnixStream, error: &ApiError, limits: &Limits) {
    let bytes = error.to_http1();
    if timeout(limits.idle_timeout, stream.write_all(&bytes))
        .await
        .map_or(true, |r| r.is_err())
    {
        return;
    }
    let _ = stream.shutdown().await;
    let budget = limits.max_head + limits.max_body;
    let _ = timeout(Duration::from_secs(1), async {
        let mut drained = 0;
        let mut chunk = [0u8; 4096];
        while drained < budget {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The connection as hyper sees it: first the bytes [`read_head`] already read, then the
/// socket; a write the client does not take for `write_timeout` fails.
struct Conn {
    prefix: Vec<u8>,
    read: usize,
    stream: UnixStream,
    write_timeout: Duration,
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading the answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.write_stall = None;
                ready
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.progressed(result, cx)
    }
}
