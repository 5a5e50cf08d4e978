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

static IN_FLEET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A fleet runs: its items say when they start and end, one line each, and
/// each finished step of an item is a line named by the item ([`for_item`]).
pub fn set_fleet() {
    IN_FLEET.store(true, std::sync::atomic::Ordering::Relaxed);
}

tokio::task_local! {
    static ITEM: String;
}

/// Run one fleet item's work with its name on the steps it finishes.
pub async fn for_item<F: std::future::Future>(label: String, work: F) -> F::Output {
    ITEM.scope(label, work).await
}

/// The fleet item the current task works on.
pub fn item() -> Option<String> {
    ITEM.try_with(Clone::clone).ok()
}

/// Whether a finished step gets its own plain line: always but with
/// `--no-progress`; in a fleet, when it is an item's (named by it).
pub fn step_notes_shown() -> bool {
    notes_shown() && (!IN_FLEET.load(std::sync::atomic::Ordering::Relaxed) || item().is_some())
}

/// Decide once, for the whole run, whether long pipelines show their steps.
pub fn show_steps(policy: ProgressPolicy) {
    STEPS_SHOWN.store(policy.enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Every bar of a run draws through one MultiProgress, so a transfer's bar
/// and the steps' spinner share the terminal instead of overwriting each other.
fn multi() -> &'static indicatif::MultiProgress {
    static MULTI: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    MULTI.get_or_init(indicatif::MultiProgress::new)
}

/// A spinner that prints one line per finished step with its elapsed time;
/// hidden when steps are not shown.
pub fn step_spinner() -> ProgressBar {
    if !STEPS_SHOWN.load(std::sync::atomic::Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let pb = multi().add(ProgressBar::new_spinner());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("static template"),
    );
    pb.set_message("working");
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// The bytes in one EBS block: transfers count blocks.
const BLOCK: u64 = crate::image::BLOCK;
static PLAIN_EVERY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// How often a transfer says how far it got when stderr is not a terminal:
/// every 5 s, or what a test binary set with [`set_plain_every`].
fn plain_every() -> Duration {
    PLAIN_EVERY.get().copied().unwrap_or(Duration::from_secs(5))
}

/// A test binary's shorter interval for the plain progress lines.
pub fn set_plain_every(every: Duration) {
    let _ = PLAIN_EVERY.set(every);
}

/// A transfer's progress, counted in 512 KiB blocks: on a terminal a bar
/// with the bytes and blocks done, the rate and the time left; without one
/// (cron, CI) a plain line every few seconds; nothing with `--no-progress`.
/// The bar is handed to whatever moves the blocks (coldsnap takes it as is).
pub struct Transfer {
    bar: ProgressBar,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    plain: Option<std::thread::JoinHandle<()>>,
}

impl Transfer {
    /// `what` names the transfer ("download snap-…"); `blocks` is its length when known.
    pub fn new(what: &str, blocks: Option<u64>) -> Transfer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shown = STEPS_SHOWN.load(std::sync::atomic::Ordering::Relaxed);
        let bar =
            if shown {
                let pb = multi().add(ProgressBar::new(blocks.unwrap_or(0)));
                pb.set_style(
                ProgressStyle::with_template(
                    "{msg} {done} of {total} ({pos}/{len} blocks) {rate} ETA {eta} [{wide_bar}]",
                )
                .expect("static template")
                .with_key("done", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", indicatif::HumanBytes(s.pos() * BLOCK));
                })
                .with_key("total", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(
                        w,
                        "{}",
                        indicatif::HumanBytes(s.len().unwrap_or(0) * BLOCK)
                    );
                })
                .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(
                        w,
                        "{}/s",
                        indicatif::HumanBytes((s.per_sec() * BLOCK as f64) as u64)
                    );
                })
                .progress_chars("=> "),
            );
                pb.set_message(what.to_string());
                pb.enable_steady_tick(Duration::from_millis(200));
                pb
            } else {
                // Hidden, but it still counts: the plain lines read it.
                let pb = ProgressBar::hidden();
                pb.set_length(blocks.unwrap_or(0));
                pb
            };
        let plain = (!shown && notes_shown()).then(|| {
            let (bar, stop, what) = (bar.clone(), stop.clone(), what.to_string());
            std::thread::spawn(move || {
                let (mut last, every) = (std::time::Instant::now(), plain_every());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(every.min(Duration::from_millis(100)));
                    if last.elapsed() >= every {
                        last = std::time::Instant::now();
                        eprintln!("amitool: {what}: {}", plain_line(&bar));
                    }
                }
            })
        });
        Transfer { bar, stop, plain }
    }

    /// The bar to count on.
    pub fn bar(&self) -> ProgressBar {
        self.bar.clone()
    }
}

/// `120 MiB of 1 GiB (240/2048 blocks), 12 MiB/s, ETA 1m 30s`.
fn plain_line(bar: &ProgressBar) -> String {
    let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
    let rate = bar.per_sec() * BLOCK as f64;
    let eta = if rate > 0.0 && len > pos {
        format!(
            ", ETA {}",
            indicatif::HumanDuration(Duration::from_secs_f64(
                (len - pos) as f64 * BLOCK as f64 / rate
            ))
        )
    } else {
        String::new()
    };
    format!(
        "{} of {} ({pos}/{len} blocks), {}/s{eta}",
        indicatif::HumanBytes(pos * BLOCK),
        indicatif::HumanBytes(len * BLOCK),
        indicatif::HumanBytes(rate as u64)
    )
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.plain.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// A wait for something a person cannot see (a boot's console text): on a
/// terminal a spinner saying what for and how long it may take; without one
/// a line at the start and one every 15 s; nothing with `--no-progress`.
pub struct Waiting {
    bar: ProgressBar,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    plain: Option<std::thread::JoinHandle<()>>,
}

impl Waiting {
    pub fn new(what: &str, limit: Duration) -> Waiting {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let what = format!("waiting for {what} (up to {} s)", limit.as_secs());
        if STEPS_SHOWN.load(std::sync::atomic::Ordering::Relaxed) {
            let pb = multi().add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .expect("static template"),
            );
            pb.set_message(what);
            pb.enable_steady_tick(Duration::from_millis(120));
            return Waiting {
                bar: pb,
                stop,
                plain: None,
            };
        }
        let plain = notes_shown().then(|| {
            eprintln!("amitool: {what}");
            let (stop, what) = (stop.clone(), what.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let mut last = started;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= Duration::from_secs(15) {
                        last = std::time::Instant::now();
                        eprintln!(
                            "amitool: still {what}: {} s so far",
                            started.elapsed().as_secs()
                        );
                    }
                }
            })
        });
        Waiting {
            bar: ProgressBar::hidden(),
            stop,
            plain,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.plain.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_bytes_blocks_and_what_is_left() {
        let pb = ProgressBar::hidden();
        pb.set_length(2048);
        pb.set_position(240);
        let line = plain_line(&pb);
        assert!(line.contains(" MiB of 1"), "{line}");
        assert!(line.contains("(240/2048 blocks), "), "{line}");
    }
}

#[cfg(test)]
mod item_tests {
    use super::*;

    #[tokio::test]
    async fn a_fleet_items_work_knows_its_name() {
        assert_eq!(item(), None);
        let named = for_item("ami-1".into(), async { item() }).await;
        assert_eq!(named.as_deref(), Some("ami-1"));
        set_fleet();
        show_notes(true);
        assert!(!step_notes_shown());
        assert!(for_item("ami-1".into(), async { step_notes_shown() }).await);
    }
}
