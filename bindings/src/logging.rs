//! Logging: the engine logs through `tracing`; a subscriber layer installed on first use
//! hands every line at or above the host's level to the host's [`LogSink`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Once, PoisonError, RwLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Details.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected, handled.
    Warn,
    /// Something failed.
    Error,
    /// Nothing is logged.
    Off,
}

impl LogLevel {
    fn of(level: &tracing::Level) -> LogLevel {
        match *level {
            tracing::Level::TRACE => LogLevel::Trace,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::WARN => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// Module that logged it (e.g. `reflow::node`).
    pub target: String,
    /// The message and its fields (`node open networks=0`).
    pub message: String,
}

/// Receives log lines (implemented by the host). Called from the thread that logged.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One line.
    fn log(&self, record: LogRecord);
}

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Off as u8);
static SINK: RwLock<Option<Arc<dyn LogSink>>> = RwLock::new(None);
static INSTALL: Once = Once::new();

/// Send log lines of `level` and above to `sink` (replacing any earlier sink). Installs the
/// process-wide tracing subscriber on first use (if the host process already has one, lines
/// go there instead).
#[uniffi::export]
pub fn set_log_sink(sink: Arc<dyn LogSink>) {
    install();
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = Some(sink);
}

/// Set the lowest level passed to the sink (`Off`: none).
#[uniffi::export]
pub fn set_log_level(level: LogLevel) {
    install();
    LEVEL.store(level.to_u8(), Ordering::Relaxed);
}

fn install() {
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(SinkLayer);
        // Fails only if the process has a subscriber already; then it keeps it.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

struct SinkLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = LogLevel::of(event.metadata().level());
        if level.to_u8() < LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let Some(sink) = SINK.read().unwrap_or_else(PoisonError::into_inner).clone() else {
            return;
        };
        let mut line = Line::default();
        event.record(&mut line);
        sink.log(LogRecord {
            level,
            target: event.metadata().target().to_string(),
            message: line.0,
        });
    }
}

#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            self.0.push_str(&rest);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
