//! Verifiable trace bundles: a resource's trace that anyone, member of the network or not,
//! checks offline (docs/interop.md, "Verifiable trace bundles").
//!
//! A bundle is one JSON document holding the trace's events as ValueFlows JSON-LD, the signed
//! Automerge changes behind them (every change in their causal past, down to the network's
//! genesis), and a summary of the devices that signed the events and of the membership that
//! let them. [`verify`] trusts none of it: it checks every signature, replays the changes
//! through the same judgment every replica applies ([`Replica::join`]: membership from the
//! genesis admin down to each device, admission, the network's rules), computes the trace
//! from the ledger the changes make, and compares it field by field with the JSON-LD, the
//! provenance and the device summary. Anything that differs is named in a [`BundleError`].
//!
//! The JSON-LD of the events is written here from the engine's own types (an event node is
//! the event's serde form with `@id` and `@type`), so the bundle does not depend on the
//! application's export; its context is fixed ([`context`]) and checked on verification,
//! since a different context would give the same JSON another meaning.
//!
//! Pure: no I/O (randomness only for the throw-away key of the verifying replica).

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::{Change, ChangeHash};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::identity::{
    verify_changes, ChangeSignature, DeviceId, DeviceKey, NetworkId, SignatureProblem, SignedChange,
};
use crate::membership::{Member, MembershipRecord, Rejection, Role};
use crate::replica::Replica;
use crate::vf::{EconomicEvent, Id};

/// The bundle format version this code writes. It reads this one and version 1 (whose
/// `trace` resolved ids against `"@base": "urn:reflow:"`, see [`context_v1`]).
pub const FORMAT_VERSION: u64 = 2;

/// The bundle's `type`.
pub const BUNDLE_TYPE: &str = "reflow/trace-bundle";

/// The ValueFlows namespace (the ontology's, `vf-1.0.ttl`).
pub const VF: &str = "https://w3id.org/valueflows/ont/vf#";

/// The namespace of Reflow's own ids in a bundle's JSON-LD: version 2 writes an id that is
/// not an absolute IRI as this prefix followed by the id, percent-encoded (the export's
/// rule, docs/interop.md); version 1 wrote the id as it is, relative to this `@base`.
pub const BASE: &str = "urn:reflow:";

/// Event terms whose values are references to other nodes.
const REFS: [&str; 17] = [
    "provider",
    "receiver",
    "resourceInventoriedAs",
    "toResourceInventoriedAs",
    "resourceConformsTo",
    "inputOf",
    "outputOf",
    "atLocation",
    "toLocation",
    "corrects",
    "realizationOf",
    "reciprocalRealizationOf",
    "fulfills",
    "satisfies",
    "settles",
    "hasUnit",
    "createdResource",
];

/// The JSON-LD context of a bundle's `trace` document (fixed for format version 2): no
/// `@base`, since every id is written as an absolute IRI.
pub fn context() -> Value {
    let mut c = context_v1();
    if let Value::Object(m) = &mut c {
        m.remove("@base");
    }
    c
}

/// The context of format version 1, which relied on `"@base": "urn:reflow:"` to make its
/// relative ids absolute. A strict RFC 3986 resolver (a stock JSON-LD processor) cannot
/// resolve a relative reference against that non-hierarchical base as intended, which is
/// why version 2 writes absolute IRIs. Read, never written.
pub fn context_v1() -> Value {
    let mut c = Map::new();
    c.insert("@vocab".into(), json!(VF));
    c.insert("@base".into(), json!(BASE));
    c.insert("vf".into(), json!(VF));
    c.insert("xsd".into(), json!("http://www.w3.org/2001/XMLSchema#"));
    for r in REFS {
        c.insert(r.into(), json!({"@type": "@id"}));
    }
    c.insert("hasNumericalValue".into(), json!({"@type": "xsd:decimal"}));
    Value::Object(c)
}

