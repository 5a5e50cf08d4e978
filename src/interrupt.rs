//! Ctrl-C during a migration. The first one stops every running migration
//! at its next await point; each then cleans up what it made, as on any
//! failure, and keeps its journal for `--resume`. A second Ctrl-C ends the
//! process at once (exit 130), leaving the journals as they are.

use std::future::Future;
use std::sync::{Once, OnceLock};

use tokio::sync::watch;

use crate::error::{Error, Result};

static INSTALL: Once = Once::new();

/// Whether Ctrl-C was pressed; a watch, so a waiting migration wakes at once.
fn flag() -> &'static watch::Sender<bool> {
    static FLAG: OnceLock<watch::Sender<bool>> = OnceLock::new();
    FLAG.get_or_init(|| watch::channel(false).0)
}

/// Take over Ctrl-C for the rest of the process (call inside the runtime).
pub fn install() {
    INSTALL.call_once(|| {
        tokio::spawn(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                if flag().send_replace(true) {
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
    *flag().borrow()
}

/// Resolves once Ctrl-C was pressed.
pub(crate) async fn interrupted() {
    let mut rx = flag().subscribe();
    let _ = rx.wait_for(|&pressed| pressed).await;
}

/// `work`, or [`Error::Interrupted`] as soon as Ctrl-C is pressed (`work` is
/// dropped at its current await point: everything it made is journaled).
pub async fn or_interrupted<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    // Biased: once Ctrl-C was pressed, no further step of `work` runs.
    tokio::select! {
        biased;
        () = interrupted() => Err(Error::Interrupted),
        r = work => r,
    }
}

/// Wait `d`, or [`Error::Interrupted`] as soon as Ctrl-C is pressed.
pub async fn sleep(d: std::time::Duration) -> Result<()> {
    or_interrupted(async {
        tokio::time::sleep(d).await;
        Ok(())
    })
    .await
}

/// Work running outside the task that Ctrl-C drops (a blocking thread's
/// transfer): counted, so cleanup waits for it to stop before removing what it writes.
fn busy_count() -> &'static watch::Sender<usize> {
    static BUSY: OnceLock<watch::Sender<usize>> = OnceLock::new();
    BUSY.get_or_init(|| watch::channel(0).0)
}

/// Held by such work while it runs.
pub struct Busy(());

impl Busy {
    pub fn start() -> Self {
        busy_count().send_modify(|n| *n += 1);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        busy_count().send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// `f` on a blocking thread (reads of a remote disk block theirs), counted
/// as [`Busy`] from before it starts, so a Ctrl-C cleanup waits for it; a
/// thread that panicked is an error, not a second panic.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let busy = Busy::start();
    tokio::task::spawn_blocking(move || {
        let _busy = busy;
        f()
    })
    .await
    .map_err(|source| Error::Panicked { source })
}

/// Resolves once no [`Busy`] work is left running.
pub async fn settled() {
    let mut rx = busy_count().subscribe();
    let _ = rx.wait_for(|&n| n == 0).await;
}
