//! Whether each network of a node can be used.
//!
//! A network whose stored replica cannot be opened (a ledger of a newer schema, a damaged
//! row, a history that does not verify) does not stop the node: [`crate::Node::open`] keeps
//! it **unavailable**, with the reason, and opens every other network as usual. An unavailable
//! network is listed by [`crate::Node::networks`], and [`crate::Node::network_status`] and
//! [`crate::Node::network_problems`] say what is wrong; every read or write of it returns
//! [`crate::NetError::NetworkUnavailable`]; peers that dial this node for it are refused
//! ([`crate::sync::RefuseCode::WrongNetwork`], with a reason); it cannot be joined again
//! (that would replace it); and its stored data is left exactly as it is, so that a build that can read it
//! opens it later. See docs/storage.md, "A network that fails to open".

use std::fmt;

use crate::error::Error;
pub use crate::error::UnavailableKind;
use crate::identity::NetworkId;

/// Whether a network of the node can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkStatus {
    /// Its replica is open: it is read, written and synced.
    Available,
    /// Its replica could not be opened: nothing of it is read, written or served, and its
    /// stored data is kept as it is.
    Unavailable {
        /// Why, by kind.
        kind: UnavailableKind,
        /// Why, for people.
        reason: String,
    },
}

impl NetworkStatus {
    /// Whether the network can be used.
    pub fn is_available(&self) -> bool {
        matches!(self, NetworkStatus::Available)
    }
}

/// A network the node holds but could not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkProblem {
    /// The network.
    pub network: NetworkId,
    /// Why, by kind.
    pub kind: UnavailableKind,
    /// Why, for people.
    pub reason: String,
}

impl NetworkProblem {
    /// The problem of `network`, whose replica failed to open with `e`.
    pub(crate) fn of_error(network: NetworkId, e: &Error) -> NetworkProblem {
        let kind = UnavailableKind::of_error(e);
        let reason = match e {
            Error::CorruptStore { detail, .. } => format!("its stored data is damaged: {detail}"),
            Error::UnknownNetwork { .. } => {
                "the store lists it but holds none of its changes".to_owned()
            }
            Error::Automerge(a) => format!("its stored changes do not load: {a}"),
            other => other.to_string(),
        };
        NetworkProblem {
            network,
            kind,
            reason,
        }
    }

    /// The problem of `network`, whose opening panicked with `detail`.
    pub(crate) fn of_panic(network: NetworkId, detail: String) -> NetworkProblem {
        NetworkProblem {
            network,
            kind: UnavailableKind::Other,
            reason: format!("opening its replica stopped on a bug of this build: {detail}"),
        }
    }

    /// The status it gives the network.
    pub fn status(&self) -> NetworkStatus {
        NetworkStatus::Unavailable {
            kind: self.kind,
            reason: self.reason.clone(),
        }
    }

    /// What peers that dial this node for the network are told (no local detail: no paths).
    pub(crate) fn refusal(&self) -> String {
        format!(
            "network {} is unavailable on this node ({}); sync with another member's node",
            self.network,
            self.kind.describe()
        )
    }
}

impl fmt::Display for NetworkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {} is unavailable ({}): {}",
            self.network, self.kind, self.reason
        )
    }
}
