//! Track and trace, following the ValueFlows definition: a resource's provenance (trace,
//! backwards: which events and processes it came from, and what went into them) and its
//! destinations (track, forwards: where it went and what it became).
//!
//! The walk is deterministic: at every node the next events are taken in the ledger's total
//! order (newest first when tracing back, oldest first when tracking forward), each node is
//! visited once, and corrected events are not followed.

use std::collections::HashSet;

use serde::Serialize;

use super::fold::{self, Side};
use super::{Entry, OrderKey, Views};
use crate::vf::action::{InputOutput, QuantityEffect};
use crate::vf::{Action, Id};

/// One node of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum TraceNode {
    /// An economic resource.
    EconomicResource {
        /// Its id.
        id: Id,
    },
    /// An economic event.
    EconomicEvent {
        /// Its id.
        id: Id,
        /// Its action.
        action: Action,
    },
    /// A process.
    Process {
        /// Its id.
        id: Id,
    },
}

/// A node and how far it is from the start (0 for the starting resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceStep {
    /// Distance from the start, in flows.
    pub depth: usize,
    /// The node.
    pub node: TraceNode,
}

/// The result of a trace or a track: the nodes in the order the walk reached them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The resource the walk started from.
    pub start: Id,
    /// The nodes, depth-first.
    pub steps: Vec<TraceStep>,
}

