//! Where a live hop's time goes: the engine's own `tracing` spans (verification, admission
//! and apply, the store's persist and its commit) timed while a round is measured.
//!
//! A `tracing` layer that keeps, per span name of the `reflow` crate, the time a span was
//! entered (its busy time, from its enters to its exits) for spans created while armed (the
//! measured events of a live round), so that setup (opening stores, joins) does not count.
//! The engine's verification, receive and store spans are entered for the whole of their
//! synchronous work; a span around an async task (a connection) counts its polls only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::measure::percentile;

/// The span timings of one process, armed and disarmed by the live phase.
#[derive(Clone, Default)]
pub struct SpanTimes {
    armed: Arc<AtomicBool>,
    samples: Arc<Mutex<BTreeMap<&'static str, Vec<f64>>>>,
}

impl SpanTimes {
    /// Install the layer as this process's subscriber (once, before the nodes start).
    pub fn install() -> SpanTimes {
        let times = SpanTimes::default();
        let layer = times
            .clone()
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && m.target().starts_with("reflow")
            }));
        // A second install in one process (not done by the harness) keeps the first.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        times
    }

    /// The samples (a panic elsewhere while they were held leaves them usable).
    fn samples(&self) -> MutexGuard<'_, BTreeMap<&'static str, Vec<f64>>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start counting, from nothing.
    pub fn arm(&self) {
        self.samples().clear();
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Stop counting; per span name: how many, and the p50 / p99 / max and total in
    /// seconds.
    pub fn disarm(&self) -> Value {
        self.armed.store(false, Ordering::SeqCst);
        let samples = std::mem::take(&mut *self.samples());
        let mut out = serde_json::Map::new();
        for (name, mut s) in samples {
            s.sort_by(f64::total_cmp);
            out.insert(
                name.to_string(),
                json!({
                    "count": s.len(),
                    "p50": percentile(&s, 50.0),
                    "p99": percentile(&s, 99.0),
                    "max": s.last().copied().unwrap_or(0.0),
                    "total": s.iter().sum::<f64>(),
                }),
            );
        }
        Value::Object(out)
    }
}

/// A span's busy time so far, kept in its extensions (only for spans created while armed).
#[derive(Default)]
struct Busy {
    total: Duration,
    since: Option<Instant>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Busy::default());
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(busy) = span.extensions_mut().get_mut::<Busy>() {
                busy.since = Some(Instant::now());
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(busy) = span.extensions_mut().get_mut::<Busy>() {
                if let Some(since) = busy.since.take() {
                    busy.total += since.elapsed();
                }
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(total) = span.extensions().get::<Busy>().map(|b| b.total) else {
            return;
        };
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        self.samples()
            .entry(span.name())
            .or_default()
            .push(total.as_secs_f64());
    }
}
