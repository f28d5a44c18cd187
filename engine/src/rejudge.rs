//! The judgment of a whole set of changes, from scratch: strong removal and equivocation.
//!
//! Most changes are judged once, on arrival, by their causal past alone. Two facts can turn
//! an accepted change into a refused one later, when a change that is *concurrent* with it
//! arrives: a removal of its author (strong removal: a removed device's changes that its
//! removal did not know of are refused), and a second change by its author with the same
//! actor and sequence number, or one that forks its author's chain of changes (equivocation:
//! the device is cut off). For those, the set of accepted changes is defined as a function
//! of the set of known changes, computed here from scratch, so that every replica that knows
//! the same changes accepts the same ones, whatever order they arrived in (docs/security.md, "Strong removal", "Equivocation").
//!
//! Pure: no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use automerge::{ActorId, ChangeHash};

use crate::admission::Admission;
use crate::identity::{DeviceId, NetworkId, SignedChange};
use crate::judge::Judge;
use crate::membership::{Membership, MembershipRecord, Rejection};
use crate::rules::RuleIndex;

/// The verdict on a set of changes.
pub(crate) struct Judgment {
    /// Accepted, in a causal order.
    pub accepted: Vec<ChangeHash>,
    /// Refused, with the reason.
    pub refused: BTreeMap<ChangeHash, Rejection>,
    /// Neither: waiting for a dependency that is not in the set.
    pub waiting: Vec<ChangeHash>,
    /// The indexes of the accepted changes.
    pub membership: Membership,
    /// The admission index of the accepted changes.
    pub admission: Admission,
    /// (actor, seq) of every accepted change.
    pub seqs: HashMap<(ActorId, u64), ChangeHash>,
    /// The removals in force: (removed device, record index, removing change).
    pub removals: Vec<(DeviceId, usize, ChangeHash)>,
    /// Devices proven to have equivocated, with one pair of twins each (two changes with one
    /// (actor, seq), or a fork: two changes neither of which knows the other).
    pub equivocations: BTreeMap<DeviceId, (ChangeHash, ChangeHash)>,
    /// The latest accepted change of each device.
    pub tips: HashMap<DeviceId, crate::judge::Tip>,
    /// The devices cut off (those of `equivocations`), with the reason any new change of
    /// theirs is refused.
    pub cut_off: HashMap<DeviceId, Rejection>,
    /// The rule sets of the accepted changes (`crate::rules`).
    pub rules: RuleIndex,
}

/// A removal to apply: (seniority key: the remover's grant op counter and hash, the removal's
/// op counter and hash), the removed device, its record index, the removing change.
type Removal = (
    (u64, ChangeHash, u64, ChangeHash),
    DeviceId,
    usize,
    ChangeHash,
);

fn author(c: &SignedChange) -> Option<DeviceId> {
    DeviceId::of_actor(c.change.actor_id())
}

/// Every change in `pool` reachable from `from` through dependencies (`from` included).
fn ancestors(pool: &HashMap<ChangeHash, SignedChange>, from: &ChangeHash) -> HashSet<ChangeHash> {
    let mut seen = HashSet::new();
    let mut stack = vec![*from];
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        if let Some(c) = pool.get(&h) {
            stack.extend(c.change.deps().iter().copied());
        }
    }
    seen
}

/// Every change in `pool` that depends on `from`, directly or not (`from` included).
fn descendants(
    children: &HashMap<ChangeHash, Vec<ChangeHash>>,
    from: &ChangeHash,
) -> HashSet<ChangeHash> {
    let mut seen = HashSet::new();
    let mut stack = vec![*from];
    while let Some(h) = stack.pop() {
        if seen.insert(h) {
            stack.extend(children.get(&h).into_iter().flatten().copied());
        }
    }
    seen
}

