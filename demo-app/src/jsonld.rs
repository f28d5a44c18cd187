//! `reflow export` / `reflow import`: a network's ledger as ValueFlows JSON-LD, through the
//! engine's [`reflow::interop`] (the format, the checks and the ledger rules live there; see
//! docs/interop.md). This module adds the node, the progress bar and the command's errors.

use anyhow::{anyhow, Result};
use reflow::interop::{self, ImportOptions, ImportReport};
use reflow::{Ledger, NetworkId, Node};
use serde_json::Value;

use crate::progress;

pub use reflow::interop::VF;

/// The JSON-LD context written by `export`.
pub fn context() -> Value {
    interop::context()
}

/// The network's ledger as a JSON-LD document.
pub fn export(node: &Node, net: NetworkId) -> Result<Value> {
    Ok(node.read(net, |r| interop::export(r.ledger()))?)
}

/// Import `text` into `net`, all or nothing: checked whole against the ledger and against
/// what this device may record (an admin records anyone's events; a member only its own
/// agent's), then written in one write with a progress bar.
pub fn import(
    node: &Node,
    net: NetworkId,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let plan = node
        .read(net, |r| interop::plan_for(r, text, options))?
        .map_err(|e| anyhow!(e))?;
    let bar = progress::bar(plan.len() as u64, "importing");
    let report = node.write(net, |l| {
        plan.apply(l, &mut |done| bar.set_position(done as u64))
    });
    bar.finish_and_clear();
    Ok(report?)
}

/// [`import`] into a plain ledger (no node, no progress bar, no members), all or nothing:
/// what the JSON-LD fuzz target and tests drive.
pub fn import_ledger(l: &mut Ledger, text: &str) -> Result<ImportReport> {
    let options = ImportOptions {
        create_missing: false,
        source: "fuzz".into(),
    };
    interop::import(l, text, &options).map_err(|e| anyhow!(e))
}
