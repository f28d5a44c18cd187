//! The iroh transport of the sync protocol.
//!
//! One iroh endpoint per node, whose secret key is the device key: the endpoint id *is* the
//! [`DeviceId`], authenticated by the QUIC/TLS handshake. Each network the node holds is
//! served under its own ALPN, [`alpn`] = `reflow/<protocol version>/<network id hex>`, so a
//! peer of another network (or speaking another protocol version) is refused by the TLS
//! handshake itself, before any byte of the ledger moves.
//!
//! On a connection, one bi-directional QUIC stream carries the frames of the sync protocol
//! ([`crate::sync::Frame`]), each preceded by its length; the length is checked against
//! [`crate::sync::MAX_FRAME_LEN`] before anything is allocated. The dialer writes the first frame. The
//! accepting node checks that the remote device is a member (any role) of the network in its
//! replica; if not, it answers the dialer's first frame with a
//! [`Frame::Refuse`](crate::sync::Frame::Refuse) frame (a [`RefuseCode`] and a readable
//! reason) and closes the connection with that code, and the dialer's `connect` returns
//! [`NetError::Refused`]. A frame that is malformed, too long, or breaks the protocol closes
//! that one connection (refused with [`RefuseCode::ProtocolViolation`]); the node goes on
//! syncing with everyone else.
//!
//! The node that drives all this is [`crate::node::Node`].

mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use iroh::endpoint::{ConnectError, ConnectingError, ConnectionError, TransportErrorCode};
use iroh::{EndpointAddr, TransportAddr};
use serde::{Deserialize, Serialize};

use crate::identity::{DeviceId, NetworkId};
use crate::sync::{RefuseCode, PROTOCOL_VERSION};

pub(crate) use wire::{read_frame, read_frame_limited, write_frame, ReadFrameError};

pub use crate::sync::alpn;

/// The network an ALPN of this protocol version names, if it is one.
pub fn network_of_alpn(alpn: &[u8]) -> Option<NetworkId> {
    let text = std::str::from_utf8(alpn).ok()?;
    let rest = text.strip_prefix(&format!("reflow/{PROTOCOL_VERSION}/"))?;
    rest.parse().ok()
}

/// Where a device can be dialed: its id (the iroh endpoint id) and the addresses it listens
/// on. Serializable, for tickets and address books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAddr {
    /// The device (and endpoint) id.
    pub device: DeviceId,
    /// Direct UDP addresses.
    #[serde(default)]
    pub direct: Vec<SocketAddr>,
    /// Relay servers it can be reached through (URLs).
    #[serde(default)]
    pub relays: Vec<String>,
}

impl PeerAddr {
    /// The address of a device known only by id (a node with address lookup may find it).
    pub fn new(device: DeviceId) -> PeerAddr {
        PeerAddr {
            device,
            direct: Vec::new(),
            relays: Vec::new(),
        }
    }

    pub(crate) fn from_endpoint_addr(addr: &EndpointAddr) -> Option<PeerAddr> {
        Some(PeerAddr {
            device: DeviceId::from_bytes(addr.id.as_bytes()).ok()?,
            direct: addr.ip_addrs().copied().collect(),
            relays: addr.relay_urls().map(|u| u.to_string()).collect(),
        })
    }

    pub(crate) fn to_endpoint_addr(&self) -> Result<EndpointAddr, NetError> {
        let id = iroh::EndpointId::from_bytes(self.device.as_bytes()).map_err(|_| {
            NetError::Core(crate::IdentityError::InvalidKey(self.device.to_string()).into())
        })?;
        let mut addrs: Vec<TransportAddr> =
            self.direct.iter().copied().map(TransportAddr::Ip).collect();
        for r in &self.relays {
            let url = r
                .parse()
                .map_err(|_| NetError::InvalidRelayUrl(r.clone()))?;
            addrs.push(TransportAddr::Relay(url));
        }
        Ok(EndpointAddr::from_parts(id, addrs))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        for a in &self.direct {
            write!(f, " {a}")?;
        }
        for r in &self.relays {
            write!(f, " {r}")?;
        }
        Ok(())
    }
}

