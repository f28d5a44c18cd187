//! Frames of the Reflow sync protocol, version 1. Byte layout: docs/protocol.md.

use crate::identity::SignedChange;

/// Protocol version carried in every frame and in the ALPN.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest frame accepted or sent (bytes, header included).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// A decoded frame.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Frame {
    /// An Automerge sync message with its changes taken out, and those changes with their
    /// signatures.
    Sync {
        /// The encoded `automerge::sync::Message`, its `changes` emptied.
        message: Vec<u8>,
        /// The changes it carried, signed.
        changes: Vec<SignedChange>,
    },
    /// Changes pushed outside a sync round.
    Push {
        /// The changes, signed.
        changes: Vec<SignedChange>,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A protocol version this build does not speak.
    #[error("frame version {0} is not supported (this Reflow speaks version 1)")]
    UnknownVersion(u8),
    /// A frame type this version does not define.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The frame ends early or has bytes left over.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// Encode (length prefix included).
    pub fn encode(&self) -> Vec<u8> {
        todo!("helper: frame encoding")
    }

    /// Decode one frame body (after the length prefix has been read and checked).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        let _ = body;
        todo!("helper: frame decoding")
    }
}
