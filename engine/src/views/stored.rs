//! The folded views as stored beside a snapshot, so that opening a ledger does not fold every
//! event again (issue 14, item 3). Layout: docs/storage.md, "A views value".
//!
//! What is stored is what the fold computed and what is costly to recompute: every valid
//! event already decoded (no JSON to parse), each resource's fold state and conflicts, the
//! rule findings of events that touch no resource, the events that could not be read. The
//! indexes (order, events per resource, per process, per planning object and per container,
//! creators, corrections, exclusions) are rebuilt from the events in one pass, in order, by
//! the code that builds them on a fold ([`Views::index_event`]).
//!
//! The body is the [`postcard`] serde encoding of [`Body`]: the types are derived, not
//! hand-written, and every field of [`Views`], of a resource's fold and (through `serde`'s
//! remote definitions, whose decoders build the types field by field) of an event and of a
//! conflict is named here, so a field added later does not compile until it is stored or
//! said to be rebuilt.
//!
//! A stored value is only used for the document it was folded from: it names the heads it
//! was folded at, and the ledger uses it only if the document holds those heads (then only
//! the changes after them are folded, as they would be on arrival); it carries the version
//! of the fold's rules ([`FOLD_VERSION`]) and a SHA-256 of its body. Anything else (another
//! version, a checksum mismatch, bytes that do not decode, a resource set that does not match
//! the events) is refused with a [`StoredViewsError`] and the ledger folds from scratch.
//!
//! **Rules.** The network's rules (`crate::rules`) judge events by inputs that the views do
//! not hold in the document: the rule set in force in each event's causal past and its
//! recorder, which the replica works out from the accepted changes after the document loads.
//! Those inputs are not stored (a compiled rule set is no data); what is stored is their
//! digest ([`rules_digest`]: per event held, its key, a SHA-256 of the rule set's JSON and
//! its recorder). When the replica has its rule inputs, the ledger compares their digest with
//! the stored one: equal, the stored findings are the findings a fold would make (the same
//! events, judged by the same rules and recorders) and the inputs are installed without
//! judging again; different (another build's rule index, a ledger opened without its
//! replica, so without rules, or with), the stored views are refused and the views folded
//! from scratch. Admission's findings of refuse rules that failed to evaluate are left out
//! of the digest: a fold of stored changes evaluates them again from the same inputs.
//! Pure: bytes in, views out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use automerge::{ActorId, ChangeHash};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::fold::{self, FoldState};
use super::{Conflict, Entry, OrderKey, QuantityKind, ResourceFold, TransferOf, Views};
use crate::rules::{CompiledRules, EventRules, Outcome};
type OtherProperties = std::collections::BTreeMap<String, serde_json::Value>;
use crate::vf::{Action, EconomicEvent, Id, Measure, Quantity};

/// The encoding version of a views value (its first byte). 2: the body is [`Body`] in
/// postcard, with the planning fields, the rule findings and the rules' digest.
pub const VIEWS_ENCODING: u8 = 2;

/// The version of the fold's rules. Bump it whenever a change to `views` (or to how the
/// rules layer picks or evaluates the rules an event is judged by) would fold the same
/// events into different views: stored views of another version are folded again.
pub const FOLD_VERSION: u32 = 2;

/// Why stored views were not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredViewsError {
    /// Another encoding or fold version (written by another build).
    #[error("stored views of encoding {encoding}, fold version {fold} (this build: {VIEWS_ENCODING}, {FOLD_VERSION})")]
    Version {
        /// The value's encoding byte.
        encoding: u8,
        /// The value's fold version.
        fold: u32,
    },
    /// The body's SHA-256 does not match.
    #[error("stored views fail their checksum")]
    Checksum,
    /// The bytes end early or hold something this encoding never writes.
    #[error("stored views do not decode: {0}")]
    Malformed(String),
    /// The stored resources are not the ones the stored events touch.
    #[error("stored views are inconsistent: {0}")]
    Inconsistent(&'static str),
    /// The views were judged by other rule inputs than the opener's (see the module
    /// documentation).
    #[error("stored views were judged by other rules than this replica's")]
    Rules,
}

