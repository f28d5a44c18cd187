//! Judging one change on its causal past: membership's verdict is in, this applies strong
//! removal (the removals in force), admission (what the change does) and equivocation (one
//! accepted change per actor and sequence number, and one chain of changes per device: no
//! fork), and indexes what stands. Used by
//! [`crate::Replica`] for each arriving change and by `crate::rejudge` to judge a whole set
//! from scratch.
//!
//! Pure: no I/O.

use std::collections::HashMap;

use automerge::{ActorId, Change, ChangeHash};

use crate::admission::{Admission, Past, RecordKind};
use crate::identity::DeviceId;
use crate::membership::{Header, Membership, MembershipRecord, Rejection};
use crate::rules::RuleIndex;

/// A change's header as membership needs it (`None` if its actor is not a device's).
pub(crate) fn header(change: &Change) -> Option<Header<'_>> {
    Some(Header {
        hash: change.hash(),
        deps: change.deps(),
        author: DeviceId::of_actor(change.actor_id())?,
        message: change.message(),
    })
}

/// What the causal-past walk needs of one change.
#[derive(Debug, Clone)]
pub(crate) struct ChangeMeta {
    pub actor: ActorId,
    pub max_op: u64,
    pub deps: Vec<ChangeHash>,
}

/// Where the judge finds the changes it walks: the replica's document and its current
/// batch, or the set judged from scratch.
pub(crate) type Metas<'a> = &'a dyn Fn(&ChangeHash) -> Option<ChangeMeta>;

/// Whether the op `(counter, actor)` (one that exists) is in the causal past of `deps`.
/// An actor's changes form a chain with growing op counters, so it is iff some change of
/// that actor with a largest op of at least `counter` is; a change whose largest op is
/// below `counter` has only smaller counters in its past, so the walk stops there.
pub(crate) fn op_in_past(
    deps: &[ChangeHash],
    counter: u64,
    actor: &ActorId,
    metas: Metas<'_>,
) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut stack = deps.to_vec();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        let Some(m) = metas(&h) else { continue };
        if m.max_op < counter {
            continue;
        }
        if m.actor == *actor {
            return true;
        }
        stack.extend(m.deps);
    }
    false
}

/// The latest accepted change of a device. A device's changes form one chain (each has
/// every earlier one in its causal past), so a new change of the device is honest only if
/// the tip is in its past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tip {
    pub hash: ChangeHash,
    pub actor: ActorId,
    pub max_op: u64,
}

impl Tip {
    /// The tip a change makes.
    pub(crate) fn of(change: &Change) -> Tip {
        Tip {
            hash: change.hash(),
            actor: change.actor_id().clone(),
            max_op: (change.start_op().get() + change.len() as u64).saturating_sub(1),
        }
    }
}

/// Whether a change of `actor` with dependencies `deps` continues the chain that ends at
/// `tip` (its author's latest accepted change): the same actor (an actor's changes are a
/// chain by sequence number), or the tip in its causal past.
pub(crate) fn continues(tip: &Tip, actor: &ActorId, deps: &[ChangeHash], metas: Metas<'_>) -> bool {
    tip.actor == *actor || op_in_past(deps, tip.max_op, &tip.actor, metas)
}

/// The judging state of a replica, borrowed: membership, admission, the (actor, seq) index
/// and the removals in force. Used for each change as it arrives and for a re-judgment of
/// every known change from scratch (`rejudge`).
pub(crate) struct Judge<'a> {
    pub membership: &'a mut Membership,
    pub admission: &'a mut Admission,
    pub seqs: &'a mut HashMap<(automerge::ActorId, u64), ChangeHash>,
    /// The latest accepted change of each device ([`Tip`]), to catch forks.
    pub tips: &'a mut HashMap<DeviceId, Tip>,
    /// Devices cut off for equivocation or a fork, with the reason their changes are refused
    /// (every new change of such a device: `rejudge`). `None` in a from-scratch judgment,
    /// which refuses them itself.
    pub cut_off: Option<&'a HashMap<DeviceId, Rejection>>,
    /// Accepted removals: (removed device, membership record index, removing change); kept
    /// up to date as removals are admitted. `None` in a from-scratch judgment, which applies
    /// strong removal itself (`rejudge`).
    pub removals: Option<&'a mut Vec<(DeviceId, usize, ChangeHash)>>,
    /// Whether a second change with an accepted (actor, seq) is refused (off only to find
    /// which twins would each stand on their own).
    pub check_seqs: bool,
    /// The changes known so far (accepted ones, for causal-past questions).
    pub metas: Metas<'a>,
    /// The network's rule sets (`crate::rules`): the rule set in force in each change's past.
    pub rules: &'a mut RuleIndex,
}

