//! Who may open a connection, before any network's protocol core sees it: pure decisions
//! from the handshake alone (the device key, the ALPN's network, what this node holds of
//! it), carried out by the accept loop ([`super::accept`]). What follows the first frame
//! (admission, an invite's redemption, refusals) is the core's ([`super::proto`]).

use crate::identity::{DeviceId, NetworkId};
use crate::net::close_code;
use crate::sync::RefuseCode;

use super::status::NetworkProblem;

/// What this node holds of the network a connection asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holding<'a> {
    /// Its replica is open.
    Open,
    /// Held, but its replica could not be opened.
    Unavailable(&'a NetworkProblem),
    /// Not held.
    Absent,
}

/// What to do with a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Contact {
    /// Read its first frame and hand it to the network's core.
    Proceed {
        /// The device.
        peer: DeviceId,
        /// The network.
        network: NetworkId,
    },
    /// Refuse it with a Refuse frame on its stream (telling why), then close.
    Refuse {
        /// The device.
        peer: DeviceId,
        /// The network.
        network: NetworkId,
        /// Why.
        code: RefuseCode,
        /// Why, readable.
        reason: String,
    },
    /// Close it with this code and reason, reading nothing.
    Close {
        /// The close code.
        code: u32,
        /// Why.
        reason: &'static str,
    },
}

/// The decision on a connection whose handshake gave `peer` (`None`: its key is not a
/// device key) and `network` (`None`: an ALPN of no Reflow network), this node holding what
/// `holding` says of the network, `closing` if the node is shutting down.
pub(crate) fn first_contact<'a>(
    peer: Option<DeviceId>,
    network: Option<NetworkId>,
    holding: impl FnOnce(&NetworkId) -> Holding<'a>,
    closing: bool,
) -> Contact {
    let Some(peer) = peer else {
        return Contact::Close {
            code: u32::from(RefuseCode::NotAMember.to_u16()),
            reason: "not a device key",
        };
    };
    let Some(network) = network else {
        return Contact::Close {
            code: u32::from(RefuseCode::UnsupportedVersion.to_u16()),
            reason: "unknown protocol",
        };
    };
    match holding(&network) {
        Holding::Absent => Contact::Close {
            code: u32::from(RefuseCode::WrongNetwork.to_u16()),
            reason: "this node does not hold that network",
        },
        // Told on its stream, so that the peer learns why (and syncs with another member).
        Holding::Unavailable(problem) => Contact::Refuse {
            peer,
            network,
            code: RefuseCode::WrongNetwork,
            reason: problem.refusal(),
        },
        Holding::Open if closing => Contact::Close {
            code: close_code::SHUTTING_DOWN,
            reason: "the node is shutting down",
        },
        Holding::Open => Contact::Proceed { peer, network },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UnavailableKind;
    use crate::identity::DeviceKey;

    fn ids() -> (DeviceId, NetworkId) {
        let key = DeviceKey::from_secret_bytes(&[7; 32]);
        let network = NetworkId([9; 32]);
        (key.id(), network)
    }

    #[test]
    fn a_connection_is_refused_or_let_through_by_its_handshake() {
        let (peer, network) = ids();
        let open = |_: &NetworkId| Holding::Open;
        assert_eq!(
            first_contact(Some(peer), Some(network), open, false),
            Contact::Proceed { peer, network }
        );
        let code = |c: Contact| match c {
            Contact::Close { code, .. } => code,
            other => panic!("not a close: {other:?}"),
        };
        assert_eq!(
            code(first_contact(None, Some(network), open, false)),
            u32::from(RefuseCode::NotAMember.to_u16())
        );
        assert_eq!(
            code(first_contact(Some(peer), None, open, false)),
            u32::from(RefuseCode::UnsupportedVersion.to_u16())
        );
        assert_eq!(
            code(first_contact(
                Some(peer),
                Some(network),
                |_| Holding::Absent,
                false
            )),
            u32::from(RefuseCode::WrongNetwork.to_u16())
        );
        assert_eq!(
            code(first_contact(Some(peer), Some(network), open, true)),
            close_code::SHUTTING_DOWN
        );
        let problem = NetworkProblem {
            network,
            kind: UnavailableKind::Damaged,
            reason: "a local detail: /home/ana/reflow.redb".into(),
        };
        match first_contact(
            Some(peer),
            Some(network),
            |_| Holding::Unavailable(&problem),
            true,
        ) {
            Contact::Refuse { code, reason, .. } => {
                assert_eq!(code, RefuseCode::WrongNetwork);
                assert!(reason.contains("unavailable"), "{reason}");
                assert!(!reason.contains("/home"), "no local detail: {reason}");
            }
            other => panic!("not a refusal: {other:?}"),
        }
    }
}
