//! The warm migration's syncs on the fake host: a sync over the last disk
//! gives the bytes a whole build of the source as it now is gives, and a
//! crash anywhere in a sync, then --resume, ends synced with nothing left over.

use super::*;

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
        drop(dir); // a frozen sync stays parked: it never touches it again
        cases += 1;
    }
    eprintln!(
        "{cases} warm sync crash cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