/// QUIC application close codes. A refusal closes with its [`RefuseCode`]'s number (after
/// the [`crate::sync::Frame::Refuse`] frame, if the stream was open); these are the others.
pub(crate) mod close_code {
    /// A normal close (disconnect, end of stream).
    pub const DONE: u32 = 0;
    /// The closing node is shutting down.
    pub const SHUTTING_DOWN: u32 = 0x100;
    /// The closing node could not store what it received.
    pub const STORAGE_FAILURE: u32 = 0x101;
    /// A wait timed out.
    pub const TIMEOUT: u32 = 0x102;
    /// A normal close asked for by the closing node's user ([`crate::node::Node::disconnect`]):
    /// the peer does not reconnect on its own.
    pub const DISCONNECTED: u32 = 0x103;
}

/// What can go wrong in the node and its transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// An error of the ledger, replica or store.
    #[error(transparent)]
    Core(#[from] crate::Error),

    /// The data directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The endpoint could not be bound.
    #[error("could not bind the network endpoint on {addr}: {detail}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// iroh's error.
        detail: String,
    },

    /// A relay URL in the configuration does not parse.
    #[error("`{0}` is not a relay URL")]
    InvalidRelayUrl(String),

    /// The node was closed.
    #[error("the node is closed")]
    Closed,

    /// The node holds no replica of the network.
    #[error("this node has no replica of network {network}: create or join it first")]
    UnknownNetwork {
        /// The network.
        network: NetworkId,
    },

    /// The node holds the network but could not open its replica (see
    /// [`crate::node::NetworkStatus`]): nothing of it is read, written or served until a
    /// Reflow that can read it opens it. Its stored data is kept as it is.
    #[error("network {network} is unavailable on this node: {reason} (its stored data is kept as it is)")]
    NetworkUnavailable {
        /// The network.
        network: NetworkId,
        /// Why, by kind.
        kind: crate::error::UnavailableKind,
        /// Why, for people.
        reason: String,
    },

    /// `join` for a network the node already holds.
    #[error("this node already holds network {network}: connect to peers instead of joining")]
    AlreadyJoined {
        /// The network.
        network: NetworkId,
    },

    /// Dialing one's own device.
    #[error("a node cannot connect to itself")]
    SelfConnect,

    /// The peer could not be reached (no route, no answer, address lookup failed).
    #[error("could not reach {peer}: {detail}")]
    Unreachable {
        /// The peer.
        peer: DeviceId,
        /// What failed.
        detail: String,
    },

    /// The peer's endpoint does not serve this network under this protocol version: it is a
    /// node of another network (or of another protocol version). Refused by the handshake.
    #[error("{peer} does not serve network {network} with protocol version {version}: it is not a node of this network (or speaks another version); refused at the handshake")]
    NetworkNotServed {
        /// The peer.
        peer: DeviceId,
        /// The network asked for.
        network: NetworkId,
        /// Our protocol version.
        version: u8,
    },

    /// The peer refused the connection and said why.
    #[error("{peer} refused the connection ({code}): {reason}")]
    Refused {
        /// The peer.
        peer: DeviceId,
        /// Why, as a code.
        code: RefuseCode,
        /// The peer's reason, as it gave it.
        reason: String,
    },

    /// The peer is not a member of the network in this node's replica, so this node will not
    /// sync with it.
    #[error("{peer} is not a member of network {network} in this replica: not syncing with it")]
    PeerNotAMember {
        /// The peer.
        peer: DeviceId,
        /// The network.
        network: NetworkId,
    },

    /// A step took longer than allowed.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// The limit.
        after: Duration,
        /// The step.
        waiting_for: &'static str,
    },

    /// The connection broke.
    #[error("the connection to {peer} was lost: {detail}")]
    ConnectionLost {
        /// The peer.
        peer: DeviceId,
        /// What happened.
        detail: String,
    },

    /// The peer sent something that breaks the protocol: the connection was closed.
    #[error("protocol violation by {peer}: {detail}")]
    Protocol {
        /// The peer.
        peer: DeviceId,
        /// What it did.
        detail: String,
    },

    /// The node asked to redeem an invite (a ticket's inviter) refused it and said why: the
    /// code is one of the invite codes of [`RefuseCode`] (expired, already redeemed, wrong
    /// secret, invalid, …). Nothing was written on either side.
    #[error("{inviter} refused the invite ({code}): {reason}")]
    InviteRefused {
        /// The node that refused it.
        inviter: DeviceId,
        /// Why, as a code.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
    },

    /// A join could not start a replica from what the admin sent.
    #[error("joining network {network} through {peer} failed: {detail}")]
    JoinFailed {
        /// The network.
        network: NetworkId,
        /// The admin dialed.
        peer: DeviceId,
        /// Why.
        detail: String,
    },
}