/// Why a bundle could not be written or was refused. Every variant names what is wrong: the
/// change (by hash, hex), the event (by id), the field, the device.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    /// Not JSON, or not shaped like a bundle.
    #[error("not a trace bundle: {0}")]
    NotABundle(String),
    /// A format version this code does not read.
    #[error(
        "trace bundle format version {found} is not supported (this version reads 1 to {supported})"
    )]
    FormatVersion {
        /// The bundle's `formatVersion`.
        found: u64,
        /// The newest version this code reads (it reads every version from 1 to this).
        supported: u64,
    },
    /// A change's bytes are not an Automerge change, or its signature is not 64 hex bytes.
    #[error("change #{index} of the bundle is unreadable: {detail}")]
    ChangeBytes {
        /// Its position in `changes`.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// A change's bytes hash to another hash than the one the bundle gives.
    #[error("change #{index}: its bytes hash to {actual}, the bundle says {declared}")]
    ChangeHash {
        /// Its position in `changes`.
        index: usize,
        /// The hash in the bundle.
        declared: String,
        /// The hash of the bytes.
        actual: String,
    },
    /// A change's signature does not verify with its author's key (or it has no device author).
    #[error("change {change}: signature refused ({problem:?})")]
    Signature {
        /// The change (hex).
        change: String,
        /// What is wrong.
        problem: SignatureProblem,
    },
    /// The network's genesis change is not in the bundle.
    #[error("the network's genesis change {0} is missing")]
    MissingGenesis(String),
    /// A change the bundle's changes depend on is missing.
    #[error("change {missing} is missing (change {needed_by} depends on it)")]
    MissingChange {
        /// The missing change (hex).
        missing: String,
        /// A change of the bundle that depends on it (hex).
        needed_by: String,
    },
    /// A change is refused by the network's judgment (a non-member's, a removed device's, one
    /// breaking the admission rules or the network's rules).
    #[error("change {change} is refused: {reason}")]
    Refused {
        /// The change (hex).
        change: String,
        /// Why (boxed: a rejection is large, and errors are returned by value).
        reason: Box<Rejection>,
    },
    /// The `trace` document's `@context` is not the one of this format version.
    #[error("the bundle's JSON-LD @context is not the trace-bundle context of format version 1")]
    Context,
    /// The traced resource is not in the ledger the changes make.
    #[error("resource {0} is not in the signed ledger")]
    UnknownResource(String),
    /// An event of the JSON-LD is not in the trace the signed changes give.
    #[error("event {event} of the JSON-LD is not in the trace the signed changes give")]
    UnsignedEvent {
        /// The event id.
        event: String,
    },
    /// An event of the trace the signed changes give is missing from the JSON-LD.
    #[error("event {event} of the signed trace is missing from the JSON-LD")]
    MissingEvent {
        /// The event id.
        event: String,
    },
    /// An event field of the JSON-LD differs from what the signed change wrote.
    #[error("event {event}: field {field} is {found} in the JSON-LD, the signed change {change} says {signed}")]
    EventField {
        /// The event id.
        event: String,
        /// The field (nested fields joined by `.`, e.g. `resourceQuantity.hasNumericalValue`).
        field: String,
        /// The JSON-LD's value (compact JSON, or `absent`).
        found: String,
        /// The signed value.
        signed: String,
        /// The change that recorded the event (hex).
        change: String,
    },
    /// An event's provenance entry differs from the signed changes.
    #[error("event {event}: provenance {field} is {found}, the signed changes say {signed}")]
    Provenance {
        /// The event id.
        event: String,
        /// `change` or `device`, or `entry` (absent or duplicated).
        field: String,
        /// The bundle's value.
        found: String,
        /// The signed value.
        signed: String,
    },
    /// A device entry differs from the membership the signed records give.
    #[error(
        "device {device}: {field} is {found} in the bundle, the membership records say {signed}"
    )]
    Device {
        /// The device (hex public key).
        device: String,
        /// `agent`, `role`, `addedBy`, or `entry` (absent).
        field: String,
        /// The bundle's value.
        found: String,
        /// The signed value.
        signed: String,
    },
    /// A device entry names a key that signed no event of the trace.
    #[error("device {device} of the bundle signed no event of the trace")]
    UnknownDevice {
        /// The key the entry names.
        device: String,
    },
    /// Another top-level field differs from the signed changes (`heads`, `networkName`).
    #[error("{field} is {found} in the bundle, the signed changes say {signed}")]
    Field {
        /// The field.
        field: String,
        /// The bundle's value.
        found: String,
        /// The signed value.
        signed: String,
    },
    /// The signed ledger could not be built or read (for export: the trace failed).
    #[error("cannot read the signed ledger: {0}")]
    Ledger(String),
}

/// The bundle document (format version 1). Hex strings stay strings here so that a tampered
/// value is reported by what it means, not as a parse error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BundleFile {
    format_version: u64,
    #[serde(rename = "type")]
    kind: String,
    network: String,
    network_name: String,
    resource: String,
    heads: Vec<String>,
    trace: Value,
    provenance: Vec<ProvenanceEntry>,
    devices: Vec<DeviceEntry>,
    changes: Vec<ChangeEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProvenanceEntry {
    event: String,
    change: String,
    device: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeviceEntry {
    device: String,
    agent: String,
    role: Role,
    added_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangeEntry {
    hash: String,
    signature: String,
    bytes: String,
}

/// An event of a verified trace, with who signed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedEvent {
    /// The event id.
    pub id: Id,
    /// The event as the signed change wrote it.
    pub event: EconomicEvent,
    /// The change that recorded it (hex).
    pub change: String,
    /// The device that signed that change.
    pub device: DeviceId,
    /// That device's membership when it signed (role, agent, who admitted it).
    pub member: Member,
}

/// What [`verify`] established.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedTrace {
    /// The network (the hash of its genesis change).
    pub network: NetworkId,
    /// The network's name, from the ledger.
    pub network_name: String,
    /// The device that created the network (its first admin), from the genesis change.
    pub creator: DeviceId,
    /// The traced resource.
    pub resource: Id,
    /// The events of the trace, in the trace's order.
    pub events: Vec<VerifiedEvent>,
    /// How many signed changes the bundle holds.
    pub changes: usize,
    /// The heads of the ledger the changes make (hex, sorted).
    pub heads: Vec<String>,
}

fn ledger_err(e: impl std::fmt::Display) -> BundleError {
    BundleError::Ledger(e.to_string())
}

