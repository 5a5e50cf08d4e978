//! The steps of a migration as they finish: recorded with their elapsed time
//! for the result, shown one line each under a spinner (and a test's hook
//! called after each, `migrate::hooks`).

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
                let item = crate::progress::item()
                    .map(|i| format!("{i}: "))
                    .unwrap_or_default();
                eprintln!(
                    "amitool: {item}{} done in {:.1}s: {}",
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
        crate::migrate::hooks::after_step(name);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
    }
}