/// Result with [`NetError`].
pub type NetResult<T> = Result<T, NetError>;

/// The TLS alert `no_application_protocol` (RFC 8446, 120) as a QUIC transport error.
fn is_alpn_mismatch(close: &iroh::endpoint::ConnectionClose) -> bool {
    close.error_code == TransportErrorCode::crypto(120)
}

/// Whether a connection ended normally: closed by this node, or by the peer without a
/// refusal (done, shutting down).
pub(crate) fn is_normal_close(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::LocallyClosed => true,
        ConnectionError::ApplicationClosed(close) => matches!(
            u32::try_from(close.error_code.into_inner()),
            Ok(close_code::DONE | close_code::SHUTTING_DOWN | close_code::DISCONNECTED)
        ),
        _ => false,
    }
}

/// What a connection error means for the peer at the other end.
pub(crate) fn connection_error(
    peer: DeviceId,
    network: NetworkId,
    e: &ConnectionError,
) -> NetError {
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            match u16::try_from(close.error_code.into_inner()) {
                Ok(code) if code != 0 && u32::from(code) < close_code::SHUTTING_DOWN => {
                    NetError::Refused {
                        peer,
                        code: RefuseCode::from_u16(code),
                        reason,
                    }
                }
                _ => NetError::ConnectionLost {
                    peer,
                    detail: format!("closed by the peer: {reason}"),
                },
            }
        }
        ConnectionError::ConnectionClosed(close) if is_alpn_mismatch(close) => {
            NetError::NetworkNotServed {
                peer,
                network,
                version: PROTOCOL_VERSION,
            }
        }
        ConnectionError::TransportError(t) if t.code == TransportErrorCode::crypto(120) => {
            NetError::NetworkNotServed {
                peer,
                network,
                version: PROTOCOL_VERSION,
            }
        }
        other => NetError::ConnectionLost {
            peer,
            detail: other.to_string(),
        },
    }
}

/// What a failed dial means.
pub(crate) fn connect_error(peer: DeviceId, network: NetworkId, e: ConnectError) -> NetError {
    match e {
        ConnectError::Connection { source, .. } => connection_error(peer, network, &source),
        ConnectError::Connecting {
            source: ConnectingError::ConnectionError { source, .. },
            ..
        } => connection_error(peer, network, &source),
        other => NetError::Unreachable {
            peer,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_names_the_network_and_version() {
        let n = NetworkId([7; 32]);
        let a = alpn(&n);
        assert!(a.starts_with(b"reflow/5/0707"));
        assert_eq!(network_of_alpn(&a), Some(n));
        // Another protocol version is not this protocol.
        for old in [b'1', b'2', b'3', b'4'] {
            let mut v = a.clone();
            v[7] = old;
            assert_eq!(network_of_alpn(&v), None);
        }
        assert_eq!(network_of_alpn(b"other"), None);
    }
}