/// Decoded stored views: the views, the number of event entries the document held, the
/// heads they were folded at and the digest of the rule inputs they were judged by.
#[derive(Debug)]
pub struct StoredViews {
    /// The views.
    pub views: Views,
    /// Entries of the event buckets (valid or not) at those heads.
    pub events_len: usize,
    /// The document's heads when the views were folded.
    pub heads: Vec<ChangeHash>,
    /// [`rules_digest`] of the rule inputs the views were judged by.
    pub rules: [u8; 32],
}

/// Encoding byte, fold version, SHA-256 of the body.
const HEADER: usize = 1 + 4 + 32;

/// An event's place in the order: its counter and the index of its actor in [`Body::actors`].
type Key = (u64, u32);

/// The body of a views value (docs/storage.md, "A views value"). `E` and `C` are an event and
/// a conflict, borrowed to encode, owned when decoded.
#[derive(Serialize, Deserialize)]
struct Body<E, C> {
    /// The document's heads when the views were folded.
    heads: Vec<[u8; 32]>,
    /// Entries of the event buckets, valid or not.
    events_len: u64,
    /// [`rules_digest`] of the rule inputs the views were judged by.
    rules: [u8; 32],
    /// Every actor of a key below, once, in order of first use.
    actors: Vec<Vec<u8>>,
    /// Every valid event, in the views' order (strictly increasing keys).
    events: Vec<(Key, E)>,
    /// Every resource some event touches, by id.
    resources: Vec<StoredFold<C>>,
    /// The events that could not be read, by key.
    invalid: Vec<(Key, C)>,
    /// Rule findings of events that touch no resource, by key.
    rule_flags: Vec<(Key, Vec<C>)>,
}

/// A resource's fold, without its events (rebuilt from the events) and memos.
#[derive(Serialize, Deserialize)]
struct StoredFold<C> {
    id: Id,
    state: FoldState,
    removed_by: Option<Id>,
    conflicts: Vec<C>,
}

