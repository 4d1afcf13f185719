//! Connections: a listener that counts them and gives each socket a write
//! deadline, so a client that stops reading and never closes is dropped.
//!
//! A stalled reader fills the socket's buffers; hyper then waits on the write
//! and stops polling the response body. Nothing in the request would ever end
//! that wait, so each socket write that cannot make progress for
//! `--write-timeout` seconds fails with `TimedOut`: hyper closes the
//! connection, the response body is dropped, and with it the engine request
//! (its sequence and KV pages) and the events it had buffered. An idle
//! keep-alive connection writes nothing, so it is never timed out by this.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// Bytes the kernel may queue for one connection (Linux doubles it for its own
/// accounting): far more than any token stream needs between two reads, and a
/// bound on what a stalled client holds.
const SEND_BUFFER: usize = 256 << 10;

/// Counters shared by every connection, for `/metrics`.
#[derive(Default, Debug)]
pub struct Conns {
    open: AtomicUsize,
    write_timeouts: AtomicU64,
}

impl Conns {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn write_timeouts(&self) -> u64 {
        self.write_timeouts.load(Ordering::Relaxed)
    }

    pub fn metrics_text(&self) -> String {
        format!(
            "# HELP owl_http_connections_open HTTP connections open now.\n# TYPE owl_http_connections_open gauge\nowl_http_connections_open {}\n\
             # HELP owl_http_write_timeouts_total Connections dropped because a write made no progress for --write-timeout (a client that stopped reading).\n# TYPE owl_http_write_timeouts_total counter\nowl_http_write_timeouts_total {}\n",
            self.open(),
            self.write_timeouts()
        )
    }
}

/// A [`TcpListener`] whose sockets carry a write deadline and are counted in [`Conns`].
pub struct TimedListener {
    inner: TcpListener,
    write_timeout: Option<Duration>,
    conns: Arc<Conns>,
}

impl TimedListener {
    /// `write_timeout` None: no deadline (a stalled client holds its connection until it closes).
    pub fn new(inner: TcpListener, write_timeout: Option<Duration>, conns: Arc<Conns>) -> Self {
        TimedListener {
            inner,
            write_timeout,
            conns,
        }
    }
}

impl axum::serve::Listener for TimedListener {
    type Io = TimedStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((s, addr)) => {
                    let _ = s.set_nodelay(true);
                    // A fixed kernel send buffer: Linux would otherwise grow it up to
                    // tcp_wmem's max (4 MiB, and over loopback at once), memory a client
                    // that stopped reading holds, and megabytes queued before the write
                    // deadline can even start.
                    let _ = socket2::SockRef::from(&s).set_send_buffer_size(SEND_BUFFER);
                    let io = TimedStream::new(s, self.write_timeout, self.conns.clone());
                    return (io, addr);
                }
                // Per-connection errors (reset before accept) are the client's; anything
                // else (out of file descriptors) is waited out, as axum's own listener does.
                Err(e) if is_connection_error(&e) => continue,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A socket whose writes fail with `TimedOut` after making no progress for the deadline.
pub struct TimedStream<S> {
    inner: S,
    timeout: Option<Duration>,
    /// Armed when a write first returns Pending; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    conns: Arc<Conns>,
}

impl<S> TimedStream<S> {
    pub fn new(inner: S, timeout: Option<Duration>, conns: Arc<Conns>) -> Self {
        conns.open.fetch_add(1, Ordering::Relaxed);
        TimedStream {
            inner,
            timeout,
            stalled: None,
            conns,
        }
    }

    /// Called with the inner write's result: progress disarms the deadline,
    /// Pending arms it, and a passed deadline turns Pending into an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(t) = self.timeout else {
                    return Poll::Pending;
                };
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.stalled = None;
                        self.conns.write_timeouts.fetch_add(1, Ordering::Relaxed);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client read nothing for {} s", t.as_secs_f64()),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S> Drop for TimedStream<S> {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A writer to a peer that never reads: the write fails after the deadline,
    /// is counted, and the open count falls when the stream is dropped.
    #[tokio::test]
    async fn a_stalled_write_times_out() {
        let conns = Arc::new(Conns::default());
        let (a, _b) = tokio::io::duplex(64);
        let mut s = TimedStream::new(a, Some(Duration::from_millis(200)), conns.clone());
        assert_eq!(conns.open(), 1);
        let chunk = [7u8; 1024];
        let err = loop {
            if let Err(e) = s.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(conns.write_timeouts(), 1);
        drop(s);
        assert_eq!(conns.open(), 0);
    }

    /// A peer that reads, however slowly, resets the deadline with each read.
    #[tokio::test]
    async fn progress_resets_the_deadline() {
        use tokio::io::AsyncReadExt;
        let conns = Arc::new(Conns::default());
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = TimedStream::new(a, Some(Duration::from_secs(1)), conns.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while n < 64 * 40 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                n += b.read(&mut buf).await.unwrap();
            }
        });
        // 40 reads 50 ms apart: twice the deadline in all, and none missed.
        s.write_all(&[1u8; 64 * 40]).await.unwrap();
        reader.await.unwrap();
        assert_eq!(conns.write_timeouts(), 0);
    }
}