/// What the causal-past walk needs of a change of the set.
fn pool_meta(
    pool: &HashMap<ChangeHash, SignedChange>,
    h: &ChangeHash,
) -> Option<crate::judge::ChangeMeta> {
    pool.get(h).map(|c| crate::judge::ChangeMeta {
        actor: c.change.actor_id().clone(),
        max_op: (c.change.start_op().get() + c.change.len() as u64).saturating_sub(1),
        deps: c.change.deps().to_vec(),
    })
}

/// The devices of `pool` whose changes (those `keep` selects) do not form one chain, each
/// with its first pair of changes that proves it: in the order of their largest op counter
/// (then hash), the first two consecutive changes of which the later does not continue the
/// earlier (`judge::continues`). If every consecutive pair does, the changes are a chain.
fn forks(
    pool: &HashMap<ChangeHash, SignedChange>,
    keep: impl Fn(&ChangeHash) -> bool,
) -> BTreeMap<DeviceId, (ChangeHash, ChangeHash)> {
    let mut by_device: HashMap<DeviceId, Vec<crate::judge::Tip>> = HashMap::new();
    for (h, c) in pool {
        if let Some(d) = author(c).filter(|_| keep(h)) {
            by_device
                .entry(d)
                .or_default()
                .push(crate::judge::Tip::of(&c.change));
        }
    }
    let metas = |d: &ChangeHash| pool_meta(pool, d);
    let mut out = BTreeMap::new();
    for (device, mut chain) in by_device {
        chain.sort_by_key(|t| (t.max_op, t.hash));
        for pair in chain.windows(2) {
            let later = &pool[&pair[1].hash].change;
            if !crate::judge::continues(&pair[0], later.actor_id(), later.deps(), &metas) {
                let (a, b) = if pair[0].hash < pair[1].hash {
                    (pair[0].hash, pair[1].hash)
                } else {
                    (pair[1].hash, pair[0].hash)
                };
                out.insert(device, (a, b));
                break;
            }
        }
    }
    out
}

