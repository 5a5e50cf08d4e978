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
    // The fake host is one world: a leaked frozen run keeps its thread, not its effects.
    std::mem::forget(dir);
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

// The warm migration's syncs on the fake host: a sync over the last disk
// gives the bytes a whole build of the source as it now is gives, and a
// crash anywhere in a sync, then --resume, ends synced with nothing left over.

/// The guest of the fake instance writes `content` to `path` of its root
/// filesystem (debugfs on a copy of the volume's bytes).
fn guest_writes(host: &FakeHost, path: &str, content: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let (img, local) = (dir.path().join("volume"), dir.path().join("file"));
    let bytes = host.state.lock().expect("state").instances[SOURCE_INSTANCE]
        .1
        .clone();
    std::fs::write(&img, bytes.as_slice()).expect("volume");
    std::fs::write(&local, content).expect("file");
    let (d, n) = path.rsplit_once('/').expect("a path");
    let ok = std::process::Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} {d}/{n}", local.display()))
        .arg(&img)
        .output()
        .expect("debugfs runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let written = std::fs::read(&img).expect("volume");
    host.state
        .lock()
        .expect("state")
        .instances
        .get_mut(SOURCE_INSTANCE)
        .expect("instance")
        .1 = Arc::new(written);
}

fn warm_options() -> Options {
    Options {
        method: Method::Direct,
        warm: true,
        ..Default::default()
    }
}

/// Phase 1 on the fake host's running instance, finished: its migration id.
fn phase_one(host: &FakeHost) -> String {
    let m = block_on(migrate::run(
        host,
        REGION,
        &Source::Instance(SOURCE_INSTANCE.into()),
        &warm_options(),
    ))
    .expect("phase 1");
    assert!(m.image_id.is_empty(), "phase 1 registers nothing");
    let sync = m.sync.expect("phase 1 reports its sync");
    assert_eq!(sync.generation, 0);
    m.migration_id
}

/// The next sync of `mid` (frozen at `fault`).
fn sync(host: &FakeHost, mid: &str, fault: Option<Fault>) -> (Ran, usize) {
    let mid = mid.to_string();
    run_with(host, fault, move |host| {
        Box::pin(async move {
            let mut j = Journal::load(&host.journal_dir(), &mid)?;
            migrate::warm::next_generation(&mut j, false)?;
            migrate::go_on(&host, j, &warm_options()).await
        })
    })
}

/// The HVM disk a whole build of the instance as it now is makes, at the
/// warm migration's edit time, on a host of its own.
fn whole_build(host: &FakeHost, edit_time: i64) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("dir");
    let cold = FakeHost::new(dir.path());
    let bytes = host.state.lock().expect("state").instances[SOURCE_INSTANCE]
        .1
        .clone();
    cold.state
        .lock()
        .expect("state")
        .instances
        .get_mut(SOURCE_INSTANCE)
        .expect("instance")
        .1 = bytes;
    let source = Source::Instance(SOURCE_INSTANCE.into());
    let opts = Options {
        method: Method::Direct,
        ..Default::default()
    };
    let mut j = migrate::begin(&cold, REGION, &source, &opts).expect("journal");
    j.edit_time = Some(edit_time);
    j.save().expect("save");
    let m = block_on(migrate::go_on(&cold, j, &opts)).expect("the whole build");
    let s = cold.state.lock().expect("state");
    let snap = &s.images[&m.image_id].snapshot_id;
    s.snapshots[snap].bytes.as_ref().clone()
}

/// After a sync: synced at `generation`, its disk equal to a whole build,
/// and the snapshots the source's image, the sync's root and disk only.
fn synced(host: &FakeHost, mid: &str, generation: u32, case: &str) {
    let j = Journal::load(&host.journal_dir(), mid).expect("journal");
    assert_eq!(j.state, JournalState::Synced, "{case}: {j:?}");
    let w = j.warm.clone().expect("warm");
    let s = w.synced.clone().expect("synced");
    assert_eq!(s.generation, generation, "{case}");
    let expected = whole_build(host, j.edit_time.expect("edit time"));
    let st = host.state.lock().expect("state");
    let mut snaps: Vec<&String> = st.snapshots.keys().collect();
    snaps.sort();
    let mut want = vec![
        &s.source_snapshot,
        &s.disk_snapshot,
        &"snap-0000000000000000c".to_string(),
    ]
    .into_iter()
    .cloned()
    .collect::<Vec<String>>();
    want.sort();
    assert_eq!(
        snaps.into_iter().cloned().collect::<Vec<_>>(),
        want,
        "{case}: the source's, the sync's root and disk only"
    );
    assert!(
        st.snapshots[&s.disk_snapshot].bytes.as_slice() == expected.as_slice(),
        "{case}: the synced disk differs from a whole build"
    );
    assert_eq!(st.instances[SOURCE_INSTANCE].0, "running", "{case}");
    assert!(st.images.len() == 1, "{case}: a sync registers nothing");
    assert!(!host.work_dir(mid).exists(), "{case}: work directory left");
}

