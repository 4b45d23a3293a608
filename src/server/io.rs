//! The byte stream under a connection, with a write deadline: when the client stops
//! reading, the socket (or TLS) buffer fills, writes stay pending, and hyper stops polling
//! the response body — so no timer of the body can fire. Here, a write that has been
//! pending for `client_write_timeout` (no byte accepted since the first pending attempt)
//! fails with `TimedOut`, which ends the connection and drops its responses, and with them
//! their upstream streams.

use std::future::Future as _;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner` with a deadline on pending writes.
pub struct WriteDeadline<I> {
    inner: I,
    timeout: Duration,
    /// Armed at the first pending write since a write last made progress.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<I> WriteDeadline<I> {
    pub fn new(inner: I, timeout: Duration) -> Self {
        WriteDeadline { inner, timeout, timer: Box::pin(tokio::time::sleep(timeout)), armed: false }
    }

    /// Account for the result of a write (or flush) attempt.
    fn track<T>(&mut self, cx: &mut Context<'_>, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    self.timer.as_mut().reset(Instant::now() + self.timeout);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing for client_write_timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.track(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteDeadline;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_write_pending_past_the_timeout_fails() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = WriteDeadline::new(near, Duration::from_millis(50));
        io.write_all(&[0; 16]).await.unwrap();
        // Nothing is read: the next write stays pending, then fails.
        let err = io.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        // The peer was open all along, with the first 16 bytes waiting.
        let mut buf = [0u8; 16];
        far.read_exact(&mut buf).await.unwrap();
    }
}
