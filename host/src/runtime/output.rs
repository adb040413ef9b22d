//! The capped sink behind a guest's stdout and stderr: it keeps the last `cap` bytes written,
//! never refuses a write (a guest that prints without bound runs unaffected) and remembers
//! whether anything was dropped. Implements the WASI p2 output-stream traits (and the
//! `AsyncWrite` that wasmtime-wasi asks of every `StdoutStream`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write permit handed to the guest at once.
const WRITE_PERMIT: usize = 64 * 1024;

/// The retained tail of an output stream.
#[derive(Debug)]
struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    truncated: bool,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.cap {
            self.truncated |= bytes.len() > self.cap || !self.buf.is_empty();
            self.buf.clear();
            self.buf.extend(&bytes[bytes.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.truncated = true;
            self.buf.drain(..overflow);
        }
        self.buf.extend(bytes);
    }
}

/// A cloneable handle on one capped output; every clone writes to the same tail.
#[derive(Debug, Clone)]
pub(crate) struct CappedOutput {
    tail: Arc<Mutex<Tail>>,
}

impl CappedOutput {
    /// A sink that keeps the last `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        Self { tail: Arc::new(Mutex::new(Tail { buf: VecDeque::new(), cap, truncated: false })) }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner).push(bytes);
    }

    /// The retained bytes as (lossy) UTF-8, and whether anything was dropped. A character cut in
    /// half by the truncation is skipped rather than shown as a replacement character.
    pub(crate) fn contents(&self) -> (String, bool) {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = tail.buf.iter().copied().collect();
        let start = if tail.truncated {
            bytes.iter().take(3).take_while(|b| (**b & 0b1100_0000) == 0b1000_0000).count()
        } else {
            0
        };
        (String::from_utf8_lossy(&bytes[start..]).into_owned(), tail.truncated)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let out = CappedOutput::new(10);
        out.write_bytes(b"abc");
        out.write_bytes(b"def");
        assert_eq!(out.contents(), ("abcdef".to_string(), false));
    }

    #[test]
    fn exactly_full_is_not_truncated() {
        let out = CappedOutput::new(4);
        out.write_bytes(b"ab");
        out.write_bytes(b"cd");
        assert_eq!(out.contents(), ("abcd".to_string(), false));
        let out = CappedOutput::new(4);
        out.write_bytes(b"abcd");
        assert_eq!(out.contents(), ("abcd".to_string(), false));
    }

    #[test]
    fn keeps_the_last_bytes() {
        let out = CappedOutput::new(5);
        out.write_bytes(b"hello ");
        out.write_bytes(b"world");
        assert_eq!(out.contents(), ("world".to_string(), true));
        out.write_bytes(b"!!");
        assert_eq!(out.contents(), ("rld!!".to_string(), true));
    }

    #[test]
    fn one_huge_write_keeps_its_tail() {
        let out = CappedOutput::new(3);
        out.write_bytes(b"0123456789");
        assert_eq!(out.contents(), ("789".to_string(), true));
    }

    #[test]
    fn unbounded_output_stays_capped_and_never_errors() {
        let mut out = CappedOutput::new(10_000);
        let chunk = Bytes::from(vec![b'x'; 4096]);
        for _ in 0..5_000 {
            assert!(out.check_write().is_ok_and(|n| n > 0));
            assert!(OutputStream::write(&mut out, chunk.clone()).is_ok());
        }
        let (text, truncated) = out.contents();
        assert_eq!(text.len(), 10_000);
        assert!(truncated);
    }

    #[test]
    fn a_split_character_is_skipped() {
        let out = CappedOutput::new(4);
        out.write_bytes("aé€".as_bytes()); // 1 + 2 + 3 bytes: the tail starts inside `é`
        assert_eq!(out.contents(), ("€".to_string(), true));
    }

    #[test]
    fn clones_share_the_tail() {
        let out = CappedOutput::new(10);
        let other = out.clone();
        other.write_bytes(b"x");
        out.write_bytes(b"y");
        assert_eq!(out.contents().0, "xy");
    }
}
