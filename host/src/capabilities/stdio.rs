//! Bounded capture of a guest's stdout and stderr.
//!
//! A guest's writes always succeed, so a chatty step never fails because of
//! its printing, but only the first [`STDIO_CAPTURE_LIMIT`] bytes are kept;
//! the rest are counted.
//!
//! [`STDIO_CAPTURE_LIMIT`]: super::STDIO_CAPTURE_LIMIT

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A shared, bounded byte buffer that a guest writes its output into.
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
    limit: usize,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

/// What a guest wrote to one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapturedText {
    /// The kept bytes, decoded as UTF-8 with invalid sequences replaced.
    pub text: String,
    /// Bytes written past the limit and dropped.
    pub dropped_bytes: u64,
}

impl CapturedOutput {
    /// A buffer keeping at most `limit` bytes.
    pub fn new(limit: usize) -> CapturedOutput {
        CapturedOutput {
            inner: Arc::default(),
            limit,
        }
    }

    fn write(&self, buf: &[u8]) {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit.saturating_sub(captured.bytes.len());
        let kept = room.min(buf.len());
        captured.bytes.extend_from_slice(&buf[..kept]);
        captured.dropped += (buf.len() - kept) as u64;
    }

    /// The text captured so far.
    pub fn contents(&self) -> CapturedText {
        let captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        CapturedText {
            text: String::from_utf8_lossy(&captured.bytes).into_owned(),
            dropped_bytes: captured.dropped,
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
