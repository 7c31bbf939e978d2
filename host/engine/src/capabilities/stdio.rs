//! Bounded capture of a guest's stdout and stderr.
//!
//! Only the first [`STDIO_CAPTURE_LIMIT`] bytes of each stream are kept;
//! the rest are counted. Every byte also counts against the step's log
//! volume ([`LogVolume`], shared with its log records): the write that
//! passes that limit fails, and the step ends with a `logs` limit error.
//!
//! [`STDIO_CAPTURE_LIMIT`]: super::STDIO_CAPTURE_LIMIT

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::limits::{Limit, LimitExceeded};
use crate::logs::CapturedText;

/// Bytes a step has logged and printed, against its `logs` limit. Shared
/// by its log buffer, stdout and stderr.
#[derive(Clone, Debug)]
pub struct LogVolume {
    inner: Arc<Volume>,
}

#[derive(Debug)]
struct Volume {
    used: AtomicU64,
    limit: u64,
}

impl LogVolume {
    /// A counter allowing `limit` bytes.
    pub fn new(limit: u64) -> LogVolume {
        LogVolume {
            inner: Arc::new(Volume {
                used: AtomicU64::new(0),
                limit,
            }),
        }
    }

    /// Counts `bytes`; false once the total is past the limit.
    pub fn add(&self, bytes: usize) -> bool {
        let used = self.inner.used.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        used <= self.inner.limit
    }

    /// The exceeded limit, once the total went past it.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        let used = self.inner.used.load(Ordering::Relaxed);
        (used > self.inner.limit).then(|| {
            LimitExceeded::new(
                Limit::Logs,
                self.inner.limit,
                Some(format!(
                    "the step logged or printed more than {}",
                    crate::limits::format_size(self.inner.limit)
                )),
            )
        })
    }
}

/// A shared, bounded byte buffer that a guest writes its output into.
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
    limit: usize,
    volume: LogVolume,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

impl CapturedOutput {
    /// A buffer keeping at most `limit` bytes, counting every byte written
    /// against `volume`.
    pub fn new(limit: usize, volume: LogVolume) -> CapturedOutput {
        CapturedOutput {
            inner: Arc::default(),
            limit,
            volume,
        }
    }

    /// Keeps what fits; false when the write took the step past its log
    /// volume.
    fn write(&self, buf: &[u8]) -> bool {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit.saturating_sub(captured.bytes.len());
        let kept = room.min(buf.len());
        captured.bytes.extend_from_slice(&buf[..kept]);
        captured.dropped += (buf.len() - kept) as u64;
        self.volume.add(buf.len())
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
        if self.write(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::QuotaExceeded,
                "the step's log volume limit is exceeded",
            )))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
