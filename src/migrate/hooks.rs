//! Seams for tests that stop a migration where a kill -9 or Ctrl-C would
//! land: after a step is recorded, before a journal write, after blocks of
//! a stream are journaled, or inside a named point. Production code installs
//! none and every call here does nothing. A test binary installs hooks for
//! its whole process ([`install`]: `examples/amitool_hooked.rs`, which the
//! end-to-end kill and Ctrl-C tests run), a unit test for one task
//! ([`scope`]: the fake host's failure matrix).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::migrate::{Journal, StepName};

/// What a test wants to happen at each seam; every method does nothing by default.
pub trait Hooks: Send + Sync {
    /// A step was recorded (its detail said).
    fn after_step(&self, _step: StepName) {}
    /// The journal is about to be written.
    fn before_journal_write(&self, _journal: &Journal) {}
    /// `n` blocks of the stream are journaled.
    fn blocks_journaled(&self, _n: usize) {}
    /// Inside a named point of a step (`register`, `stream`, `download`).
    fn pause_in<'a>(&'a self, _point: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
    /// Inside a named point of blocking code (`local-import-snapshot`).
    fn pause_in_blocking(&self, _point: &str) {}
}

static GLOBAL: OnceLock<Arc<dyn Hooks>> = OnceLock::new();

tokio::task_local! {
    static SCOPED: Arc<dyn Hooks>;
}

/// Hooks for the rest of the process (a test binary); false when some are already set.
pub fn install(hooks: Arc<dyn Hooks>) -> bool {
    GLOBAL.set(hooks).is_ok()
}

/// Run `fut` with `hooks` (this task only).
pub async fn scope<F: Future>(hooks: Arc<dyn Hooks>, fut: F) -> F::Output {
    SCOPED.scope(hooks, fut).await
}

fn current() -> Option<Arc<dyn Hooks>> {
    SCOPED
        .try_with(Arc::clone)
        .ok()
        .or_else(|| GLOBAL.get().cloned())
}

pub(crate) fn after_step(step: StepName) {
    if let Some(h) = current() {
        h.after_step(step);
    }
}

pub(crate) fn before_journal_write(journal: &Journal) {
    if let Some(h) = current() {
        h.before_journal_write(journal);
    }
}

pub(crate) fn blocks_journaled(n: usize) {
    if let Some(h) = current() {
        h.blocks_journaled(n);
    }
}

pub(crate) async fn pause_in(point: &str) {
    if let Some(h) = current() {
        h.pause_in(point).await;
    }
}

pub(crate) fn pause_in_blocking(point: &str) {
    if let Some(h) = current() {
        h.pause_in_blocking(point);
    }
}
