//! The steps of a migration as they finish: recorded with their elapsed time
//! for the result, shown one line each under a spinner, and a test hook that
//! stops the process after a named step (for kill -9 tests).

use std::time::Instant;

use serde::Serialize;

use crate::migrate::StepName;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: StepName,
    pub seconds: f64,
    pub detail: String,
}

pub struct Recorder {
    pub(crate) steps: Vec<Step>,
    started: Instant,
    spinner: indicatif::ProgressBar,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            steps: vec![],
            started: Instant::now(),
            spinner: crate::progress::step_spinner(),
        }
    }

    pub(crate) fn done(&mut self, name: StepName, detail: impl Into<String>) {
        let now = Instant::now();
        self.steps.push(Step {
            name,
            seconds: (now - self.started).as_secs_f64(),
            detail: detail.into(),
        });
        let step = self.steps.last().expect("just pushed");
        if self.spinner.is_hidden() {
            // No terminal (cron, CI): one plain line per finished step, so a
            // log is not empty for minutes; none with --no-progress.
            if crate::progress::step_notes_shown() {
                eprintln!(
                    "amitool: {} done in {:.1}s: {}",
                    step.name, step.seconds, step.detail
                );
            }
        } else {
            self.spinner.println(format!(
                "{:<16} {:>7.1}s  {}",
                step.name, step.seconds, step.detail
            ));
        }
        self.started = now;
        pause_for_tests(name.as_str());
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
    }
}

/// A test hook for crash safety: with AMITOOL_TEST_PAUSE_AFTER_STEP=NAME the
/// process stops after step NAME (and says so on stderr), so a test can kill
/// -9 it there, or press Ctrl-C, which ends the pause and lets the migration
/// stop at its next await point and clean up. It blocks on purpose: nothing
/// else of the migration may run meanwhile.
fn pause_for_tests(step: &str) {
    if std::env::var("AMITOOL_TEST_PAUSE_AFTER_STEP").as_deref() != Ok(step) {
        return;
    }
    eprintln!("amitool: test hook: paused after step {step}");
    let wait = || {
        while !crate::interrupt::is_interrupted() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // Off the runtime's worker, so the Ctrl-C task keeps running.
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// Wait at `step` when `AMITOOL_TEST_PAUSE_IN` names it: a test hook, for
/// Ctrl-C (forever) or, until the file `AMITOOL_TEST_CONTINUE_FILE` exists,
/// for a test to change the world in between (a name taken mid-way).
pub async fn test_pause_in(step: &str) {
    if std::env::var("AMITOOL_TEST_PAUSE_IN").is_ok_and(|s| s == step) {
        eprintln!("amitool: test hook: paused in {step}");
        match std::env::var_os("AMITOOL_TEST_CONTINUE_FILE") {
            Some(f) => {
                while !std::path::Path::new(&f).exists() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}
