//! The pipeline's failure matrix on the fake host: a crash (as kill -9:
//! nothing after it runs) after every recorded step and before every
//! journal write, and a failure of every host call, for an image and for an
//! instance stopped for its snapshot; then `--resume`, or `--cleanup`. Each
//! case checks the journal, what exists afterwards (one image, no orphan
//! snapshot, no work directory) and that the source is untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::error::Result;
use crate::migrate::fake::{FakeHost, REGION, SOURCE_IMAGE, SOURCE_INSTANCE};
use crate::migrate::hooks::{self, Hooks};
use crate::migrate::{
    self, planned_steps, Journal, JournalState, Method, Migration, MigrationHost, Options, Source,
    StepName, StepPlan,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    AfterStep(StepName),
    BeforeWrite(usize),
}

enum Ran {
    /// Frozen where the fault was (its place, for a failure's message).
    Crashed(#[allow(dead_code)] String),
    Finished(Box<Result<Migration>>),
}

/// Freezes its thread where the fault is, as kill -9 stops a process.
struct Crash {
    fault: Option<Fault>,
    writes: AtomicUsize,
    tx: Mutex<mpsc::Sender<Ran>>,
}

impl Crash {
    fn freeze(&self, what: String) {
        let _ = self.tx.lock().expect("sender").send(Ran::Crashed(what));
        loop {
            std::thread::park();
        }
    }
}

impl Hooks for Crash {
    fn after_step(&self, step: StepName) {
        if self.fault == Some(Fault::AfterStep(step)) {
            self.freeze(format!("after step {step}"));
        }
    }

    fn before_journal_write(&self, _journal: &Journal) {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fault == Some(Fault::BeforeWrite(n)) {
            self.freeze(format!("before journal write {n}"));
        }
    }
}

fn options(source: &Source) -> Options {
    Options {
        method: Method::Direct,
        stop_source: matches!(source, Source::Instance(_)),
        ..Default::default()
    }
}

/// One migration of `source` on a thread and runtime of its own, frozen at
/// `fault`; how it ended, and how many journal writes it made.
fn run(host: &FakeHost, source: &Source, fault: Option<Fault>) -> (Ran, usize) {
    let source = source.clone();
    run_with(host, fault, move |host| {
        Box::pin(async move {
            let opts = options(&source);
            migrate::run(&host, REGION, &source, &opts).await
        })
    })
}

type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Migration>> + Send>>;

/// `go` on a thread and runtime of its own, frozen at `fault`.
fn run_with(
    host: &FakeHost,
    fault: Option<Fault>,
    go: impl FnOnce(FakeHost) -> Run + Send + 'static,
) -> (Ran, usize) {
    let (tx, rx) = mpsc::channel();
    let crash = Arc::new(Crash {
        fault,
        writes: AtomicUsize::new(0),
        tx: Mutex::new(tx.clone()),
    });
    let (host, hooks) = (host.clone(), crash.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let r = rt.block_on(hooks::scope(hooks, go(host)));
        let _ = tx.send(Ran::Finished(Box::new(r)));
    });
    let ran = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run ended or froze within 2 minutes");
    (ran, crash.writes.load(Ordering::SeqCst))
}

fn only_journal(host: &FakeHost) -> Journal {
    let mut all = migrate::journal::list(&host.dir.join("journal"));
    assert_eq!(all.len(), 1, "one journal: {all:?}");
    Journal::load(&host.dir.join("journal"), &all.remove(0).migration_id).expect("journal")
}

/// After the migration finished: done, one HVM image tagged with it, its
/// snapshot and the source's and nothing else, no work directory, the
/// source untouched and running again.
fn settled(host: &FakeHost, case: &str) {
    let j = only_journal(host);
    assert_eq!(j.state, JournalState::Done, "{case}: {j:?}");
    let s = host.state.lock().expect("state");
    let hvm: Vec<_> = s
        .images
        .values()
        .filter(|r| r.image.image_id != SOURCE_IMAGE)
        .collect();
    assert_eq!(hvm.len(), 1, "{case}: one image, not {hvm:?}");
    assert_eq!(Some(&hvm[0].image.image_id), j.image_id.as_ref(), "{case}");
    let snaps: Vec<&String> = s.snapshots.keys().collect();
    assert_eq!(
        snaps.len(),
        2,
        "{case}: the source's and the image's snapshots only, not {snaps:?}"
    );
    assert!(s.snapshots.contains_key(&hvm[0].snapshot_id), "{case}");
    let source = &s.snapshots["snap-0000000000000000c"];
    assert!(
        Arc::ptr_eq(&source.bytes, &crate::migrate::fake::pv_disk()),
        "{case}: the source changed"
    );
    assert_eq!(s.instances[SOURCE_INSTANCE].0, "running", "{case}");
    assert!(
        !host.work_dir(&j.migration_id).exists(),
        "{case}: work directory left"
    );
}

/// After a cleanup: nothing the migration made but a registered image.
fn cleaned(host: &FakeHost, case: &str) {
    let j = only_journal(host);
    assert!(
        matches!(j.state, JournalState::Cleaned | JournalState::Done),
        "{case}: {j:?}"
    );
    let s = host.state.lock().expect("state");
    let kept: Vec<&String> = s
        .images
        .values()
        .filter(|r| r.image.image_id != SOURCE_IMAGE)
        .map(|r| &r.snapshot_id)
        .collect();
    for (id, snap) in &s.snapshots {
        let made = snap.tags.get(migrate::MIGRATION_TAG) == Some(&j.migration_id);
        assert!(
            !made || kept.contains(&id),
            "{case}: {id} left by the cleanup"
        );
    }
    assert!(
        !host.work_dir(&j.migration_id).exists(),
        "{case}: work directory left"
    );
    assert_eq!(s.instances[SOURCE_INSTANCE].0, "running", "{case}");
}