impl Judge<'_> {
    /// Judge a change that membership accepted (`record`) and index it if admitted.
    /// `dep_max` is the largest op counter of its dependencies.
    pub(crate) fn admit(
        &mut self,
        change: &Change,
        head: &Header<'_>,
        record: Option<MembershipRecord>,
        dep_max: u64,
    ) -> std::result::Result<(), Rejection> {
        let seq_key = (change.actor_id().clone(), change.seq());
        // Strong removal: a change by a removed device that does not have its removal in
        // its causal past is concurrent with it (a new change cannot be in the removal's
        // past: the removal was accepted, so its past was).
        for (device, index, removal) in self.removals.iter().flat_map(|r| r.iter()) {
            if *device == head.author && !self.membership.past_has_record(head.deps, *index) {
                return Err(Rejection::RemovedConcurrently {
                    device: head.author,
                    removal: removal.to_string(),
                });
            }
        }
        if let Some(reason) = self.cut_off.and_then(|c| c.get(&head.author)) {
            return Err(reason.clone());
        }
        let kind = record_kind(&record);
        let decoded = change.decode();
        let author = self.membership.author_in_past(head);
        let membership = &*self.membership;
        let deps = head.deps;
        let has_record = move |i: usize| membership.past_has_record(deps, i);
        let metas = self.metas;
        let has_op = move |counter: u64, actor: &ActorId| op_in_past(deps, counter, actor, metas);
        // The rule set in force in its causal past (its `recordForOthers` grant).
        let rules = self.rules.rules_for(deps).map(|r| r.rule_set());
        let past = Past {
            author: author.as_ref(),
            has_record: &has_record,
            has_op: &has_op,
            rules,
        };
        let events =
            self.admission
                .judge(&decoded, change.raw_bytes().len(), dep_max, kind, &past)?;
        // Network rules (crate::rules): rule-set writes and the refuse rules in force, on
        // the events admission read.
        if let Some(author) = author.as_ref() {
            self.rules
                .judge(&decoded, events, head.hash, deps, author)?;
        }
        // Only a change that would stand on its own proves equivocation.
        if self.check_seqs {
            if let Some(other) = self.seqs.get(&seq_key) {
                if *other != head.hash {
                    return Err(Rejection::Equivocation {
                        device: head.author,
                        other: other.to_string(),
                    });
                }
            }
        }
        // A fork: the author's latest accepted change is not in this one's past.
        if self.check_seqs {
            if let Some(tip) = self.tips.get(&head.author) {
                if tip.hash != head.hash && !continues(tip, change.actor_id(), deps, metas) {
                    return Err(Rejection::Forked {
                        device: head.author,
                        other: tip.hash.to_string(),
                    });
                }
            }
        }
        let index = self.membership.next_record_index();
        self.rules.admit(&decoded, head.hash, deps, author.as_ref());
        if let (Some(removals), Some(MembershipRecord::Remove { device })) =
            (self.removals.as_deref_mut(), &record)
        {
            removals.push((*device, index, head.hash));
        }
        self.membership.admit(head, record);
        // The objects it made belong to the agent its author acted for at this change (as a
        // reopened replica finds it: `Replica::open_with`).
        let membership = &*self.membership;
        let agent = || {
            membership
                .member_at(&head.hash, &head.author)
                .map(|m| m.agent)
        };
        self.admission.admit(&decoded, kind, index, &agent);
        self.seqs.insert(seq_key, head.hash);
        let tip = Tip::of(change);
        match self.tips.get(&head.author) {
            Some(t) if t.max_op >= tip.max_op => {}
            _ => {
                self.tips.insert(head.author, tip);
            }
        }
        Ok(())
    }
}

pub(crate) fn record_kind(record: &Option<MembershipRecord>) -> RecordKind {
    match record {
        None => RecordKind::None,
        Some(MembershipRecord::Genesis { schema, .. }) => RecordKind::Genesis(*schema),
        Some(MembershipRecord::Migrate { .. }) => RecordKind::Migrate,
        Some(_) => RecordKind::Membership,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small change graph: actor a's chain a1 (ops 1-2) ← a2 (ops 5-6); actor b's b1
    /// (ops 3-4) is concurrent with a1; c1 (ops 7-9) depends on a2 only.
    #[test]
    fn op_in_past_follows_dependencies_only() {
        let (a, b, c) = (
            ActorId::from([1u8; 16]),
            ActorId::from([2u8; 16]),
            ActorId::from([3u8; 16]),
        );
        let h = |n: u8| ChangeHash([n; 32]);
        let graph: std::collections::HashMap<ChangeHash, ChangeMeta> = [
            (h(1), a.clone(), 2, vec![]),
            (h(2), b.clone(), 4, vec![]),
            (h(3), a.clone(), 6, vec![h(1)]),
            (h(4), c.clone(), 9, vec![h(3)]),
        ]
        .into_iter()
        .map(|(hash, actor, max_op, deps)| {
            (
                hash,
                ChangeMeta {
                    actor,
                    max_op,
                    deps,
                },
            )
        })
        .collect();
        let metas = |x: &ChangeHash| graph.get(x).cloned();
        // From c1: a's ops 1 and 5 are in its past, b's op 3 is not (concurrent).
        assert!(op_in_past(&[h(4)], 1, &a, &metas));
        assert!(op_in_past(&[h(4)], 5, &a, &metas));
        assert!(!op_in_past(&[h(4)], 3, &b, &metas));
        assert!(op_in_past(&[h(4), h(2)], 3, &b, &metas));
        // a1 alone does not hold a2's op.
        assert!(!op_in_past(&[h(1)], 5, &a, &metas));
        assert!(!op_in_past(&[], 1, &a, &metas));
    }
}
