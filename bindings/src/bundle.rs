//! Verifiable trace bundles (docs/interop.md): export from a node, verify anywhere. Thin: the
//! format and every check are the engine's (`reflow::interop::bundle`).

use reflow::interop::bundle::{self, VerifiedTrace};
use reflow::Id;

use crate::{parse_network, EventRecord, MemberRecord, ReflowError, ReflowNode, Result};

/// An event of a verified trace bundle and who signed it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct VerifiedEventRecord {
    /// The event, as its signed change wrote it.
    pub event: EventRecord,
    /// The change that recorded it (hex).
    pub change: String,
    /// The signing device's membership when it signed (device, role, agent, who admitted it).
    pub member: MemberRecord,
}

/// What `verify_trace_bundle` established.
#[derive(Debug, Clone, uniffi::Record)]
pub struct VerifiedTraceRecord {
    /// The network id (hex hash of its genesis change).
    pub network: String,
    /// The network's name.
    pub network_name: String,
    /// The device that created the network (its first admin).
    pub creator: String,
    /// The traced resource.
    pub resource: String,
    /// The trace's events, in the trace's order.
    pub events: Vec<VerifiedEventRecord>,
    /// How many signed changes the bundle holds.
    pub changes: u64,
}

impl From<VerifiedTrace> for VerifiedTraceRecord {
    fn from(t: VerifiedTrace) -> Self {
        VerifiedTraceRecord {
            network: t.network.to_string(),
            network_name: t.network_name,
            creator: t.creator.to_string(),
            resource: t.resource.to_string(),
            events: t
                .events
                .into_iter()
                .map(|e| {
                    let mut event = e.event;
                    event.id = e.id;
                    VerifiedEventRecord {
                        event: event.into(),
                        change: e.change,
                        member: e.member.into(),
                    }
                })
                .collect(),
            changes: t.changes as u64,
        }
    }
}

/// Check a trace bundle offline, as anyone (no node needed): every signature, the membership
/// from the network's genesis to each signing device, and that each event is what its signed
/// change wrote. Raises `ReflowError.BundleRefused` naming the change, event, field or device.
#[uniffi::export]
pub fn verify_trace_bundle(bundle: Vec<u8>) -> Result<VerifiedTraceRecord> {
    bundle::verify(&bundle)
        .map(VerifiedTraceRecord::from)
        .map_err(|e| ReflowError::BundleRefused {
            message: e.to_string(),
        })
}

#[uniffi::export]
impl ReflowNode {
    /// The verifiable trace bundle of `resource` (its trace backwards, with the signed changes
    /// behind it): JSON bytes, for `verify_trace_bundle` or `reflow verify`.
    pub fn export_trace_bundle(&self, network: String, resource: String) -> Result<Vec<u8>> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            n.read(network, |r| bundle::export(r, &Id::from(resource)))?
                .map_err(|e| match e {
                    bundle::BundleError::UnknownResource(_) => ReflowError::NotFound {
                        message: e.to_string(),
                    },
                    _ => ReflowError::Other {
                        message: e.to_string(),
                    },
                })
        })
    }
}
