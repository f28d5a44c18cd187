//! The flows report: totals of economic events grouped by action, resource specification,
//! agent, place and period (day, ISO week, month), with time-range filters. What a city
//! wants to see ("kilograms of textile collected, sorted, recycled per month and place").
//!
//! Pure. An event's time is its `hasPointInTime`, else its `hasEnd`, else its `hasBeginning`
//! (ISO 8601: a date-time with offset, or a date, read as midnight UTC), converted to UTC
//! for the period. Corrected events are left out (their corrections count in their place).
//! Quantities are summed per unit, exactly (decimals); a unit is always part of a row's key,
//! so kilograms are never added to hours.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::vf::{Action, Id, Quantity};

/// A period of time rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Period {
    /// A UTC day: `2026-03-01`.
    Day,
    /// An ISO 8601 week: `2026-W09`.
    Week,
    /// A UTC month: `2026-03`.
    Month,
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            other => Err(format!("unknown period {other:?}: day, week or month")),
        }
    }
}

/// What a row of the report can be keyed by (besides the period and the unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FlowDimension {
    /// The event's action.
    Action,
    /// The event's `resourceConformsTo`, else the `conformsTo` of its resource.
    ResourceSpecification,
    /// The provider.
    Provider,
    /// The receiver.
    Receiver,
    /// The event's `atLocation`, else its `toLocation`.
    Place,
}

impl std::str::FromStr for FlowDimension {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "action" => Ok(FlowDimension::Action),
            "spec" | "resourceSpecification" => Ok(FlowDimension::ResourceSpecification),
            "provider" => Ok(FlowDimension::Provider),
            "receiver" => Ok(FlowDimension::Receiver),
            "place" => Ok(FlowDimension::Place),
            other => Err(format!(
                "unknown dimension {other:?}: action, spec, provider, receiver or place"
            )),
        }
    }
}

/// Which events to total and how to group them. Empty filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowQuery {
    /// The dimensions rows are keyed by, in this order (the unit is always a key).
    pub group_by: Vec<FlowDimension>,
    /// Group by this period too.
    pub period: Option<Period>,
    /// Only events at or after this time (ISO 8601). Undated events are then left out.
    pub from: Option<String>,
    /// Only events before this time (ISO 8601). Undated events are then left out.
    pub to: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only events this agent provided or received.
    pub agent: Option<Id>,
    /// Only at this place.
    pub place: Option<Id>,
    /// Only of this resource specification.
    pub resource_specification: Option<Id>,
}

/// One row: the totals of the events that share its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRow {
    /// The period (when grouped by one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// The action (when grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The resource specification (when grouped by it; `None` in the row if unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_specification: Option<Id>,
    /// The provider (when grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<Id>,
    /// The receiver (when grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Id>,
    /// The place (when grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<Id>,
    /// The unit of `quantity` (`None`: events without a quantity).
    pub unit: Option<Id>,
    /// The sum of the events' `resourceQuantity` (else `effortQuantity`).
    pub quantity: Quantity,
    /// How many events.
    pub events: usize,
}

/// The report: rows sorted by key, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowReport {
    /// The query it answers.
    pub query: FlowQuery,
    /// The rows, sorted by (period, action, specification, provider, receiver, place, unit).
    pub rows: Vec<FlowRow>,
    /// Events left out because they carry no readable time while a period or a time range
    /// was asked for.
    pub undated: usize,
}

/// One event as the report sees it (what `Ledger` hands over).
#[derive(Debug, Clone)]
pub(crate) struct FlowEvent<'a> {
    pub action: Action,
    pub spec: Option<&'a Id>,
    pub provider: Option<&'a Id>,
    pub receiver: Option<&'a Id>,
    pub place: Option<&'a Id>,
    pub time: Option<&'a str>,
    pub quantity: Option<(&'a Id, Quantity)>,
}

/// Parse an ISO 8601 date-time with offset (RFC 3339) or a date (midnight UTC).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some(t.to_offset(UtcOffset::UTC));
    }
    // A date: exactly YYYY-MM-DD.
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    Some(date.midnight().assume_utc())
}

/// The label of the period `t` falls in.
pub fn period_label(t: OffsetDateTime, p: Period) -> String {
    let d = t.date();
    match p {
        Period::Day => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        Period::Week => {
            let (y, w, _) = d.to_iso_week_date();
            format!("{y:04}-W{w:02}")
        }
        Period::Month => format!("{:04}-{:02}", d.year(), u8::from(d.month())),
    }
}