/// Encode `views` folded at `heads` (with `events_len` bucket entries), judged by rule inputs
/// of digest `rules` ([`rules_digest`]).
pub fn encode(views: &Views, events_len: usize, heads: &[ChangeHash], rules: [u8; 32]) -> Vec<u8> {
    // Every field named: a field added to the views must be stored or said to be rebuilt.
    let Views {
        entries,
        order,
        resources,
        // Indexes, rebuilt from the events (`Views::index_event`, `recompute_exclusions`).
        by_process: _,
        corrections: _,
        excluded: _,
        creators: _,
        correction_conflicts: _,
        planning_refs: _,
        by_container: _,
        invalid,
        // Not data (compiled rules): their digest is stored, see the module documentation.
        rule_inputs: _,
        rule_flags,
    } = views;
    let mut actors: HashMap<ActorId, u32> = HashMap::new();
    let mut actor_list: Vec<Vec<u8>> = Vec::new();
    let mut key = |k: &OrderKey| -> Key {
        let i = match actors.get(&k.actor) {
            Some(i) => *i,
            None => {
                let i = actor_list.len() as u32;
                actor_list.push(k.actor.to_bytes().to_vec());
                actors.insert(k.actor.clone(), i);
                i
            }
        };
        (k.counter, i)
    };
    let events: Vec<(Key, EventRef<'_>)> = order
        .iter()
        .filter_map(|k| entries.get(k))
        .map(|e| (key(&e.key), EventRef(&e.event)))
        .collect();
    let mut folds: Vec<(&Id, &ResourceFold)> = resources.iter().collect();
    folds.sort_by(|a, b| a.0.cmp(b.0));
    let resources = folds
        .into_iter()
        .map(|(id, f)| {
            let ResourceFold {
                // Rebuilt from the events.
                events: _,
                state,
                removed_by,
                conflicts,
                // A memo and a shortcut, left empty (see `ResourceFold`'s `PartialEq`).
                sees_all: _,
                before_last: _,
            } = f;
            StoredFold {
                id: id.clone(),
                state: state.clone(),
                removed_by: removed_by.clone(),
                conflicts: conflicts.iter().map(ConflictRef).collect(),
            }
        })
        .collect();
    let invalid = invalid
        .iter()
        .map(|(k, c)| (key(k), ConflictRef(c)))
        .collect();
    let rule_flags = rule_flags
        .iter()
        .map(|(k, cs)| (key(k), cs.iter().map(ConflictRef).collect()))
        .collect();
    let body = Body {
        heads: heads.iter().map(|h| h.0).collect(),
        events_len: events_len as u64,
        rules,
        actors: actor_list,
        events,
        resources,
        invalid,
        rule_flags,
    };
    // Serializing into a vector fails only on a type serde cannot express: none here.
    let body = postcard::to_allocvec(&body).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(VIEWS_ENCODING);
    out.extend_from_slice(&FOLD_VERSION.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

/// Decode stored views and rebuild their indexes; refuses anything but a value this build
/// wrote for its own fold rules.
pub fn decode(bytes: &[u8]) -> Result<StoredViews, StoredViewsError> {
    let header = bytes
        .get(..HEADER)
        .ok_or_else(|| StoredViewsError::Malformed("shorter than its header".into()))?;
    let encoding = header[0];
    let fold = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if encoding != VIEWS_ENCODING || fold != FOLD_VERSION {
        return Err(StoredViewsError::Version { encoding, fold });
    }
    let body = &bytes[HEADER..];
    if Sha256::digest(body).as_slice() != &header[5..HEADER] {
        return Err(StoredViewsError::Checksum);
    }
    let (body, rest): (Body<EventOwned, ConflictOwned>, _) =
        postcard::take_from_bytes(body).map_err(|e| StoredViewsError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(StoredViewsError::Malformed("bytes after the end".into()));
    }
    let actors: Vec<ActorId> = body.actors.into_iter().map(ActorId::from).collect();
    let key = |(counter, actor): Key| -> Result<OrderKey, StoredViewsError> {
        let actor = actors
            .get(actor as usize)
            .ok_or_else(|| StoredViewsError::Malformed("an actor index out of range".into()))?
            .clone();
        Ok(OrderKey { counter, actor })
    };
    let mut entries = Vec::with_capacity(body.events.len());
    for (k, EventOwned(mut event)) in body.events {
        let key = key(k)?;
        event.id = key.to_id();
        entries.push(Entry { key, event });
    }
    let mut folds = HashMap::with_capacity(body.resources.len());
    for f in body.resources {
        let conflicts = f.conflicts.into_iter().map(|c| c.0).collect();
        folds.insert(f.id, (f.state, f.removed_by, conflicts));
    }
    let mut invalid = BTreeMap::new();
    for (k, c) in body.invalid {
        invalid.insert(key(k)?, c.0);
    }
    let mut rule_flags = BTreeMap::new();
    for (k, cs) in body.rule_flags {
        rule_flags.insert(key(k)?, cs.into_iter().map(|c| c.0).collect());
    }
    let views = Views::restore(entries, folds, invalid, rule_flags)?;
    Ok(StoredViews {
        views,
        events_len: body.events_len as usize,
        heads: body.heads.into_iter().map(ChangeHash).collect(),
        rules: body.rules,
    })
}

/// The digest of the rule inputs that judge the events `held` (a SHA-256): for each, in key
/// order, its key, a SHA-256 of its rule set's JSON and its recorder. Admission's findings
/// are left out (see the module documentation). No inputs: the digest of nothing.
///
/// Only inputs that could find something whichever way the replica came by them count: a
/// rule set with flag rules, or refuse rules that failed to evaluate at admission. A rule
/// set of refuse rules only judges nothing once admission passed the event: a live replica
/// keeps no input for it, while one opened from its store (which cannot tell) keeps one per
/// event, to evaluate again; counting those would make the two digests differ, and every
/// open of such a network fold from scratch.
pub(crate) fn rules_digest<'a>(
    inputs: impl IntoIterator<Item = (&'a OrderKey, &'a EventRules)>,
    held: impl Fn(&OrderKey) -> bool,
) -> [u8; 32] {
    let mut list: Vec<(&OrderKey, &EventRules)> = inputs
        .into_iter()
        .filter(|(k, r)| {
            held(k)
                && (r.rules.has_flags() || r.refuse_errors.as_ref().is_some_and(|f| !f.is_empty()))
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    let mut sets: HashMap<*const CompiledRules, [u8; 32]> = HashMap::new();
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for (k, r) in list {
        h.update(k.counter.to_le_bytes());
        field(&mut h, k.actor.to_bytes());
        let set = sets.entry(Arc::as_ptr(&r.rules)).or_insert_with(|| {
            Sha256::digest(serde_json::to_vec(r.rules.rule_set()).unwrap_or_default()).into()
        });
        h.update(*set);
        field(&mut h, r.recorder.device.as_bytes());
        field(&mut h, r.recorder.agent.0.as_bytes());
        field(
            &mut h,
            serde_json::to_string(&r.recorder.role)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    h.finalize().into()
}

impl Views {
    /// Views from stored parts: the indexes are rebuilt from `entries` (which must be in
    /// order), each resource's fold is taken from `folds`, which must name exactly the
    /// resources the events touch.
    fn restore(
        entries: Vec<Entry>,
        mut folds: HashMap<Id, (FoldState, Option<Id>, Vec<Conflict>)>,
        invalid: BTreeMap<OrderKey, Conflict>,
        rule_flags: BTreeMap<OrderKey, Vec<Conflict>>,
    ) -> Result<Views, StoredViewsError> {
        let mut v = Views {
            invalid,
            rule_flags,
            ..Views::default()
        };
        let mut last: Option<&OrderKey> = None;
        for e in &entries {
            if last.is_some_and(|l| *l >= e.key) {
                return Err(StoredViewsError::Malformed("events out of order".into()));
            }
            last = Some(&e.key);
        }
        v.entries.reserve(entries.len());
        for entry in entries {
            let key = entry.key.clone();
            v.index_event(&key, &entry.event);
            for (rid, side) in fold::sides(&entry.event) {
                v.resources
                    .entry(rid.clone())
                    .or_default()
                    .events
                    .push((key.clone(), side));
            }
            v.order.insert(key.clone());
            v.entries.insert(key, entry);
        }
        for (rid, f) in v.resources.iter_mut() {
            let (state, removed_by, conflicts) = folds.remove(rid).ok_or(
                StoredViewsError::Inconsistent("a resource without its fold"),
            )?;
            f.state = state;
            f.removed_by = removed_by;
            f.conflicts = conflicts;
        }
        if !folds.is_empty() {
            return Err(StoredViewsError::Inconsistent(
                "a fold of a resource no event touches",
            ));
        }
        v.recompute_exclusions();
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Serde definitions of the types whose own serde form is the JSON of the API (optional fields
// left out, untagged quantities, tagged conflicts: none of which a binary format without field
// names can read back). Their decoders build the type with every field named.

/// A quantity as the 16 bytes of its decimal (`rust_decimal`'s `serialize`).
pub(crate) mod quantity_bytes {
    use super::*;

    /// Write the 16 bytes.
    pub fn serialize<S: Serializer>(q: &Quantity, s: S) -> Result<S::Ok, S::Error> {
        q.value().serialize().serialize(s)
    }

    /// Read 16 bytes; a scale beyond 28 or set unused bits are refused.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        let b = <[u8; 16]>::deserialize(d)?;
        if b[2] > 28 || b[0] != 0 || b[1] != 0 || b[3] & 0x7f != 0 {
            return Err(serde::de::Error::custom("not a decimal"));
        }
        Ok(Quantity::from(Decimal::deserialize(b)))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Measure")]
struct MeasureDef {
    #[serde(with = "quantity_bytes")]
    has_numerical_value: Quantity,
    has_unit: Id,
}

/// An optional measure.
mod opt_measure {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct M(#[serde(with = "MeasureDef")] Measure);

    #[derive(Serialize)]
    struct R<'a>(#[serde(with = "MeasureDef")] &'a Measure);

    pub fn serialize<S: Serializer>(m: &Option<Measure>, s: S) -> Result<S::Ok, S::Error> {
        m.as_ref().map(R).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Measure>, D::Error> {
        Ok(Option::<M>::deserialize(d)?.map(|m| m.0))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "EconomicEvent")]
struct EventDef {
    /// The event's key (`<counter>@<actor>`), stored once beside it.
    #[serde(skip)]
    id: Id,
    action: Action,
    provider: Option<Id>,
    receiver: Option<Id>,
    resource_inventoried_as: Option<Id>,
    to_resource_inventoried_as: Option<Id>,
    resource_conforms_to: Option<Id>,
    #[serde(with = "opt_measure")]
    resource_quantity: Option<Measure>,
    #[serde(with = "opt_measure")]
    effort_quantity: Option<Measure>,
    has_point_in_time: Option<String>,
    has_beginning: Option<String>,
    has_end: Option<String>,
    input_of: Option<Id>,
    output_of: Option<Id>,
    at_location: Option<Id>,
    to_location: Option<Id>,
    corrects: Option<Id>,
    realization_of: Option<Id>,
    reciprocal_realization_of: Option<Id>,
    fulfills: Option<Id>,
    satisfies: Option<Id>,
    settles: Option<Id>,
    resource_classified_as: Vec<String>,
    state: Option<String>,
    note: Option<String>,
    created_resource: Option<Id>,
    /// As JSON text (JSON values need a self-describing format); empty when there are none.
    #[serde(with = "json_text")]
    other_properties: OtherProperties,
    imported_from: Option<String>,
    import_source: Option<String>,
}

/// Imported properties as their JSON text, the empty string for none (most events).
mod json_text {
    use super::*;

    pub fn serialize<S: Serializer>(p: &OtherProperties, s: S) -> Result<S::Ok, S::Error> {
        if p.is_empty() {
            return s.serialize_str("");
        }
        let text = serde_json::to_string(p).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OtherProperties, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(OtherProperties::new());
        }
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Conflict")]
enum ConflictDef {
    Overdraw {
        resource: Id,
        event: Id,
        quantity: QuantityKind,
        #[serde(with = "MeasureDef")]
        balance: Measure,
        competing: Vec<Id>,
    },
    DoubleTransfer {
        resource: Id,
        event: Id,
        earlier: Id,
        of: TransferOf,
    },
    EventOnRemovedResource {
        resource: Id,
        event: Id,
        removed_by: Id,
    },
    ConcurrentCorrections {
        corrected: Id,
        applied: Id,
        superseded: Vec<Id>,
    },
    QuantityOverflow {
        resource: Id,
        event: Id,
    },
    RuleViolation {
        event: Id,
        rule: String,
        outcome: Outcome,
        message: String,
        version: u64,
        error: Option<String>,
    },
    OverFulfilment {
        commitment: Id,
        event: Id,
        #[serde(with = "MeasureDef")]
        committed: Measure,
        #[serde(with = "MeasureDef")]
        fulfilled: Measure,
        competing: Vec<Id>,
    },
    OverSatisfaction {
        intent: Id,
        by: Id,
        #[serde(with = "MeasureDef")]
        wanted: Measure,
        #[serde(with = "MeasureDef")]
        satisfied: Measure,
        competing: Vec<Id>,
    },
    OverSettlement {
        claim: Id,
        event: Id,
        #[serde(with = "MeasureDef")]
        claimed: Measure,
        #[serde(with = "MeasureDef")]
        settled: Measure,
        competing: Vec<Id>,
    },
    InvalidEvent {
        event: Id,
        reason: String,
    },
}

/// An event to encode.
struct EventRef<'a>(&'a EconomicEvent);

impl Serialize for EventRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventDef::serialize(self.0, s)
    }
}

/// A decoded event, boxed as it is read: a vector of 100,000 unboxed events (about 750 bytes
/// each) grown by doubling was the largest allocation of an open.
struct EventOwned(Box<EconomicEvent>);

impl<'de> Deserialize<'de> for EventOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventDef::deserialize(d).map(|e| EventOwned(Box::new(e)))
    }
}

/// A conflict to encode.
struct ConflictRef<'a>(&'a Conflict);

impl Serialize for ConflictRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ConflictDef::serialize(self.0, s)
    }
}

/// A decoded conflict.
struct ConflictOwned(Conflict);

impl<'de> Deserialize<'de> for ConflictOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ConflictDef::deserialize(d).map(ConflictOwned)
    }
}