/// Judge every change of `pool` (signatures already verified) for `network`.
pub(crate) fn judge_all(network: NetworkId, pool: &HashMap<ChangeHash, SignedChange>) -> Judgment {
    let mut children: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
    for (h, c) in pool {
        for d in c.change.deps() {
            children.entry(*d).or_default().push(*h);
        }
    }

    // Equivocation is a fact of the set: two changes with one (actor, seq). The device is cut
    // off: every change of it that is not a strict ancestor of a twin is refused, both twins
    // included (so no replica keeps either, whichever it saw first).
    let mut by_seq: BTreeMap<(Vec<u8>, u64), Vec<ChangeHash>> = BTreeMap::new();
    for (h, c) in pool {
        by_seq
            .entry((c.change.actor_id().to_bytes().to_vec(), c.change.seq()))
            .or_default()
            .push(*h);
    }
    let mut excluded: BTreeMap<ChangeHash, Rejection> = BTreeMap::new();
    let mut equivocations: BTreeMap<DeviceId, (ChangeHash, ChangeHash)> = BTreeMap::new();
    // Only twins that would each stand on their own prove anything (a forger's refused
    // variants of one change do not).
    let standing: HashSet<ChangeHash> =
        if by_seq.values().any(|t| t.len() > 1) || !forks(pool, |_| true).is_empty() {
            one_pass(network, pool, &children, &excluded, false)
                .accepted
                .into_iter()
                .collect()
        } else {
            HashSet::new()
        };
    let mut forked: HashSet<DeviceId> = HashSet::new();
    for twins in by_seq.values_mut() {
        twins.retain(|h| standing.contains(h));
        if twins.len() < 2 {
            continue;
        }
        twins.sort();
        let Some(device) = pool.get(&twins[0]).and_then(author) else {
            continue;
        };
        equivocations.entry(device).or_insert((twins[0], twins[1]));
    }
    // A fork is a fact of the set too: two standing changes of one device, neither in the
    // other's past (twins first: a device with both is named for its twins).
    if !standing.is_empty() {
        for (device, pair) in forks(pool, |h| standing.contains(h)) {
            if let std::collections::btree_map::Entry::Vacant(e) = equivocations.entry(device) {
                e.insert(pair);
                forked.insert(device);
            }
        }
    }
    let cut_off: HashMap<DeviceId, Rejection> = equivocations
        .iter()
        .map(|(device, (a, _))| {
            let other = a.to_string();
            let reason = if forked.contains(device) {
                Rejection::Forked {
                    device: *device,
                    other,
                }
            } else {
                Rejection::Equivocation {
                    device: *device,
                    other,
                }
            };
            (*device, reason)
        })
        .collect();
    for (device, (a, b)) in &equivocations {
        let mut keep: HashSet<ChangeHash> = ancestors(pool, a);
        keep.extend(ancestors(pool, b));
        keep.remove(a);
        keep.remove(b);
        for (h, c) in pool {
            if author(c) == Some(*device) && !keep.contains(h) {
                let other = if h == a { b } else { a };
                let reason = if forked.contains(device) {
                    Rejection::Forked {
                        device: *device,
                        other: other.to_string(),
                    }
                } else {
                    Rejection::Equivocation {
                        device: *device,
                        other: other.to_string(),
                    }
                };
                excluded.insert(*h, reason);
            }
        }
    }

    // Strong removal, to a fixed point: judge in causal order with the exclusions so far;
    // take the removals that stand, most senior remover first (the one whose own grant has
    // the smallest op counter, the genesis creator first); each refuses the changes of the
    // removed device that are concurrent with it, unless an earlier removal in this order
    // already refused the removal itself. Exclusions only grow, so this ends.
    loop {
        let mut pass = one_pass(network, pool, &children, &excluded, true);
        let mut removals: Vec<Removal> = Vec::new();
        for (index, hash, record) in pass.membership.records() {
            let MembershipRecord::Remove { device } = record else {
                continue;
            };
            let Some(c) = pool.get(hash) else { continue };
            let Some(remover) = author(c) else { continue };
            let grant = pass.membership.grant_at(hash, &remover);
            let grant_op = grant
                .and_then(|g| pool.get(&g))
                .map_or(u64::MAX, |g| g.change.start_op().get());
            let key = (
                grant_op,
                grant.unwrap_or(ChangeHash([0xff; 32])),
                c.change.start_op().get(),
                *hash,
            );
            removals.push((key, *device, index, *hash));
        }
        removals.sort_by_key(|r| r.0);
        let accepted_by: HashMap<DeviceId, Vec<ChangeHash>> =
            pass.accepted.iter().fold(HashMap::new(), |mut m, h| {
                if let Some(d) = pool.get(h).and_then(author) {
                    m.entry(d).or_default().push(*h);
                }
                m
            });
        let mut grew = false;
        let mut in_force = Vec::new();
        for (_, target, index, removal) in removals {
            if excluded.contains_key(&removal) {
                continue;
            }
            in_force.push((target, index, removal));
            let anc = ancestors(pool, &removal);
            let desc = descendants(&children, &removal);
            for h in accepted_by.get(&target).into_iter().flatten() {
                if !anc.contains(h) && !desc.contains(h) && !excluded.contains_key(h) {
                    excluded.insert(
                        *h,
                        Rejection::RemovedConcurrently {
                            device: target,
                            removal: removal.to_string(),
                        },
                    );
                    grew = true;
                }
            }
        }
        if !grew {
            pass.removals = in_force;
            pass.equivocations = equivocations;
            pass.cut_off = cut_off;
            return pass;
        }
    }
}