/// Total `events` as `query` asks. `from`/`to` must already be checked to parse.
pub(crate) fn report<'a>(
    query: &FlowQuery,
    events: impl Iterator<Item = FlowEvent<'a>>,
) -> FlowReport {
    let from = query.from.as_deref().and_then(parse_time);
    let to = query.to.as_deref().and_then(parse_time);
    let needs_time = query.period.is_some() || from.is_some() || to.is_some();
    let has = |d: FlowDimension| query.group_by.contains(&d);
    let mut rows: BTreeMap<FlowRow, (Quantity, usize)> = BTreeMap::new();
    let mut undated = 0;
    for e in events {
        if query.action.is_some_and(|a| a != e.action)
            || query
                .agent
                .as_ref()
                .is_some_and(|a| e.provider != Some(a) && e.receiver != Some(a))
            || query.place.as_ref().is_some_and(|p| e.place != Some(p))
            || query
                .resource_specification
                .as_ref()
                .is_some_and(|s| e.spec != Some(s))
        {
            continue;
        }
        let t = e.time.and_then(parse_time);
        if needs_time {
            let Some(t) = t else {
                undated += 1;
                continue;
            };
            if from.is_some_and(|f| t < f) || to.is_some_and(|x| t >= x) {
                continue;
            }
        }
        let key = FlowRow {
            period: query.period.and_then(|p| t.map(|t| period_label(t, p))),
            action: has(FlowDimension::Action).then_some(e.action),
            resource_specification: e
                .spec
                .filter(|_| has(FlowDimension::ResourceSpecification))
                .cloned(),
            provider: e.provider.filter(|_| has(FlowDimension::Provider)).cloned(),
            receiver: e.receiver.filter(|_| has(FlowDimension::Receiver)).cloned(),
            place: e.place.filter(|_| has(FlowDimension::Place)).cloned(),
            unit: e.quantity.map(|(u, _)| u.clone()),
            quantity: Quantity::ZERO,
            events: 0,
        };
        let slot = rows.entry(key).or_insert((Quantity::ZERO, 0));
        if let Some((_, q)) = e.quantity {
            // Within the checked limits a sum cannot overflow (docs/data-model.md).
            slot.0 = slot.0.checked_add(q).unwrap_or(slot.0);
        }
        slot.1 += 1;
    }
    FlowReport {
        query: query.clone(),
        rows: rows
            .into_iter()
            .map(|(mut k, (q, n))| {
                k.quantity = q;
                k.events = n;
                k
            })
            .collect(),
        undated,
    }
}

impl FlowReport {
    /// The report as CSV (RFC 4180: comma-separated, CRLF line ends, fields quoted when they
    /// hold a comma, quote or line break). Columns: period, action, resourceSpecification,
    /// provider, receiver, place, unit, quantity, events (empty where not grouped).
    pub fn to_csv(&self) -> String {
        fn field(s: &str) -> String {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        }
        let opt = |o: &Option<Id>| o.as_ref().map(|i| field(i.as_str())).unwrap_or_default();
        let mut out = String::from(
            "period,action,resourceSpecification,provider,receiver,place,unit,quantity,events\r\n",
        );
        for r in &self.rows {
            let cols = [
                r.period.as_deref().map(field).unwrap_or_default(),
                r.action.map(|a| a.to_string()).unwrap_or_default(),
                opt(&r.resource_specification),
                opt(&r.provider),
                opt(&r.receiver),
                opt(&r.place),
                opt(&r.unit),
                r.quantity.to_string(),
                r.events.to_string(),
            ];
            out.push_str(&cols.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_iso_weeks_and_months() {
        let t = parse_time("2026-01-01T00:30:00+01:00").expect("parses");
        // 23:30 UTC on 31 December 2025, in ISO week 1 of 2026.
        assert_eq!(period_label(t, Period::Day), "2025-12-31");
        assert_eq!(period_label(t, Period::Month), "2025-12");
        assert_eq!(period_label(t, Period::Week), "2026-W01");
        let d = parse_time("2026-03-01").expect("a date");
        assert_eq!(period_label(d, Period::Week), "2026-W09");
        assert!(parse_time("2018-10-14T8:00:00-0:00").is_none());
        assert!(parse_time("yesterday").is_none());
    }
}
