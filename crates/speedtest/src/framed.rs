//! Reading and writing protocol frames on a stream (the TLS session), and pacing.

use crate::proto::{data_header, Header, HEADER_LEN, MAX_DATA};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tollway_core::wire::DecodeError;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
}

/// A frame as read: data (only its length matters) or a control message's header and payload.
#[derive(Debug)]
pub enum Frame<'a> {
    Data(usize),
    Control(Header, &'a [u8]),
}

/// Frames over a stream. `from_client`: whether the other side is the client (what frame types
/// it may send).
pub struct Framed<S> {
    pub io: S,
    from_client: bool,
    buf: Vec<u8>,
}

fn closed_or(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Closed
    } else {
        FrameError::Io(e)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(io: S, from_client: bool) -> Framed<S> {
        Framed { io, from_client, buf: vec![0u8; MAX_DATA] }
    }

    /// Read one frame. The header is checked (type, length bound) before the payload is read.
    pub async fn read_frame(&mut self) -> Result<Frame<'_>, FrameError> {
        let mut h = [0u8; HEADER_LEN];
        self.io.read_exact(&mut h).await.map_err(closed_or)?;
        let header = Header::parse(h, self.from_client)?;
        let payload = &mut self.buf[..header.len];
        self.io.read_exact(payload).await.map_err(closed_or)?;
        Ok(if header.is_data() { Frame::Data(header.len) } else { Frame::Control(header, &self.buf[..header.len]) })
    }

    /// Write a whole encoded frame (or several) and flush.
    pub async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.io.write_all(frame).await?;
        self.io.flush().await
    }

    /// Write data frames carrying `len` bytes of filler, using `block` (see [`data_block`])
    /// for whole blocks. Not flushed.
    pub async fn send_data(&mut self, block: &[u8], len: usize) -> std::io::Result<()> {
        if len == block_payload(block) {
            return self.io.write_all(block).await;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(MAX_DATA);
            self.io.write_all(&data_header(n)).await?;
            self.io.write_all(&block[HEADER_LEN..HEADER_LEN + n]).await?;
            left -= n;
        }
        Ok(())
    }
}

/// Frames per data block written at once.
pub const BLOCK_FRAMES: usize = 4;
/// Payload bytes in one data block.
pub const BLOCK_PAYLOAD: usize = BLOCK_FRAMES * MAX_DATA;

/// [`BLOCK_FRAMES`] full data frames back to back (zero filler: TLS encrypts it, and TLS 1.3
/// does not compress).
pub fn data_block() -> Vec<u8> {
    let mut v = Vec::with_capacity(BLOCK_FRAMES * (HEADER_LEN + MAX_DATA));
    for _ in 0..BLOCK_FRAMES {
        v.extend_from_slice(&data_header(MAX_DATA));
        v.resize(v.len() + MAX_DATA, 0);
    }
    v
}

fn block_payload(block: &[u8]) -> usize {
    block.len() / (HEADER_LEN + MAX_DATA) * MAX_DATA
}

/// Holds a transfer to at most `rate` bit/s on average since `start`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: Instant,
    rate_bps: Option<u64>,
}

impl Pacer {
    pub fn new(start: Instant, rate_bps: Option<u64>) -> Pacer {
        Pacer { start, rate_bps: rate_bps.filter(|r| *r > 0) }
    }

    /// Sleep until `bytes` are due at the rate (at once if unlimited or behind).
    pub async fn pace(&self, bytes: u64) {
        if let Some(rate) = self.rate_bps {
            let due = self.start + Duration::from_secs_f64(bytes as f64 * 8.0 / rate as f64);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_a_stream_and_bad_headers_are_refused_before_the_payload() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut client = Framed::new(a, false);
        let mut server = Framed::new(b, true);
        let block = data_block();
        client.send_data(&block, BLOCK_PAYLOAD).await.unwrap();
        client.send_data(&block, 100).await.unwrap();
        client.send(&crate::proto::ClientMsg::Pong { seq: 1 }.encode()).await.unwrap();
        let mut data = 0;
        loop {
            match server.read_frame().await.unwrap() {
                Frame::Data(n) => data += n,
                Frame::Control(h, p) => {
                    assert_eq!(
                        crate::proto::ClientMsg::decode(h, p).unwrap(),
                        crate::proto::ClientMsg::Pong { seq: 1 }
                    );
                    break;
                }
            }
        }
        assert_eq!(data, BLOCK_PAYLOAD + 100);
        // A server-only type from the client: rejected from its header.
        client.send(&[0x86, 0, 0]).await.unwrap();
        assert!(matches!(server.read_frame().await, Err(FrameError::Decode(DecodeError::UnknownType(0x86)))));
        drop(client);
        assert!(matches!(server.read_frame().await, Err(FrameError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_holds_the_average_rate() {
        let start = Instant::now();
        let p = Pacer::new(start, Some(8_000_000)); // 1 MB/s
        p.pace(500_000).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(499) && waited <= Duration::from_millis(501), "{waited:?}");
        let unlimited = Pacer::new(Instant::now(), None);
        let t = Instant::now();
        unlimited.pace(u64::MAX / 16).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
