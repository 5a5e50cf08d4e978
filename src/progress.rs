//! Progress bars on stderr, hidden when there is no terminal, with
//! `--no-progress`, or when the output is JSON.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct ProgressPolicy {
    pub enabled: bool,
}

impl ProgressPolicy {
    pub fn new(no_progress: bool, json: bool) -> Self {
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        ProgressPolicy {
            enabled: tty && !no_progress && !json,
        }
    }

    /// A bar counting `len` units of work.
    pub fn bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed}]")
                .expect("static template"),
        );
        pb.set_message(message.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }
}

static STEPS_SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static NOTES_SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether plain progress notes (a migration's id and journal as it starts)
/// go to stderr: always, but with `--no-progress`.
pub fn show_notes(shown: bool) {
    NOTES_SHOWN.store(shown, std::sync::atomic::Ordering::Relaxed);
}

pub fn notes_shown() -> bool {
    NOTES_SHOWN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Decide once, for the whole run, whether long pipelines show their steps.
pub fn show_steps(policy: ProgressPolicy) {
    STEPS_SHOWN.store(policy.enabled, std::sync::atomic::Ordering::Relaxed);
}

/// A spinner that prints one line per finished step with its elapsed time;
/// hidden when steps are not shown.
pub fn step_spinner() -> ProgressBar {
    if !STEPS_SHOWN.load(std::sync::atomic::Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("static template"),
    );
    pb.set_message("working");
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}
