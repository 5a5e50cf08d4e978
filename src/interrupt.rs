//! Ctrl-C during a migration. The first one stops every running migration
//! at its next await point; each then cleans up what it made, as on any
//! failure, and keeps its journal for `--resume`. A second Ctrl-C ends the
//! process at once (exit 130), leaving the journals as they are.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use crate::error::{Error, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Take over Ctrl-C for the rest of the process (call inside the runtime).
pub fn install() {
    INSTALL.call_once(|| {
        tokio::spawn(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    eprintln!("amitool: interrupted again: stopping without cleaning up");
                    std::process::exit(130);
                }
                eprintln!(
                    "amitool: interrupted: cleaning up what this run made (Ctrl-C again to stop at once)"
                );
            }
        });
    });
}

pub fn is_interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Resolves once Ctrl-C was pressed.
async fn interrupted() {
    while !is_interrupted() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `work`, or [`Error::Interrupted`] as soon as Ctrl-C is pressed (`work` is
/// dropped at its current await point: everything it made is journaled).
pub async fn or_interrupted<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        r = work => r,
        () = interrupted() => Err(Error::Interrupted),
    }
}
