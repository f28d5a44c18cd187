//! The flows report over this ledger's events (rules in [`crate::flows`]).

use std::collections::HashMap;

use super::Ledger;
use crate::error::{PlanningError, Result};
use crate::flows::{parse_time, report, FlowEvent, FlowQuery, FlowReport};
use crate::vf::{Id, ResourceDescription};

impl Ledger {
    /// Totals of the events matching `query`, grouped as it asks (see [`crate::flows`]).
    /// Corrected events are left out. Refuses a `from`/`to` that is not ISO 8601.
    pub fn flows(&self, query: &FlowQuery) -> Result<FlowReport> {
        for (field, v) in [("from", &query.from), ("to", &query.to)] {
            if let Some(v) = v {
                if parse_time(v).is_none() {
                    return Err(PlanningError::InvalidTime {
                        field,
                        value: v.clone(),
                    }
                    .into());
                }
            }
        }
        // The specification of each resource an event names, read once per resource.
        let mut specs: HashMap<&Id, Option<Id>> = HashMap::new();
        let entries: Vec<_> = self
            .views
            .entries_in_order()
            .filter(|e| !self.views.is_excluded(&e.key))
            .collect();
        for e in &entries {
            if e.event.resource_conforms_to.is_none() {
                if let Some(r) = &e.event.resource_inventoried_as {
                    specs.entry(r).or_insert_with(|| {
                        self.get::<ResourceDescription>(r)
                            .and_then(|d| d.conforms_to)
                    });
                }
            }
        }
        let events = entries.iter().map(|entry| {
            let e = &entry.event;
            let spec = e.resource_conforms_to.as_ref().or_else(|| {
                e.resource_inventoried_as
                    .as_ref()
                    .and_then(|r| specs.get(r))
                    .and_then(Option::as_ref)
            });
            let q = e.resource_quantity.as_ref().or(e.effort_quantity.as_ref());
            FlowEvent {
                action: e.action,
                spec,
                provider: e.provider.as_ref(),
                receiver: e.receiver.as_ref(),
                place: e.at_location.as_ref().or(e.to_location.as_ref()),
                time: e
                    .has_point_in_time
                    .as_deref()
                    .or(e.has_end.as_deref())
                    .or(e.has_beginning.as_deref()),
                quantity: q.map(|m| (&m.has_unit, m.has_numerical_value)),
            }
        });
        Ok(report(query, events))
    }
}