/// The node id of event `id` in a bundle of format `version`: version 1 wrote the id as it
/// is (relative to `@base`), version 2 as an absolute IRI (`jsonld::full_iri`).
fn node_id(version: u64, id: &str) -> String {
    if version == 1 {
        id.to_string()
    } else {
        super::jsonld::full_iri(id)
    }
}

/// An event as a JSON-LD node of format `version`: its serde form with `@id` and `@type`;
/// in version 2 every id (its own and its references) an absolute IRI.
fn event_node(version: u64, id: &Id, event: &EconomicEvent) -> Value {
    let mut node = Map::new();
    node.insert("@id".into(), json!(node_id(version, id.as_str())));
    node.insert("@type".into(), json!("EconomicEvent"));
    if let Ok(Value::Object(mut fields)) = serde_json::to_value(event) {
        if version != 1 {
            super::jsonld::encode_refs_by(&mut fields, &|k| REFS.contains(&k));
        }
        node.extend(fields);
    }
    Value::Object(node)
}

/// The events of `resource`'s trace in `replica`, with their ids.
fn trace_events(replica: &Replica, resource: &Id) -> Result<Vec<(Id, EconomicEvent)>, BundleError> {
    let ledger = replica.ledger();
    let trace = ledger
        .trace(resource)
        .map_err(|_| BundleError::UnknownResource(resource.to_string()))?;
    trace
        .events()
        .into_iter()
        .map(|id| {
            ledger
                .event(id)
                .map(|e| (id.clone(), e))
                .ok_or_else(|| ledger_err(format!("event {id} of the trace is not in the ledger")))
        })
        .collect()
}

fn sorted_heads(replica: &Replica) -> Vec<String> {
    let mut heads: Vec<String> = replica
        .ledger()
        .heads()
        .iter()
        .map(|h| h.to_string())
        .collect();
    heads.sort();
    heads
}

/// Write the bundle of `resource`'s trace (backwards: where it came from) in `replica`.
///
/// The bundle holds the changes in the causal past of the changes that recorded the trace's
/// events. If the trace of that smaller ledger differs from the trace now (a later change
/// not in that past matters to it, such as a correction), the bundle holds every change. The
/// written bundle is verified before it is returned.
pub fn export(replica: &Replica, resource: &Id) -> Result<Vec<u8>, BundleError> {
    let _span = tracing::debug_span!("bundle_export", resource = %resource).entered();
    let events = trace_events(replica, resource)?;
    let ledger = replica.ledger();
    let mut roots = Vec::with_capacity(events.len());
    for (id, _) in &events {
        roots.push(
            ledger
                .event_change(id)
                .ok_or_else(|| ledger_err(format!("no change recorded event {id}")))?,
        );
    }
    let all = replica.signed_changes_since(&[]);
    let later: HashSet<ChangeHash> = ledger
        .changes_since(&roots)
        .iter()
        .map(|c| c.hash())
        .collect();
    let past: Vec<SignedChange> = all
        .iter()
        .filter(|c| !later.contains(&c.hash()))
        .cloned()
        .collect();
    let network = replica.network();
    let key = DeviceKey::generate().map_err(ledger_err)?;
    let (small, receipt) = Replica::join(network, key, past.clone()).map_err(ledger_err)?;
    let ids = |e: &[(Id, EconomicEvent)]| e.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
    let (source, changes) = match trace_events(&small, resource) {
        Ok(small_events)
            if receipt.refused.is_empty()
                && receipt.waiting == 0
                && ids(&small_events) == ids(&events) =>
        {
            (&small, past)
        }
        _ => (replica, all),
    };
    let bytes = write(source, resource, &changes)?;
    verify(&bytes)?;
    Ok(bytes)
}

fn write(
    replica: &Replica,
    resource: &Id,
    changes: &[SignedChange],
) -> Result<Vec<u8>, BundleError> {
    let events = trace_events(replica, resource)?;
    let mut provenance = Vec::with_capacity(events.len());
    let mut devices: BTreeMap<String, DeviceEntry> = BTreeMap::new();
    for (id, _) in &events {
        let p = replica
            .provenance(id)
            .ok_or_else(|| ledger_err(format!("event {id} has no provenance")))?;
        let member = p
            .member
            .ok_or_else(|| ledger_err(format!("event {id} was signed by no member")))?;
        provenance.push(ProvenanceEntry {
            event: id.to_string(),
            change: p.change,
            device: p.device.to_string(),
        });
        devices
            .entry(p.device.to_string())
            .or_insert_with(|| DeviceEntry {
                device: member.device.to_string(),
                agent: member.agent.to_string(),
                role: member.role,
                added_by: member.added_by.to_string(),
            });
    }
    let file = BundleFile {
        format_version: FORMAT_VERSION,
        kind: BUNDLE_TYPE.into(),
        network: replica.network().to_string(),
        network_name: replica.ledger().network_name(),
        resource: resource.to_string(),
        heads: sorted_heads(replica),
        trace: json!({
            "@context": context(),
            "@graph": events
                .iter()
                .map(|(id, e)| event_node(FORMAT_VERSION, id, e))
                .collect::<Vec<_>>(),
        }),
        provenance,
        devices: devices.into_values().collect(),
        changes: changes
            .iter()
            .map(|c| ChangeEntry {
                hash: c.hash().to_string(),
                signature: hex::encode(c.signature.0),
                bytes: hex::encode(c.change.raw_bytes()),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&file).map_err(ledger_err)
}

/// Compact JSON of a value, or `absent`.
fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_string(), Value::to_string)
}

