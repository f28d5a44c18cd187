//! ValueFlows JSON-LD in and out of a network (docs/interop.md). Thin: reading the file,
//! checking it whole, what this device may record, writing it and the export are the
//! engine's (`reflow::interop`); this module converts records and errors.

use std::collections::HashMap;

use reflow::interop::{self, ImportError, ImportOptions, ImportReport, Problem};
use reflow::Id;

use crate::{parse_network, runtime, ReflowError, ReflowNode, Result};

/// How to import a JSON-LD file.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct ImportOptionsInput {
    /// Create the agents, units, specifications, places, plans, agreements, recipe
    /// processes and resources the file refers to but does not define (the CLI's
    /// `--create-missing`); otherwise the file is refused, naming them.
    #[uniffi(default = false)]
    pub create_missing: bool,
    /// What the events are imported from (a file name), recorded as their `importSource`.
    #[uniffi(default = "")]
    pub source: String,
}

/// One problem of a refused file: the node (its `@id`), the field as the file spells it,
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ImportProblemRecord {
    /// The node's `@id` (or `document`, `@context`).
    pub node: String,
    /// The field, if the problem is in one.
    pub field: Option<String>,
    /// What is wrong.
    pub detail: String,
}

impl From<Problem> for ImportProblemRecord {
    fn from(p: Problem) -> Self {
        ImportProblemRecord {
            node: p.node,
            field: p.field,
            detail: p.message,
        }
    }
}

/// What an import wrote (the engine's `ImportReport`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ImportReportRecord {
    /// Objects created, by ValueFlows class (events not included).
    pub created: HashMap<String, u64>,
    /// Events recorded.
    pub events: u64,
    /// Objects and events already in the ledger with the same content (skipped).
    pub unchanged: u64,
    /// What the file referred to without defining it, created on request: `Class id`.
    pub created_missing: Vec<String>,
    /// Standard OM units the file used by name, created from the engine's table.
    pub standard_units: Vec<String>,
    /// Resources the file describes but no event of it creates, each given a `raise`.
    pub opening_balances: Vec<String>,
    /// Properties the engine does not model, kept with their objects: IRI to how many nodes.
    pub kept_properties: HashMap<String, u64>,
    /// Nodes of classes the engine does not model, not imported: `Class id`.
    pub skipped: Vec<String>,
    /// How the file was read.
    pub notes: Vec<String>,
    /// The report as the CLI prints it.
    pub summary: String,
}

impl From<ImportReport> for ImportReportRecord {
    fn from(r: ImportReport) -> Self {
        let summary = r.to_string();
        let count = |m: std::collections::BTreeMap<String, usize>| {
            m.into_iter().map(|(k, v)| (k, v as u64)).collect()
        };
        ImportReportRecord {
            created: count(r.created),
            events: r.events as u64,
            unchanged: r.unchanged as u64,
            created_missing: r.created_missing,
            standard_units: r.standard_units,
            opening_balances: r.opening_balances,
            kept_properties: count(r.kept_properties),
            skipped: r.skipped,
            notes: r.notes,
            summary,
        }
    }
}

/// Why an import wrote nothing. Unlike `ReflowError`, a refused file carries its problems as
/// records (node, field, detail), so an app can list them.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ImportFailed {
    /// The text is not JSON.
    #[error("not JSON: {reason}")]
    NotJson {
        /// The parser's message.
        reason: String,
    },
    /// The file has problems: every one found, each naming the node and the field.
    #[error("nothing imported: {}", problems.iter().map(|p| match &p.field {
        Some(f) => format!("node {}, field {f}: {}", p.node, p.detail),
        None => format!("node {}: {}", p.node, p.detail),
    }).collect::<Vec<_>>().join("; "))]
    Refused {
        /// The problems.
        problems: Vec<ImportProblemRecord>,
    },
    /// This device may not record one of the file's events, or create one of its agents
    /// (only an admin records for others).
    #[error("nothing imported: node {node}: {reason}")]
    NotAllowed {
        /// The event's or agent's `@id`.
        node: String,
        /// The refusal.
        reason: String,
    },
    /// The node could not import (closed, unknown network, storage, or the ledger changed
    /// between the check and the write): `reason` is the `ReflowError`'s message.
    #[error("{reason}")]
    Failed {
        /// Why.
        reason: String,
    },
}

impl From<ImportError> for ImportFailed {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::NotJson(reason) => ImportFailed::NotJson { reason },
            ImportError::Refused(problems) => ImportFailed::Refused {
                problems: problems.into_iter().map(Into::into).collect(),
            },
            ImportError::NotAllowed { node, source } => ImportFailed::NotAllowed {
                node,
                reason: source.to_string(),
            },
            other => ImportFailed::Failed {
                reason: other.to_string(),
            },
        }
    }
}

impl From<ReflowError> for ImportFailed {
    fn from(e: ReflowError) -> Self {
        ImportFailed::Failed {
            reason: e.to_string(),
        }
    }
}

#[uniffi::export]
impl ReflowNode {
    /// Import a ValueFlows JSON-LD document into `network`, all or nothing: checked whole
    /// against the ledger and against what this device may record (an admin records anyone's
    /// events, a member only its own agent's), then written in one signed write. Importing
    /// the same file again changes nothing. Raises `ImportFailed.Refused` with every problem
    /// (node, field, detail) of a bad file.
    pub fn import_jsonld(
        &self,
        network: String,
        text: String,
        options: ImportOptionsInput,
    ) -> std::result::Result<ImportReportRecord, ImportFailed> {
        let network = parse_network(&network)?;
        let node = self.node()?;
        let _guard = runtime().enter();
        let options = ImportOptions {
            create_missing: options.create_missing,
            source: options.source,
        };
        let plan = node
            .read(network, |r| interop::plan_for(r, &text, &options))
            .map_err(ReflowError::from)??;
        let report = node
            .write(network, |l| plan.apply(l, &mut |_| {}))
            .map_err(ReflowError::from)?;
        Ok(report.into())
    }

    /// The whole ledger of `network` as a ValueFlows JSON-LD document (pretty JSON): what
    /// `import_jsonld` reads back, into this or any ledger.
    pub fn export_jsonld(&self, network: String) -> Result<String> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            Ok(format!(
                "{:#}",
                n.read(network, |r| interop::export(r.ledger()))?
            ))
        })
    }

    /// One resource's trace (its provenance) as a ValueFlows JSON-LD document: the trace's
    /// events and the objects they name. It imports into an empty ledger.
    pub fn export_trace_jsonld(&self, network: String, resource: String) -> Result<String> {
        let network = parse_network(&network)?;
        self.with_node(|n| {
            let doc = n.read(network, |r| {
                interop::export_trace(r.ledger(), &Id::from(resource))
            })??;
            Ok(format!("{doc:#}"))
        })
    }
}
