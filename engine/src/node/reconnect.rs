//! The address book and automatic reconnection.
//!
//! The node remembers, per network, where each peer it was connected to can be dialed (the
//! address it dialed, or the address an inbound connection came from), in its store's node
//! metadata (`peers.<network id hex>`: JSON, see docs/storage.md). When the node opens, and
//! when a connection to a member ends other than by a deliberate close (this node's
//! [`Node::disconnect`](super::Node::disconnect) or the peer's, a refusal, a shutdown of this
//! node), it redials that member with exponential backoff: `initial`, then twice as long
//! each time up to `max`, each delay multiplied by a random factor in [0.5, 1) (jitter, from
//! a generator seeded by the operating system), until a connection is open (either way), the
//! member is removed, or the node closes. [`Node::peers`](super::Node::peers) shows the next
//! retry time; [`NodeEvent::RetryScheduled`](super::NodeEvent::RetryScheduled) announces it.

use std::collections::BTreeMap;
use tracing::warn;

use crate::identity::{DeviceId, NetworkId};
use crate::net::PeerAddr;
use crate::store::Store;

pub use super::proto::Backoff;
use super::proto::Jitter;

/// A jitter generator seeded by the operating system (the simulator seeds its own).
pub(super) fn os_jitter() -> Jitter {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        seed = nanos.to_le_bytes();
    }
    Jitter::new(u64::from_le_bytes(seed))
}

/// Node metadata key of a network's address book.
fn book_key(network: &NetworkId) -> String {
    format!("peers.{network}")
}

/// Read a network's address book (empty if none or unreadable).
pub(super) fn load_book(store: &Store, network: &NetworkId) -> BTreeMap<DeviceId, PeerAddr> {
    let bytes = match store.node_meta(&book_key(network)) {
        Ok(Some(b)) => b,
        Ok(None) => return BTreeMap::new(),
        Err(e) => {
            warn!(error = %e, "could not read the address book");
            return BTreeMap::new();
        }
    };
    match serde_json::from_slice::<Vec<PeerAddr>>(&bytes) {
        Ok(list) => list.into_iter().map(|a| (a.device, a)).collect(),
        Err(e) => {
            warn!(error = %e, "the address book is unreadable; starting a new one");
            BTreeMap::new()
        }
    }
}

/// Write a network's address book (durably).
pub(super) fn save_book(store: &Store, network: &NetworkId, book: &[PeerAddr]) {
    // A list of plain structs always serializes.
    let json = serde_json::to_vec(book).unwrap_or_default();
    if let Err(e) = store.put_node_meta(&book_key(network), &json) {
        warn!(error = %e, "could not save the address book");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(4, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(1));
        let mut j = Jitter::new(42);
        let units: Vec<f64> = (0..1000).map(|_| j.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = units.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
