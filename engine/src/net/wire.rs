//! Length-prefixed frames on a QUIC stream.
//!
//! A frame on the wire is what [`Frame::encode`] returns: a 4-byte big-endian length, then
//! that many bytes of frame body for [`Frame::decode`]. The length is checked against
//! [`crate::sync::MAX_FRAME_LEN`] by [`Frame::read_len`] as soon as its 4 bytes are read,
//! before the body is allocated.

use iroh::endpoint::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};

use crate::sync::frame::LEN_PREFIX;
use crate::sync::{Frame, FrameError};

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadFrameError {
    /// The bytes are not a valid frame (or the announced length is over the limit): the
    /// peer broke the protocol.
    Frame(FrameError),
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The stream or connection failed.
    Read(ReadError),
}

impl std::fmt::Display for ReadFrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFrameError::Frame(e) => e.fmt(f),
            ReadFrameError::Truncated => f.write_str("the stream ended in the middle of a frame"),
            ReadFrameError::Read(e) => write!(f, "read failed: {e}"),
        }
    }
}

/// How much of a frame body is read (and allocated) at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Read one frame. `Ok(None)` if the peer finished the stream cleanly between frames.
pub(crate) async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>, ReadFrameError> {
    read_frame_limited(recv, crate::sync::MAX_FRAME_LEN).await
}

/// [`read_frame`], refusing a frame whose body is over `max` bytes before reading it (the
/// first frame of a device that is not a member is read with
/// [`crate::sync::MAX_REDEEM_LEN`]).
pub(crate) async fn read_frame_limited(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<Frame>, ReadFrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => return Err(ReadFrameError::Truncated),
        Err(ReadExactError::ReadError(e)) => return Err(ReadFrameError::Read(e)),
    }
    let len = Frame::read_len(prefix).map_err(ReadFrameError::Frame)?;
    if len > max {
        return Err(ReadFrameError::Frame(FrameError::TooLong { len, max }));
    }
    // The body grows as its bytes arrive, never by more than 64 KiB ahead of them: a length
    // prefix alone allocates nothing large.
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        let start = body.len();
        let end = len.min(start + READ_CHUNK);
        body.resize(end, 0);
        match recv.read_exact(&mut body[start..end]).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(_)) => return Err(ReadFrameError::Truncated),
            Err(ReadExactError::ReadError(e)) => return Err(ReadFrameError::Read(e)),
        }
    }
    Frame::decode_limited(&body, max)
        .map(Some)
        .map_err(ReadFrameError::Frame)
}

/// Write one encoded frame (as [`Frame::encode`] made it).
pub(crate) async fn write_frame(send: &mut SendStream, encoded: &[u8]) -> Result<(), WriteError> {
    send.write_all(encoded).await
}
