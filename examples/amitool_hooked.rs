//! amitool with test hooks, for the end-to-end tests that kill or interrupt
//! a migration where it matters (never installed: `cargo install` takes the
//! `amitool` binary only). The hooks are read from the environment here,
//! not in amitool's own code:
//!
//! - AMITOOL_TEST_PAUSE_AFTER_STEP=NAME: say "test hook: paused after step
//!   NAME" on stderr after that step and wait there until Ctrl-C (or kill -9);
//! - AMITOOL_TEST_PAUSE_IN=POINT (register, stream, download, local-import-snapshot): say "test hook:
//!   paused in POINT" and wait there until the file AMITOOL_TEST_CONTINUE_FILE
//!   exists (without one, until Ctrl-C);
//! - AMITOOL_TEST_PAUSE_AFTER_BLOCKS=N: once N blocks of a stream are
//!   journaled, say so and wait for ever (for kill -9);
//! - AMITOOL_TEST_PROGRESS_EVERY_MS=N: a plain progress line every N ms.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use amitool::migrate::hooks::{self, Hooks};
use amitool::migrate::StepName;

struct FromEnv {
    after_step: Option<String>,
    pause_in: Option<String>,
    continue_file: Option<std::path::PathBuf>,
    after_blocks: Option<usize>,
}

/// Wait without holding the async runtime's worker, until Ctrl-C.
fn wait_for_ctrl_c() {
    let wait = || {
        while !amitool::interrupt::is_interrupted() {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

impl Hooks for FromEnv {
    fn after_step(&self, step: StepName) {
        if self.after_step.as_deref() == Some(step.as_str()) {
            eprintln!("amitool: test hook: paused after step {step}");
            wait_for_ctrl_c();
        }
    }

    fn blocks_journaled(&self, n: usize) {
        if self.after_blocks.is_some_and(|at| n >= at) {
            eprintln!("amitool: test hook: paused after {n} blocks");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    fn pause_in<'a>(&'a self, point: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if !self.pausing_in(point) {
                return;
            }
            match &self.continue_file {
                Some(f) => {
                    while !f.exists() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        })
    }

    fn pause_in_blocking(&self, point: &str) {
        if self.pausing_in(point) {
            while !self.continue_file.as_ref().is_some_and(|f| f.exists()) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl FromEnv {
    fn pausing_in(&self, point: &str) -> bool {
        let hit = self.pause_in.as_deref() == Some(point);
        if hit {
            eprintln!("amitool: test hook: paused in {point}");
        }
        hit
    }
}

fn main() -> std::process::ExitCode {
    let var = |k: &str| std::env::var(k).ok();
    if let Some(ms) = var("AMITOOL_TEST_PROGRESS_EVERY_MS").and_then(|v| v.parse().ok()) {
        amitool::progress::set_plain_every(Duration::from_millis(ms));
    }
    hooks::install(Arc::new(FromEnv {
        after_step: var("AMITOOL_TEST_PAUSE_AFTER_STEP"),
        pause_in: var("AMITOOL_TEST_PAUSE_IN"),
        continue_file: std::env::var_os("AMITOOL_TEST_CONTINUE_FILE").map(Into::into),
        after_blocks: var("AMITOOL_TEST_PAUSE_AFTER_BLOCKS").and_then(|v| v.parse().ok()),
    }));
    amitool::cli::process::main()
}
