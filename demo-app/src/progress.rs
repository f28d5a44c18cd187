//! Progress bars and spinners on stderr, drawn only when stderr is a terminal (quiet when
//! piped or redirected, and when `REFLOW_NO_PROGRESS` is set).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether progress is drawn.
pub fn visible() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("REFLOW_NO_PROGRESS").is_none()
}

/// A bar of `len` steps, labelled `msg`.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}

/// A spinner for work of unknown length.
pub fn spinner(msg: String) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}
