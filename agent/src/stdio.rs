//! Process output buffered for the host to pull. A pump task reads the
//! pipe into a bounded buffer; `read` returns what is there (up to a limit),
//! waits while it is empty, and returns an empty chunk at end of stream.
//! When the buffer is full the pump stops reading, so a host that does not
//! read applies back-pressure to the process instead of growing guest memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

/// Largest chunk one read returns.
pub const DEFAULT_CHUNK: usize = 64 * 1024;
/// Buffer bound per stream.
pub const BUFFER_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct State {
    data: VecDeque<u8>,
    eof: bool,
}

/// One buffered output stream.
#[derive(Debug, Default)]
pub struct OutputBuf {
    state: Mutex<State>,
    /// Signalled when data or EOF arrives.
    readable: Notify,
    /// Signalled when a reader made room.
    writable: Notify,
}

impl OutputBuf {
    /// A buffer already at end of stream holding `data`.
    pub fn closed_with(data: &[u8]) -> Arc<Self> {
        let b = Arc::new(OutputBuf::default());
        b.push(data);
        b.close();
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends bytes.
    pub fn push(&self, bytes: &[u8]) {
        self.lock().data.extend(bytes);
        self.readable.notify_waiters();
        self.readable.notify_one();
    }

    /// Marks end of stream.
    pub fn close(&self) {
        self.lock().eof = true;
        self.readable.notify_waiters();
        self.readable.notify_one();
    }

    /// Next chunk of at most `max` bytes (0 = [`DEFAULT_CHUNK`]); empty
    /// means end of stream.
    pub async fn read(&self, max: usize) -> Vec<u8> {
        let max = if max == 0 {
            DEFAULT_CHUNK
        } else {
            max.min(DEFAULT_CHUNK)
        };
        loop {
            let notified = self.readable.notified();
            {
                let mut st = self.lock();
                if !st.data.is_empty() {
                    let n = st.data.len().min(max);
                    let chunk: Vec<u8> = st.data.drain(..n).collect();
                    drop(st);
                    self.writable.notify_one();
                    return chunk;
                }
                if st.eof {
                    return Vec::new();
                }
            }
            notified.await;
        }
    }

    async fn wait_for_room(&self) {
        loop {
            let notified = self.writable.notified();
            if self.lock().data.len() < BUFFER_LIMIT {
                return;
            }
            notified.await;
        }
    }

    /// Spawns the pump from `src` into this buffer.
    pub fn pump<R: AsyncRead + Unpin + Send + 'static>(self: &Arc<Self>, mut src: R) {
        let buf = self.clone();
        tokio::spawn(async move {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                buf.wait_for_room().await;
                match src.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.push(&chunk[..n]),
                }
            }
            buf.close();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(flavor = "current_thread")]
    async fn chunks_then_empty_at_eof() {
        let (mut w, r) = tokio::io::duplex(64);
        let buf = Arc::new(OutputBuf::default());
        buf.pump(r);
        w.write_all(b"hello world").await.unwrap();
        let first = buf.read(5).await;
        assert_eq!(first, b"hello");
        drop(w);
        let mut rest = Vec::new();
        loop {
            let c = buf.read(0).await;
            if c.is_empty() {
                break;
            }
            rest.extend(c);
        }
        assert_eq!(rest, b" world");
        assert!(buf.read(0).await.is_empty(), "EOF stays EOF");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_waiting_on_empty_wakes_on_data() {
        let buf = Arc::new(OutputBuf::default());
        let b2 = buf.clone();
        let reader = tokio::spawn(async move { b2.read(0).await });
        tokio::task::yield_now().await;
        buf.push(b"x");
        assert_eq!(reader.await.unwrap(), b"x");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_buffer_is_bounded() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let buf = Arc::new(OutputBuf::default());
        buf.pump(r);
        let big = vec![7u8; BUFFER_LIMIT * 2];
        let writer = tokio::spawn(async move { w.write_all(&big).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let held = buf.lock().data.len();
        assert!(held <= BUFFER_LIMIT + 16 * 1024, "held {held}");
        let mut total = 0;
        while total < BUFFER_LIMIT * 2 {
            total += buf.read(0).await.len();
        }
        writer.await.unwrap().unwrap();
        assert_eq!(total, BUFFER_LIMIT * 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn closed_with_gives_data_then_eof() {
        let b = OutputBuf::closed_with(b"sh: nope: not found\n");
        assert_eq!(b.read(0).await, b"sh: nope: not found\n");
        assert!(b.read(0).await.is_empty());
    }
}