/// One judgment of `pool` in causal order (ties by first op counter, then hash), with the
/// changes in `excluded` refused for the reason given.
fn one_pass(
    network: NetworkId,
    pool: &HashMap<ChangeHash, SignedChange>,
    children: &HashMap<ChangeHash, Vec<ChangeHash>>,
    excluded: &BTreeMap<ChangeHash, Rejection>,
    check_seqs: bool,
) -> Judgment {
    let mut membership = Membership::new(network);
    let mut admission = Admission::default();
    let mut rules = RuleIndex::default();
    let mut seqs = HashMap::new();
    let mut tips = HashMap::new();
    let mut accepted = Vec::new();
    let mut refused: BTreeMap<ChangeHash, Rejection> = BTreeMap::new();
    let mut max_ops: HashMap<ChangeHash, u64> = HashMap::new();
    let mut missing: HashMap<ChangeHash, usize> = HashMap::new();
    let mut ready: BinaryHeap<Reverse<(u64, ChangeHash)>> = BinaryHeap::new();
    for (h, c) in pool {
        let n = c
            .change
            .deps()
            .iter()
            .filter(|d| pool.contains_key(d))
            .count();
        if c.change.deps().iter().any(|d| !pool.contains_key(d)) {
            continue; // waits for a dependency outside the set
        }
        if n == 0 {
            ready.push(Reverse((c.change.start_op().get(), *h)));
        } else {
            missing.insert(*h, n);
        }
    }
    let mut decided: HashSet<ChangeHash> = HashSet::new();
    while let Some(Reverse((_, h))) = ready.pop() {
        let c = &pool[&h];
        decided.insert(h);
        let refused_dep = c
            .change
            .deps()
            .iter()
            .filter(|d| refused.contains_key(d))
            .min()
            .copied();
        // The same precedence as a judgment on arrival: a refused dependency first.
        let verdict = if let Some(d) = refused_dep {
            Err(Rejection::DependsOnRefused {
                dependency: d.to_string(),
            })
        } else if let Some(reason) = excluded.get(&h) {
            Err(reason.clone())
        } else {
            match author(c) {
                None => Err(Rejection::Signature {
                    problem: crate::identity::SignatureProblem::ActorNotADevice,
                }),
                Some(_) => {
                    let Some(head) = crate::judge::header(&c.change) else {
                        continue;
                    };
                    let dep_max = c
                        .change
                        .deps()
                        .iter()
                        .filter_map(|d| max_ops.get(d))
                        .max()
                        .copied()
                        .unwrap_or(0);
                    membership.judge(&head).and_then(|record| {
                        Judge {
                            membership: &mut membership,
                            admission: &mut admission,
                            seqs: &mut seqs,
                            tips: &mut tips,
                            cut_off: None,
                            removals: None,
                            check_seqs,
                            metas: &|d| pool_meta(pool, d),
                            rules: &mut rules,
                        }
                        .admit(&c.change, &head, record, dep_max)
                    })
                }
            }
        };
        match verdict {
            Ok(()) => {
                let max = (c.change.start_op().get() + c.change.len() as u64).saturating_sub(1);
                max_ops.insert(h, max);
                accepted.push(h);
            }
            Err(reason) => {
                refused.insert(h, reason);
            }
        }
        for child in children.get(&h).into_iter().flatten() {
            if let Some(n) = missing.get_mut(child) {
                *n -= 1;
                if *n == 0 {
                    missing.remove(child);
                    ready.push(Reverse((pool[child].change.start_op().get(), *child)));
                }
            }
        }
    }
    let waiting = pool
        .keys()
        .filter(|h| !decided.contains(h))
        .copied()
        .collect();
    Judgment {
        accepted,
        refused,
        waiting,
        membership,
        admission,
        seqs,
        tips,
        cut_off: HashMap::new(),
        removals: Vec::new(),
        equivocations: BTreeMap::new(),
        rules,
    }
}

/// Judge a whole history (membership and admission, as a replica judges it from scratch;
/// signatures are not verified) and return how many changes stand. For the benchmarks
/// (`benches/admission.rs`): the cost of judging, apart from applying.
#[doc(hidden)]
pub fn judge_history(network: crate::NetworkId, history: &[crate::SignedChange]) -> usize {
    let pool = history.iter().map(|c| (c.hash(), c.clone())).collect();
    judge_all(network, &pool).accepted.len()
}