/// A run that stopped names every snapshot it leaves for --resume or
/// --cleanup (the image it registered is found by its tag).
fn said_what_it_kept(host: &FakeHost, mid: &str, message: &str, case: &str) {
    let s = host.state.lock().expect("state");
    for (id, snap) in &s.snapshots {
        if snap.tags.get(migrate::MIGRATION_TAG).map(String::as_str) == Some(mid)
            && !s.images.values().any(|r| &r.snapshot_id == id)
        {
            assert!(
                message.contains(id.as_str()),
                "{case}: {id} kept but not named in: {message}"
            );
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// The case's world, its first run, then `--resume` (or `--cleanup`).
fn case(
    source: &Source,
    fault: Option<Fault>,
    fail: Option<(&'static str, usize)>,
    cleanup: bool,
) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let host = FakeHost::new(dir.path());
    if let Some((call, n)) = fail {
        host.fail(call, n);
    }
    let name = format!("{source:?} {fault:?} {fail:?} cleanup={cleanup}");
    let (ran, _) = run(&host, source, fault);
    if let Ran::Finished(r) = &ran {
        if r.is_ok() && fault.is_none() && fail.is_none() {
            settled(&host, &name);
            return name;
        }
    }
    let mid = only_journal(&host).migration_id;
    if let Ran::Finished(r) = &ran {
        if let Err(e) = r.as_ref() {
            said_what_it_kept(&host, &mid, &e.to_string(), &name);
        }
    }
    if cleanup {
        block_on(migrate::cleanup(&host, &mid)).unwrap_or_else(|e| panic!("{name}: cleanup: {e}"));
        cleaned(&host, &name);
    } else {
        let opts = options(source);
        block_on(migrate::resume(&host, &mid, &opts))
            .unwrap_or_else(|e| panic!("{name}: resume: {e}"));
        settled(&host, &name);
    }
    // A frozen run's thread stays parked until the process ends and never
    // touches its directory again: the directory goes with the case.
    drop(dir);
    name
}

fn sources() -> [Source; 2] {
    [
        Source::Image(SOURCE_IMAGE.into()),
        Source::Instance(SOURCE_INSTANCE.into()),
    ]
}

#[test]
fn a_clean_run_journals_the_steps_a_dry_run_lists() {
    for source in sources() {
        let dir = tempfile::tempdir().expect("dir");
        let host = FakeHost::new(dir.path());
        let plan = StepPlan {
            method: Method::Direct,
            restarts_source: matches!(source, Source::Instance(_)),
            ..Default::default()
        };
        // The dry run, before the run (the same world).
        let preview = block_on(migrate::preview(
            &host,
            REGION,
            &source,
            &options(&source),
            &plan,
        ))
        .expect("preview");
        let (ran, writes) = run(&host, &source, None);
        let Ran::Finished(r) = ran else {
            panic!("{source:?}: the clean run did not finish");
        };
        let m = r.expect("the clean run finished");
        assert!(writes > 3, "{writes} journal writes");
        settled(&host, &format!("{source:?}"));
        let recorded: Vec<StepName> = m.steps.iter().map(|s| s.name).collect();
        assert_eq!(recorded, planned_steps(&plan), "{source:?}");
        assert_eq!(
            only_journal(&host).steps,
            recorded,
            "{source:?}: the journal's steps"
        );
        // The fake host, as AWS, reads an image in place, not an instance's volume.
        if let Some(p) = preview {
            assert_eq!(p.steps, recorded, "{source:?}: the dry run's steps");
        } else {
            assert!(matches!(source, Source::Instance(_)));
        }
    }
}

#[test]
fn a_crash_after_any_step_then_resume_or_cleanup() {
    let started = std::time::Instant::now();
    let mut cases = 0;
    for source in sources() {
        let plan = StepPlan {
            method: Method::Direct,
            restarts_source: matches!(source, Source::Instance(_)),
            ..Default::default()
        };
        for step in planned_steps(&plan) {
            for cleanup in [false, true] {
                case(&source, Some(Fault::AfterStep(step)), None, cleanup);
                cases += 1;
            }
        }
    }
    eprintln!(
        "{cases} crash-after-step cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_crash_before_any_journal_write_then_resume_or_cleanup() {
    let started = std::time::Instant::now();
    let mut cases = 0;
    for source in sources() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, writes) = run(&FakeHost::new(dir.path()), &source, None);
        // Write 1 is the new journal's, before anything is made: a crash
        // there leaves nothing to resume or clean.
        for n in 2..=writes {
            for cleanup in [false, true] {
                case(&source, Some(Fault::BeforeWrite(n)), None, cleanup);
                cases += 1;
            }
        }
    }
    eprintln!(
        "{cases} crash-before-write cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_failure_of_any_host_call_then_resume_or_cleanup() {
    let started = std::time::Instant::now();
    let mut cases = 0;
    for source in sources() {
        let calls: &[&'static str] = match source {
            Source::Image(_) => &[
                "source_disk",
                "image_named",
                "store_disk",
                "register_hvm",
                "verify_registered",
            ],
            Source::Instance(_) => &[
                "instance_state",
                "stop_instance",
                "source_disk",
                "start_instance",
                "image_named",
                "store_disk",
                "register_hvm",
                "verify_registered",
                "delete_snapshot",
            ],
        };
        for call in calls {
            for cleanup in [false, true] {
                case(&source, None, Some((call, 1)), cleanup);
                cases += 1;
            }
        }
    }
    eprintln!(
        "{cases} failed-call cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

mod warm;