/// The leaves of a JSON object, by dotted path (arrays are leaves).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), value.clone());
        }
    }
}

fn decode_changes(entries: &[ChangeEntry]) -> Result<Vec<SignedChange>, BundleError> {
    let mut out = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let bad = |detail: String| BundleError::ChangeBytes { index, detail };
        let bytes = hex::decode(&e.bytes).map_err(|err| bad(format!("bytes: {err}")))?;
        let change =
            Change::from_bytes(bytes).map_err(|err| bad(format!("not a change: {err}")))?;
        let signature: [u8; 64] = hex::decode(&e.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("the signature is not 64 hex bytes".into()))?;
        let actual = change.hash().to_string();
        if actual != e.hash {
            return Err(BundleError::ChangeHash {
                index,
                declared: e.hash.clone(),
                actual,
            });
        }
        out.push(SignedChange {
            change,
            signature: ChangeSignature(signature),
        });
    }
    Ok(out)
}

/// Check a bundle offline, as anyone: see the module documentation for what is checked. On
/// success, the trace the signed changes give, with who signed each event.
pub fn verify(bytes: &[u8]) -> Result<VerifiedTrace, BundleError> {
    let _span = tracing::debug_span!("bundle_verify", bytes = bytes.len()).entered();
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| BundleError::NotABundle(e.to_string()))?;
    let version = match value.get("formatVersion").and_then(Value::as_u64) {
        Some(v @ (1 | FORMAT_VERSION)) => v,
        Some(found) => {
            return Err(BundleError::FormatVersion {
                found,
                supported: FORMAT_VERSION,
            })
        }
        None => return Err(BundleError::NotABundle("no formatVersion".into())),
    };
    let file: BundleFile =
        serde_json::from_value(value).map_err(|e| BundleError::NotABundle(e.to_string()))?;
    if file.kind != BUNDLE_TYPE {
        return Err(BundleError::NotABundle(format!(
            "type is {:?}, not {BUNDLE_TYPE:?}",
            file.kind
        )));
    }
    let network: NetworkId = file
        .network
        .parse()
        .map_err(|_| BundleError::NotABundle(format!("network {:?}", file.network)))?;

    // Signatures, hashes, completeness: before anything is replayed.
    let changes = decode_changes(&file.changes)?;
    for (c, verdict) in changes.iter().zip(verify_changes(&network, &changes)) {
        if let Err(problem) = verdict {
            return Err(BundleError::Signature {
                change: c.hash().to_string(),
                problem,
            });
        }
    }
    let present: HashSet<ChangeHash> = changes.iter().map(SignedChange::hash).collect();
    let genesis = changes
        .iter()
        .find(|c| c.hash() == network.genesis())
        .ok_or_else(|| BundleError::MissingGenesis(network.genesis().to_string()))?;
    let creator = match MembershipRecord::from_message(genesis.change.message()) {
        Some(Ok(MembershipRecord::Genesis { creator, .. })) => creator,
        _ => return Err(BundleError::MissingGenesis(network.genesis().to_string())),
    };
    for c in &changes {
        if let Some(missing) = c.change.deps().iter().find(|d| !present.contains(d)) {
            return Err(BundleError::MissingChange {
                missing: missing.to_string(),
                needed_by: c.hash().to_string(),
            });
        }
    }

    // The same judgment every replica applies.
    let key = DeviceKey::generate().map_err(ledger_err)?;
    let count = changes.len();
    let (replica, receipt) = Replica::join(network, key, changes).map_err(ledger_err)?;
    if let Some((change, reason)) = receipt.refused.first() {
        return Err(BundleError::Refused {
            change: change.to_string(),
            reason: Box::new(reason.clone()),
        });
    }
    if receipt.waiting > 0 {
        return Err(ledger_err(format!(
            "{} changes wait for changes the bundle lacks",
            receipt.waiting
        )));
    }

    // The JSON-LD against the signed trace.
    let doc = file
        .trace
        .as_object()
        .ok_or_else(|| BundleError::NotABundle("trace is not a JSON-LD object".into()))?;
    if let Some(k) = doc.keys().find(|k| *k != "@context" && *k != "@graph") {
        return Err(BundleError::NotABundle(format!("trace has the key {k:?}")));
    }
    let want_context = if version == 1 {
        context_v1()
    } else {
        context()
    };
    if doc.get("@context") != Some(&want_context) {
        return Err(BundleError::Context);
    }
    let graph = doc
        .get("@graph")
        .and_then(Value::as_array)
        .ok_or_else(|| BundleError::NotABundle("trace has no @graph array".into()))?;
    let mut nodes: HashMap<String, &Value> = HashMap::new();
    for node in graph {
        let id = node
            .get("@id")
            .and_then(Value::as_str)
            .ok_or_else(|| BundleError::NotABundle("a node of the trace has no @id".into()))?;
        if nodes.insert(id.to_string(), node).is_some() {
            return Err(BundleError::NotABundle(format!("event {id} appears twice")));
        }
    }
    let resource = Id::from(file.resource.as_str());
    let signed = trace_events(&replica, &resource)?;
    let signed_ids: HashSet<String> = signed
        .iter()
        .map(|(id, _)| node_id(version, id.as_str()))
        .collect();
    if let Some(id) = graph
        .iter()
        .filter_map(|n| n.get("@id").and_then(Value::as_str))
        .find(|id| !signed_ids.contains(*id))
    {
        return Err(BundleError::UnsignedEvent {
            event: id.to_string(),
        });
    }
    let provenance: HashMap<&str, &ProvenanceEntry> = file
        .provenance
        .iter()
        .map(|p| (p.event.as_str(), p))
        .collect();
    if provenance.len() != file.provenance.len() || provenance.len() != signed.len() {
        return Err(BundleError::Provenance {
            event: resource.to_string(),
            field: "entry".into(),
            found: format!("{} entries", file.provenance.len()),
            signed: format!("{} events", signed.len()),
        });
    }
    let mut events = Vec::with_capacity(signed.len());
    for (id, event) in signed {
        let node =
            nodes
                .get(&node_id(version, id.as_str()))
                .ok_or_else(|| BundleError::MissingEvent {
                    event: id.to_string(),
                })?;
        let p = replica
            .provenance(&id)
            .ok_or_else(|| ledger_err(format!("event {id} has no provenance")))?;
        let mut found = BTreeMap::new();
        flatten("", node, &mut found);
        let mut want = BTreeMap::new();
        flatten("", &event_node(version, &id, &event), &mut want);
        let fields: std::collections::BTreeSet<&String> = found.keys().chain(want.keys()).collect();
        for field in fields {
            if found.get(field) != want.get(field) {
                return Err(BundleError::EventField {
                    event: id.to_string(),
                    field: field.clone(),
                    found: show(found.get(field)),
                    signed: show(want.get(field)),
                    change: p.change.clone(),
                });
            }
        }
        let entry = provenance
            .get(id.as_str())
            .ok_or_else(|| BundleError::Provenance {
                event: id.to_string(),
                field: "entry".into(),
                found: "absent".into(),
                signed: p.change.clone(),
            })?;
        for (field, found, signed) in [
            ("change", &entry.change, p.change.clone()),
            ("device", &entry.device, p.device.to_string()),
        ] {
            if *found != signed {
                return Err(BundleError::Provenance {
                    event: id.to_string(),
                    field: field.into(),
                    found: found.clone(),
                    signed,
                });
            }
        }
        let member = p
            .member
            .ok_or_else(|| ledger_err(format!("event {id} was signed by no member")))?;
        events.push(VerifiedEvent {
            id,
            event,
            change: p.change,
            device: p.device,
            member,
        });
    }

    // The device summary against the membership records.
    let signers: HashMap<String, &Member> = events
        .iter()
        .map(|e| (e.device.to_string(), &e.member))
        .collect();
    let entries: HashMap<&str, &DeviceEntry> = file
        .devices
        .iter()
        .map(|d| (d.device.as_str(), d))
        .collect();
    if let Some(d) = file
        .devices
        .iter()
        .find(|d| !signers.contains_key(&d.device))
    {
        return Err(BundleError::UnknownDevice {
            device: d.device.clone(),
        });
    }
    for e in &events {
        let device = e.device.to_string();
        let m = &e.member;
        let Some(entry) = entries.get(device.as_str()) else {
            return Err(BundleError::Device {
                device,
                field: "entry".into(),
                found: "absent".into(),
                signed: format!("{} acting for {}", m.role, m.agent),
            });
        };
        for (field, found, signed) in [
            ("agent", entry.agent.clone(), m.agent.to_string()),
            ("role", entry.role.to_string(), m.role.to_string()),
            ("addedBy", entry.added_by.clone(), m.added_by.to_string()),
        ] {
            if found != signed {
                return Err(BundleError::Device {
                    device,
                    field: field.into(),
                    found,
                    signed,
                });
            }
        }
    }

    let network_name = replica.ledger().network_name();
    let heads = sorted_heads(&replica);
    for (field, found, signed) in [
        (
            "networkName",
            file.network_name.clone(),
            network_name.clone(),
        ),
        ("heads", file.heads.join(","), heads.join(",")),
    ] {
        if found != signed {
            return Err(BundleError::Field {
                field: field.into(),
                found,
                signed,
            });
        }
    }
    Ok(VerifiedTrace {
        network,
        network_name,
        creator,
        resource,
        events,
        changes: count,
        heads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vf::{Action, Agent, Process, ResourceDescription, Unit};

    /// A network of Ana (admin) and Bob (member): Bob spins wool and Ana's dye into yarn; a
    /// later, unrelated event of Ana's is no part of the yarn's trace.
    struct Market {
        admin: Replica,
        bob: Replica,
    }

    fn market() -> Market {
        let (mut admin, genesis) = Replica::create_network(
            "market",
            DeviceKey::generate().expect("key"),
            Agent::person("ana", "Ana"),
        )
        .expect("create");
        let bob_key = DeviceKey::generate().expect("key");
        let (_, mut changes) = admin
            .write(|l| {
                l.create(Agent::person("bob", "Bob"))?;
                l.create(Unit::new("kg", "kilogram", "kg"))
            })
            .expect("agent");
        changes.extend(
            admin
                .add_member(bob_key.id(), Role::Member, Id::from("bob"))
                .expect("add"),
        );
        let (_, dye) = admin
            .write(|l| {
                l.record_event(
                    EconomicEvent::new(Action::Produce, "ana", "ana")
                        .quantity(1, "kg")
                        .at_time("2026-11-02T10:00:00Z")
                        .creating(ResourceDescription::new("dye", "Indigo dye")),
                )
            })
            .expect("dye");
        changes.extend(dye);
        let mut all = genesis;
        all.extend(changes);
        let (mut bob, receipt) = Replica::join(admin.network(), bob_key, all).expect("join");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        let (_, spun) = bob
            .write(|l| {
                l.record_event(
                    EconomicEvent::new(Action::Produce, "bob", "bob")
                        .quantity(10, "kg")
                        .creating(ResourceDescription::new("wool", "Wool")),
                )?;
                l.create(Process::new("spin", "Spinning", None))?;
                l.record_event(
                    EconomicEvent::new(Action::Consume, "bob", "bob")
                        .resource("wool")
                        .quantity(4, "kg")
                        .input_of("spin"),
                )?;
                l.record_event(
                    EconomicEvent::new(Action::Consume, "bob", "bob")
                        .resource("dye")
                        .quantity(1, "kg")
                        .input_of("spin"),
                )?;
                l.record_event(
                    EconomicEvent::new(Action::Produce, "bob", "bob")
                        .quantity("3.5".parse::<crate::Quantity>().expect("quantity"), "kg")
                        .output_of("spin")
                        .creating(ResourceDescription::new("yarn", "Blue yarn")),
                )
            })
            .expect("spin");
        let receipt = admin.receive(spun).expect("receive");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        admin
            .write(|l| {
                l.record_event(
                    EconomicEvent::new(Action::Produce, "ana", "ana")
                        .quantity(2, "kg")
                        .creating(ResourceDescription::new("apples", "Apples")),
                )
            })
            .expect("apples");
        Market { admin, bob }
    }

    fn good() -> (Market, Value) {
        let m = market();
        let bytes = export(&m.admin, &Id::from("yarn")).expect("export");
        let v = serde_json::from_slice(&bytes).expect("json");
        (m, v)
    }

    fn check(v: &Value) -> Result<VerifiedTrace, BundleError> {
        verify(&serde_json::to_vec(v).expect("json"))
    }

    /// The index in `@graph` of the event with this action and resource.
    fn node(v: &Value, action: &str, field: &str, value: &str) -> usize {
        v["trace"]["@graph"]
            .as_array()
            .expect("graph")
            .iter()
            .position(|n| {
                n["action"] == action
                    && n[field] == crate::interop::jsonld::full_iri(value).as_str()
            })
            .expect("event in the bundle")
    }

    #[test]
    fn a_good_bundle_verifies_with_who_signed_what() {
        let (m, v) = good();
        let t = check(&v).expect("verifies");
        assert_eq!(t.resource, Id::from("yarn"));
        assert_eq!(t.network, m.admin.network());
        assert_eq!(t.creator, m.admin.device());
        let actions: Vec<Action> = t.events.iter().map(|e| e.event.action).collect();
        assert_eq!(actions.len(), 5, "{actions:?}");
        assert_eq!(
            actions.iter().filter(|a| **a == Action::Consume).count(),
            2,
            "{actions:?}"
        );
        let dye = t
            .events
            .iter()
            .find(|e| e.event.created_resource == Some(Id::from("dye")))
            .expect("dye");
        assert_eq!(dye.device, m.admin.device());
        assert_eq!(dye.member.role, Role::Admin);
        let yarn = t
            .events
            .iter()
            .find(|e| e.event.created_resource == Some(Id::from("yarn")))
            .expect("yarn");
        assert_eq!(yarn.device, m.bob.device());
        assert_eq!(yarn.member.agent, Id::from("bob"));
        assert_eq!(yarn.member.added_by, m.admin.device());
        // The later apples are not in the bundle: only the trace's causal past is.
        let all = m.admin.signed_changes_since(&[]).len();
        assert!(t.changes < all, "{} of {all} changes", t.changes);
        assert_eq!(v["changes"].as_array().map(Vec::len), Some(t.changes));
    }

    fn field_error(v: &Value) -> (String, String) {
        match check(v) {
            Err(BundleError::EventField { event, field, .. }) => (event, field),
            other => panic!("expected an event-field error, got {other:?}"),
        }
    }

    #[test]
    fn a_tampered_event_field_is_named() {
        let (_, v) = good();
        let cases: [(&str, &str, &str, &str, Value); 5] = [
            // (action, selector field, selector value, field to change, new value)
            (
                "produce",
                "createdResource",
                "yarn",
                "resourceQuantity",
                json!({"hasNumericalValue": "35", "hasUnit": "kg"}),
            ),
            (
                "consume",
                "resourceInventoriedAs",
                "wool",
                "action",
                json!("use"),
            ),
            (
                "produce",
                "createdResource",
                "dye",
                "provider",
                json!("bob"),
            ),
            (
                "produce",
                "createdResource",
                "dye",
                "hasPointInTime",
                json!("2026-11-01T10:00:00Z"),
            ),
            (
                "consume",
                "resourceInventoriedAs",
                "dye",
                "resourceInventoriedAs",
                json!("wool"),
            ),
        ];
        let want = [
            "resourceQuantity.hasNumericalValue",
            "action",
            "provider",
            "hasPointInTime",
            "resourceInventoriedAs",
        ];
        for ((action, sel, sel_value, field, value), want) in cases.into_iter().zip(want) {
            let mut t = v.clone();
            let i = node(&t, action, sel, sel_value);
            let id = t["trace"]["@graph"][i]["@id"]
                .as_str()
                .expect("id")
                .trim_start_matches(BASE)
                .to_string();
            t["trace"]["@graph"][i][field] = value;
            assert_eq!(field_error(&t), (id, want.to_string()), "{field}");
        }
        // A field the signed change does not have.
        let mut t = v.clone();
        let i = node(&t, "produce", "createdResource", "wool");
        t["trace"]["@graph"][i]["note"] = json!("organic");
        assert_eq!(field_error(&t).1, "note");
        // A quantity unit.
        let mut t = v.clone();
        t["trace"]["@graph"][i]["resourceQuantity"]["hasUnit"] = json!("g");
        assert_eq!(field_error(&t).1, "resourceQuantity.hasUnit");
    }

    #[test]
    fn events_added_or_left_out_of_the_json_ld_are_named() {
        let (_, v) = good();
        let mut t = v.clone();
        let i = node(&t, "produce", "createdResource", "wool");
        let removed = t["trace"]["@graph"]
            .as_array_mut()
            .expect("graph")
            .remove(i);
        assert_eq!(
            check(&t),
            Err(BundleError::MissingEvent {
                event: removed["@id"]
                    .as_str()
                    .expect("id")
                    .trim_start_matches(BASE)
                    .into()
            })
        );
        let mut t = v.clone();
        let mut extra = t["trace"]["@graph"][i].clone();
        extra["@id"] = json!("999@00");
        t["trace"]["@graph"]
            .as_array_mut()
            .expect("graph")
            .push(extra);
        assert_eq!(
            check(&t),
            Err(BundleError::UnsignedEvent {
                event: "999@00".into()
            })
        );
        // Another context gives the same JSON another meaning.
        let mut t = v.clone();
        t["trace"]["@context"]["@vocab"] = json!("https://example.org/not-vf#");
        assert_eq!(check(&t), Err(BundleError::Context));
    }

    #[test]
    fn a_tampered_signature_or_change_is_named() {
        let (_, v) = good();
        let n = v["changes"].as_array().expect("changes").len();
        for k in [0, n / 2, n - 1] {
            let mut t = v.clone();
            let sig = t["changes"][k]["signature"]
                .as_str()
                .expect("sig")
                .to_string();
            let flipped = format!("{}{}", if &sig[..1] == "0" { "1" } else { "0" }, &sig[1..]);
            t["changes"][k]["signature"] = json!(flipped);
            let hash = t["changes"][k]["hash"].as_str().expect("hash").to_string();
            assert_eq!(
                check(&t),
                Err(BundleError::Signature {
                    change: hash,
                    problem: SignatureProblem::BadSignature
                }),
                "change #{k}"
            );
        }
        // A byte of a change (its operations, past the header) changed.
        let mut t = v.clone();
        let bytes = t["changes"][n - 1]["bytes"]
            .as_str()
            .expect("bytes")
            .to_string();
        let mut raw = hex::decode(&bytes).expect("hex");
        let at = raw.len() - 3;
        raw[at] ^= 0x01;
        t["changes"][n - 1]["bytes"] = json!(hex::encode(&raw));
        assert!(
            matches!(
                check(&t),
                Err(BundleError::ChangeBytes { index, .. } | BundleError::ChangeHash { index, .. })
                    if index == n - 1
            ),
            "{:?}",
            check(&t)
        );
    }

    #[test]
    fn a_removed_change_is_named() {
        let (_, v) = good();
        let n = v["changes"].as_array().expect("changes").len();
        for k in 0..n {
            let mut t = v.clone();
            let removed = t["changes"].as_array_mut().expect("changes").remove(k);
            let hash = removed["hash"].as_str().expect("hash").to_string();
            match check(&t) {
                Err(BundleError::MissingGenesis(h)) => assert_eq!((k, h), (0, hash)),
                Err(BundleError::MissingChange { missing, .. }) => assert_eq!(missing, hash),
                // The newest change: the yarn and its producing event are gone with it.
                Err(BundleError::UnknownResource(r)) => {
                    assert_eq!((k, r.as_str()), (n - 1, "yarn"))
                }
                other => panic!("removing change #{k} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_tampered_key_or_membership_summary_is_named() {
        let (m, v) = good();
        let bob = m.bob.device().to_string();
        let other = DeviceKey::generate().expect("key").id().to_string();
        let di = v["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .position(|d| d["device"] == bob.as_str())
            .expect("bob listed");
        let mut t = v.clone();
        t["devices"][di]["device"] = json!(other);
        assert_eq!(
            check(&t),
            Err(BundleError::UnknownDevice {
                device: other.clone()
            })
        );
        let mut t = v.clone();
        t["devices"][di]["agent"] = json!("ana");
        assert!(
            matches!(check(&t), Err(BundleError::Device { ref device, ref field, .. }) if *device == bob && field == "agent"),
            "{:?}",
            check(&t)
        );
        let mut t = v.clone();
        t["devices"][di]["role"] = json!("admin");
        assert!(
            matches!(check(&t), Err(BundleError::Device { ref field, .. }) if field == "role"),
            "{:?}",
            check(&t)
        );
        // The provenance names another key for an event.
        let mut t = v.clone();
        let pi = v["provenance"]
            .as_array()
            .expect("provenance")
            .iter()
            .position(|p| p["device"] == bob.as_str())
            .expect("bob signed");
        t["provenance"][pi]["device"] = json!(other);
        assert!(
            matches!(check(&t), Err(BundleError::Provenance { ref field, ref found, .. }) if field == "device" && *found == other),
            "{:?}",
            check(&t)
        );
        // The network id (the chain's root) replaced: every signature is of another network.
        let mut t = v.clone();
        t["network"] = json!(hex::encode([7u8; 32]));
        assert!(
            matches!(check(&t), Err(BundleError::Signature { .. })),
            "{:?}",
            check(&t)
        );
    }

    #[test]
    fn a_change_of_a_non_member_device_is_refused() {
        let (m, v) = good();
        // Eve is no member; she writes an event as Bob's agent on top of the bundle's ledger
        // and signs it with her own (valid) key.
        let eve = DeviceKey::generate().expect("key");
        let changes = decode_changes(
            &serde_json::from_value::<Vec<ChangeEntry>>(v["changes"].clone()).expect("changes"),
        )
        .expect("decode");
        let mut ledger = crate::Ledger::from_changes(
            changes.iter().map(|c| c.change.clone()).collect(),
            eve.session_actor().expect("actor"),
        )
        .expect("ledger");
        let id = ledger
            .record_event(
                EconomicEvent::new(Action::Consume, "bob", "bob")
                    .resource("wool")
                    .quantity(1, "kg")
                    .input_of("spin"),
            )
            .expect("eve's event");
        let change = ledger.last_local_change().expect("change");
        let signature = eve.sign_change(&m.admin.network(), &change.hash());
        let mut t = v.clone();
        t["changes"].as_array_mut().expect("changes").push(json!({
            "hash": change.hash().to_string(),
            "signature": hex::encode(signature.0),
            "bytes": hex::encode(change.raw_bytes()),
        }));
        let node = event_node(FORMAT_VERSION, &id, &ledger.event(&id).expect("event"));
        t["trace"]["@graph"]
            .as_array_mut()
            .expect("graph")
            .push(node);
        match check(&t) {
            Err(BundleError::Refused { change: c, reason }) => {
                assert_eq!(c, change.hash().to_string());
                assert!(
                    matches!(*reason, Rejection::NotAMember { .. }),
                    "{reason:?}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn version_2_writes_absolute_iris_and_no_base() {
        let (_, v) = good();
        assert_eq!(v["formatVersion"], json!(2));
        assert!(v["trace"]["@context"].get("@base").is_none());
        let graph = v["trace"]["@graph"].as_array().expect("graph");
        assert!(!graph.is_empty());
        for n in graph {
            let id = n["@id"].as_str().expect("@id");
            assert!(id.starts_with(BASE), "{id}");
            for r in REFS {
                if let Some(x) = n.get(r).and_then(Value::as_str) {
                    assert!(x.starts_with(BASE), "{r}: {x}");
                }
            }
            if let Some(u) = n["resourceQuantity"]["hasUnit"].as_str() {
                assert!(u.starts_with(BASE), "hasUnit: {u}");
            }
        }
        // The version 1 context gives version 2's JSON another meaning: refused.
        let mut t = v.clone();
        t["trace"]["@context"] = context_v1();
        assert_eq!(check(&t), Err(BundleError::Context));
    }

    #[test]
    fn another_format_version_or_document_is_refused() {
        let (_, v) = good();
        let mut t = v.clone();
        t["formatVersion"] = json!(3);
        assert_eq!(
            check(&t),
            Err(BundleError::FormatVersion {
                found: 3,
                supported: 2
            })
        );
        let mut t = v.clone();
        t["unexpected"] = json!(true);
        assert!(matches!(check(&t), Err(BundleError::NotABundle(_))));
        assert!(matches!(
            verify(b"{not json"),
            Err(BundleError::NotABundle(_))
        ));
        let mut t = v.clone();
        t["networkName"] = json!("another market");
        assert!(
            matches!(check(&t), Err(BundleError::Field { ref field, .. }) if field == "networkName"),
            "{:?}",
            check(&t)
        );
    }
}
