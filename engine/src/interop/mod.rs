//! Open formats: ValueFlows JSON-LD in and out of a ledger ([`jsonld`]), the standard units
//! it names ([`units`]), and the RDF reading of a document that round-trip tests compare
//! ([`rdf`]). docs/interop.md is the guide.

mod expand;
pub mod jsonld;
pub mod rdf;
pub mod units;

pub use expand::{OM2, VF};
pub use jsonld::{
    context, export, export_trace, import, import_into, plan, plan_for, ImportError, ImportOptions,
    ImportPlan, ImportReport, Problem,
};
