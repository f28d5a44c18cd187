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
        // A container is made of what was packed into it (combine): trace its contents.
        let packed: Vec<&Entry> = self
            .combined_into(rid)
            .filter(|e| self.counts(&e.key))
            .collect();
        for entry in packed.into_iter().rev() {
            self.trace_event(entry, Some(rid), depth + 1, walk);
        }
    }

    /// The container `rid` was in just before the event at `key` (the to-resource of the
    /// latest counted combine on it before `key`, unless a separate came after that).
    fn container_before(&self, rid: &Id, key: &OrderKey) -> Option<Id> {
        let mut container = None;
        for e in self.resource_events(rid) {
            if e.key >= *key {
                break;
            }
            if !self.counts(&e.key) || side_of(e, rid) != Some(Side::From) {
                continue;
            }
            match e.event.action {
                Action::Combine => container = e.event.to_resource_inventoried_as.clone(),
                Action::Separate => container = None,
                _ => {}
            }
        }
        container
    }

    /// The VF "previous" of an event: the flows it directly came from. For an output of a
    /// process, the process's counted inputs; for a separate, the combine that packed the
    /// resource; otherwise the latest counted event before it that brought quantity into its
    /// (from-side) resource. In the total order, oldest first.
    pub fn previous(&self, key: &OrderKey) -> Vec<Id> {
        let Some(entry) = self.entries.get(key) else {
            return Vec::new();
        };
        let e = &entry.event;
        if let Some(p) = &e.output_of {
            return self
                .process_events(p)
                .filter(|x| self.counts(&x.key) && x.event.input_of.as_ref() == Some(p))
                .map(|x| x.event.id.clone())
                .collect();
        }
        let Some(rid) = &e.resource_inventoried_as else {
            return Vec::new();
        };
        let before: Vec<&Entry> = self
            .resource_events(rid)
            .filter(|x| x.key < *key && self.counts(&x.key))
            .collect();
        let found = if e.action == Action::Separate {
            before
                .iter()
                .rev()
                .find(|x| x.event.action == Action::Combine && side_of(x, rid) == Some(Side::From))
        } else {
            before
                .iter()
                .rev()
                .find(|x| side_of(x, rid).is_some_and(|s| flows_into(x, s)))
        };
        found.map(|x| vec![x.event.id.clone()]).unwrap_or_default()
    }

    /// The VF "next" of an event: the flows that directly followed from it. For an input of a
    /// process, the process's counted outputs; for a combine, the events on the container
    /// after it; otherwise the counted events after it that took from its resource (or, for a
    /// transfer, from its to-resource). In the total order.
    pub fn next(&self, key: &OrderKey) -> Vec<Id> {
        let Some(entry) = self.entries.get(key) else {
            return Vec::new();
        };
        let e = &entry.event;
        if let Some(p) = &e.input_of {
            return self
                .process_events(p)
                .filter(|x| self.counts(&x.key) && x.event.output_of.as_ref() == Some(p))
                .map(|x| x.event.id.clone())
                .collect();
        }
        let target = if e.action == Action::Combine {
            e.to_resource_inventoried_as.as_ref()
        } else {
            fold::to_side_resource(e).or(e.resource_inventoried_as.as_ref())
        };
        let Some(rid) = target else {
            return Vec::new();
        };
        self.resource_events(rid)
            .filter(|x| x.key > *key && self.counts(&x.key))
            .filter(|x| side_of(x, rid).is_some_and(|s| flows_out(x, s)))
            .take(1)
            .map(|x| x.event.id.clone())
            .collect()
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
            // Unpacked (separate): it came out of the container it was packed into.
            if e.action == Action::Separate && e.output_of.is_none() {
                if let Some(c) = self.container_before(src, &entry.key) {
                    self.trace_resource(&c, depth + 1, walk);
                }
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
            // Packed (combine): it goes wherever its container goes.
            if e.action == Action::Combine {
                if let Some(c) = &e.to_resource_inventoried_as {
                    if c != rid {
                        self.track_resource(c, depth + 2, walk);
                    }
                }
            }
        }
        // A container carries its contents: track what was packed into it.
        let packed: Vec<&Entry> = self
            .combined_into(rid)
            .filter(|e| self.counts(&e.key))
            .collect();
        for entry in packed {
            if let Some(content) = &entry.event.resource_inventoried_as {
                if content != rid {
                    self.track_resource(content, depth + 1, walk);
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
