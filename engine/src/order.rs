//! The ledger's total order of events: the key every view folds events by.
//!
//! Below both the rules and the views (each orders events by it), so that neither needs the
//! other for it.

use std::fmt;

use automerge::ActorId;

use crate::vf::Id;

/// The position of an event in the ledger's total order: the Lamport counter of the
/// Automerge operation that recorded it, then the actor that recorded it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// Automerge operation counter (a Lamport clock).
    pub counter: u64,
    /// Automerge actor id.
    pub actor: ActorId,
}

impl OrderKey {
    /// The event id this key stands for: `<counter>@<actor hex>`, Automerge's own spelling.
    pub fn to_id(&self) -> Id {
        Id(format!("{}@{}", self.counter, self.actor))
    }

    /// Parse an event id back into its key.
    pub fn parse(id: &Id) -> Option<OrderKey> {
        let (ctr, actor) = id.as_str().split_once('@')?;
        let counter = ctr.parse().ok()?;
        let actor = ActorId::from(hex::decode(actor).ok()?);
        Some(OrderKey { counter, actor })
    }
}

impl fmt::Debug for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.counter, self.actor)
    }
}
