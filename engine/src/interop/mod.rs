//! Open formats Reflow reads and writes for other software (docs/interop.md is the guide):
//! ValueFlows JSON-LD in and out of a ledger ([`jsonld`]), the standard units it names
//! ([`units`]), the RDF reading of a document that round-trip tests compare ([`rdf`]), and
//! the verifiable trace bundle anyone can check offline ([`bundle`]).

pub mod bundle;
mod expand;
pub mod jsonld;
mod problem;
pub mod rdf;
pub mod units;

pub use expand::{OM2, REFLOW_TERMS, REFLOW_VOCAB, VF};
pub use jsonld::{
    context, export, export_trace, import, import_into, plan, plan_for, ImportError, ImportOptions,
    ImportPlan, ImportReport, Problem,
};