impl Trace {
    /// The ids of the resources reached, in order (the start first).
    pub fn resources(&self) -> Vec<&Id> {
        self.steps
            .iter()
            .filter_map(|s| match &s.node {
                TraceNode::EconomicResource { id } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The ids of the processes reached, in order.
    pub fn processes(&self) -> Vec<&Id> {
        self.steps
            .iter()
            .filter_map(|s| match &s.node {
                TraceNode::Process { id } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The ids of the events reached, in order.
    pub fn events(&self) -> Vec<&Id> {
        self.steps
            .iter()
            .filter_map(|s| match &s.node {
                TraceNode::EconomicEvent { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }
}

#[derive(Default)]
struct Walk {
    steps: Vec<TraceStep>,
    resources: HashSet<Id>,
    processes: HashSet<Id>,
    events: HashSet<OrderKey>,
}

impl Walk {
    fn push(&mut self, depth: usize, node: TraceNode) {
        self.steps.push(TraceStep { depth, node });
    }
}

/// Whether the event brings quantity (or the thing itself) into `rid` on `side`.
fn flows_into(entry: &Entry, side: Side) -> bool {
    let fx = entry.event.action.effects();
    match side {
        Side::To | Side::Both => true,
        Side::From => {
            entry.event.created_resource.is_some()
                || matches!(
                    fx.input_output,
                    InputOutput::Output | InputOutput::OutputInput
                )
                || fx.accounting == QuantityEffect::Increment
                || fx.onhand == QuantityEffect::Increment
        }
    }
}

/// Whether the event takes the resource (or some of it) somewhere, or into a process.
fn flows_out(entry: &Entry, side: Side) -> bool {
    let fx = entry.event.action.effects();
    match side {
        Side::To => false,
        Side::Both => true,
        Side::From => {
            entry.event.input_of.is_some()
                || matches!(fx.input_output, InputOutput::Input)
                || fx.accounting == QuantityEffect::DecrementIncrement
                || fx.onhand == QuantityEffect::DecrementIncrement
                || fx.accounting == QuantityEffect::IncrementTo
        }
    }
}

fn side_of(entry: &Entry, rid: &Id) -> Option<Side> {
    fold::sides(&entry.event)
        .into_iter()
        .find(|(r, _)| *r == rid)
        .map(|(_, s)| s)
}

impl Views {
    fn counts(&self, key: &OrderKey) -> bool {
        !self.is_excluded(key)
    }

    /// Trace a resource backwards: where did it come from?
    pub fn trace(&self, resource: &Id) -> Trace {
        let mut walk = Walk::default();
        self.trace_resource(resource, 0, &mut walk);
        Trace {
            start: resource.clone(),
            steps: walk.steps,
        }
    }

    /// Track a resource forwards: where did it go?
    pub fn track(&self, resource: &Id) -> Trace {
        let mut walk = Walk::default();
        self.track_resource(resource, 0, &mut walk);
        Trace {
            start: resource.clone(),
            steps: walk.steps,
        }
    }

    fn trace_resource(&self, rid: &Id, depth: usize, walk: &mut Walk) {
        if !walk.resources.insert(rid.clone()) {
            return;
        }
        walk.push(depth, TraceNode::EconomicResource { id: rid.clone() });
        let incoming: Vec<&Entry> = self
            .resource_events(rid)
            .filter(|e| self.counts(&e.key))
            .filter(|e| side_of(e, rid).is_some_and(|s| flows_into(e, s)))
            .collect();
        for entry in incoming.into_iter().rev() {
            self.trace_event(entry, Some(rid), depth + 1, walk);
        }
    }

    fn trace_event(&self, entry: &Entry, from: Option<&Id>, depth: usize, walk: &mut Walk) {
        if !walk.events.insert(entry.key.clone()) {
            return;
        }
        let e = &entry.event;
        walk.push(
            depth,
            TraceNode::EconomicEvent {
                id: e.id.clone(),
                action: e.action,
            },
        );
        if let Some(p) = &e.output_of {
            self.trace_process(p, depth + 1, walk);
        }
        // A transfer or move into this resource comes from its source resource.
        if let Some(src) = &e.resource_inventoried_as {
            if Some(src) != from {
                self.trace_resource(src, depth + 1, walk);
            }
        }
    }

    fn trace_process(&self, pid: &Id, depth: usize, walk: &mut Walk) {
        if !walk.processes.insert(pid.clone()) {
            return;
        }
        walk.push(depth, TraceNode::Process { id: pid.clone() });
        let inputs: Vec<&Entry> = self
            .process_events(pid)
            .filter(|e| self.counts(&e.key) && e.event.input_of.as_ref() == Some(pid))
            .collect();
        for entry in inputs.into_iter().rev() {
            if !walk.events.insert(entry.key.clone()) {
                continue;
            }
            walk.push(
                depth + 1,
                TraceNode::EconomicEvent {
                    id: entry.event.id.clone(),
                    action: entry.event.action,
                },
            );
            if let Some(r) = &entry.event.resource_inventoried_as {
                self.trace_resource(r, depth + 2, walk);
            }
        }
    }

    fn track_resource(&self, rid: &Id, depth: usize, walk: &mut Walk) {
        if !walk.resources.insert(rid.clone()) {
            return;
        }
        walk.push(depth, TraceNode::EconomicResource { id: rid.clone() });
        let outgoing: Vec<&Entry> = self
            .resource_events(rid)
            .filter(|e| self.counts(&e.key))
            .filter(|e| side_of(e, rid).is_some_and(|s| flows_out(e, s)))
            .collect();
        for entry in outgoing {
            if !walk.events.insert(entry.key.clone()) {
                continue;
            }
            let e = &entry.event;
            walk.push(
                depth + 1,
                TraceNode::EconomicEvent {
                    id: e.id.clone(),
                    action: e.action,
                },
            );
            if let Some(p) = &e.input_of {
                self.track_process(p, depth + 2, walk);
            }
            if let Some(to) = fold::to_side_resource(e) {
                if to != rid {
                    self.track_resource(to, depth + 2, walk);
                }
            }
        }
    }

    fn track_process(&self, pid: &Id, depth: usize, walk: &mut Walk) {
        if !walk.processes.insert(pid.clone()) {
            return;
        }
        walk.push(depth, TraceNode::Process { id: pid.clone() });
        let outputs: Vec<&Entry> = self
            .process_events(pid)
            .filter(|e| self.counts(&e.key) && e.event.output_of.as_ref() == Some(pid))
            .collect();
        for entry in outputs {
            if !walk.events.insert(entry.key.clone()) {
                continue;
            }
            walk.push(
                depth + 1,
                TraceNode::EconomicEvent {
                    id: entry.event.id.clone(),
                    action: entry.event.action,
                },
            );
            if let Some(r) = &entry.event.resource_inventoried_as {
                self.track_resource(r, depth + 2, walk);
            }
        }
    }
}
