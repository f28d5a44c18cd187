//! Sans-I/O sync session: what to send a peer next, given the local replica and what the peer
//! sent. Built on Automerge's sync protocol (`automerge::sync`) with a signature sidecar:
//! changes never enter the document through Automerge's sync, they are handed to the caller
//! (who passes them through [`crate::Replica::receive`], which checks signatures and
//! membership). No tokio, no sockets: the iroh transport (`net`) and the deterministic
//! simulator in this module's tests drive it.
//!
//! Frame layout: docs/protocol.md.

pub mod frame;

pub use frame::{Frame, FrameError, MAX_FRAME_LEN, PROTOCOL_VERSION};

use automerge::ChangeHash;

use crate::identity::{DeviceId, NetworkId, SignedChange};
use crate::replica::Replica;

/// Why a sync session cannot go on with a peer. The connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A frame could not be decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer broke the protocol (e.g. a sync message that does not decode).
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
}

/// The sync state of one peer connection for one network. See the module documentation.
#[derive(Debug)]
pub struct SyncSession {
    network: NetworkId,
    peer: DeviceId,
    state: automerge::sync::State,
}

impl SyncSession {
    /// A session with a peer we have no saved state for.
    pub fn new(network: NetworkId, peer: DeviceId) -> SyncSession {
        SyncSession {
            network,
            peer,
            state: automerge::sync::State::new(),
        }
    }

    /// The network.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The peer.
    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// The heads the peer last told us it has, if it has told us.
    pub fn peer_heads(&self) -> Option<&[ChangeHash]> {
        self.state.their_heads.as_deref()
    }

    /// The next frame to send, if any: call after connecting, after every frame handled,
    /// and after the local replica changed. `None` when the peer is up to date or a message
    /// is in flight.
    pub fn poll_transmit(&mut self, replica: &Replica) -> Option<Frame> {
        let _ = replica;
        todo!("helper: sync session")
    }

    /// Handle a frame from the peer. Returns the signed changes it carried, for the caller to
    /// pass to [`crate::Replica::receive`] (or `DurableReplica::receive`) before the next
    /// [`SyncSession::poll_transmit`].
    pub fn handle_frame(
        &mut self,
        replica: &Replica,
        frame: Frame,
    ) -> Result<Vec<SignedChange>, SyncError> {
        let _ = (replica, frame);
        todo!("helper: sync session")
    }

    /// A frame pushing changes the peer does not have yet (just made locally, or just
    /// accepted from another peer), so that they arrive without a sync round.
    pub fn push(&mut self, changes: &[SignedChange]) -> Option<Frame> {
        let _ = changes;
        todo!("helper: sync session")
    }
}