#[test]
fn a_sync_writes_only_what_changed_and_equals_a_whole_build() {
    let dir = tempfile::tempdir().expect("dir");
    let host = FakeHost::new(dir.path());
    let mid = phase_one(&host);
    synced(&host, &mid, 0, "phase 1");
    guest_writes(&host, "/etc/app.conf", "version=2\n");
    let (ran, _) = sync(&host, &mid, None);
    let Ran::Finished(r) = ran else {
        panic!("the sync froze")
    };
    let m = r.expect("sync 1");
    let s = m.sync.expect("its report");
    let changed = s.changed_blocks.expect("sync 1 lists changed blocks");
    assert!(changed > 0, "the guest's write changed blocks");
    // The head, the changed blocks and the boot edits of both builds: the
    // fake disk is 8 MiB (16 blocks) plus the head.
    assert!(s.blocks_written < 18, "{s:?}");
    synced(&host, &mid, 1, "sync 1");
    // Nothing changed: the head and the edits only.
    let (ran, _) = sync(&host, &mid, None);
    let Ran::Finished(r) = ran else {
        panic!("the sync froze")
    };
    let s2 = r.expect("sync 2").sync.expect("its report");
    assert_eq!(s2.changed_blocks, Some(0));
    synced(&host, &mid, 2, "sync 2");
}

#[test]
fn a_crash_anywhere_in_a_sync_then_resume_ends_synced() {
    let started = std::time::Instant::now();
    let mut cases = 0;
    let steps = planned_steps(&StepPlan {
        method: Method::Direct,
        warm: Some(migrate::WarmStage::Sync),
        ..Default::default()
    });
    let writes = {
        let dir = tempfile::tempdir().expect("dir");
        let host = FakeHost::new(dir.path());
        let mid = phase_one(&host);
        guest_writes(&host, "/etc/app.conf", "version=2\n");
        sync(&host, &mid, None).1
    };
    let faults = steps
        .iter()
        // The data sync is the cut-over capability's, after the pipeline.
        .filter(|s| **s != StepName::DataSync)
        .map(|s| Fault::AfterStep(*s))
        .chain((1..=writes).map(Fault::BeforeWrite));
    for fault in faults {
        let dir = tempfile::tempdir().expect("dir");
        let host = FakeHost::new(dir.path());
        let mid = phase_one(&host);
        guest_writes(&host, "/etc/app.conf", "version=2\n");
        let case = format!("{fault:?}");
        let (ran, _) = sync(&host, &mid, Some(fault));
        assert!(matches!(ran, Ran::Crashed(_)), "{case}: it did not crash");
        let j = Journal::load(&host.journal_dir(), &mid).expect("journal");
        let done = j
            .warm
            .as_ref()
            .and_then(|w| w.synced.as_ref())
            .map(|s| s.generation);
        match (j.state, done) {
            // Killed after the sync finished.
            (JournalState::Synced, Some(1)) => {}
            // Killed before it began: it is asked again.
            (JournalState::Synced, _) => {
                let (ran, _) = sync(&host, &mid, None);
                assert!(matches!(ran, Ran::Finished(_)), "{case}");
            }
            _ => {
                let m = block_on(migrate::resume(&host, &mid, &warm_options()))
                    .unwrap_or_else(|e| panic!("{case}: resume: {e}"));
                assert!(m.image_id.is_empty(), "{case}");
            }
        }
        synced(&host, &mid, 1, &case);
        std::mem::forget(dir);
        cases += 1;
    }
    eprintln!(
        "{cases} warm sync crash cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
