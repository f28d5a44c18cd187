//! The ValueFlows model: actions and their effects, quantities, and the objects of a ledger.
//!
//! Pure data types; no storage, no I/O.

pub mod action;
mod model;
mod quantity;

pub use action::{Action, ActionEffects, EventFields, UnknownAction, ACTION_TABLE};
pub use model::*;
pub use quantity::{Measure, Quantity, MAX_QUANTITY, MAX_SCALE};
