//! The migration pipeline, written once for every method: resolve the
//! source, inspect it where it lies, plan, let the method make the HVM disk
//! (it only moves bytes), register, verify, tidy up, with the journal's
//! states and the findings the same whichever method ran.

use std::path::Path;

use crate::error::{Error, Result};
use crate::image::bootcfg;
use crate::image::inspect::{self, Inspection};
use crate::migrate::method::{Direct, Job, Method, Plan};
use crate::migrate::{
    check_name, check_source, default_name, refusal, source_of, started, HvmRegistration, Journal,
    JournalState, Migration, MigrationHost, Options, Recorder, SourceDisk, SourceKind, StepName,
    MIGRATION_TAG,
};

/// Run (or go on with) the migration of `journal` with its method.
pub(crate) async fn execute(
    host: &dyn MigrationHost,
    mut journal: Journal,
    opts: &Options,
) -> Result<Migration> {
    let region = journal.region.clone();
    // A resume goes on with the first run's helper choices.
    let helper = match (&journal.helper_options, journal.method) {
        (Some(first), _) => first.clone(),
        (None, crate::migrate::Method::Helper) => {
            journal.helper_options = Some(opts.helper.clone());
            journal.save()?;
            opts.helper.clone()
        }
        (None, _) => opts.helper.clone(),
    };
    // The method is picked here, once; the pipeline below is the same for
    // all. What fails before it runs (no such method, a work directory that
    // cannot be made) still leaves the journal saying so.
    let work = host.work_dir(&journal.migration_id);
    let prepared = match journal.method {
        crate::migrate::Method::Direct => Ok(Box::new(Direct(host)) as Box<dyn Method + '_>),
        other => host.method(other, &helper),
    }
    .and_then(|m| {
        std::fs::create_dir_all(&work).map_err(|e| Error::write(&work, e))?;
        Ok(m)
    });
    let method = match prepared {
        Ok(m) => m,
        Err(e) => {
            journal.state = JournalState::Failed;
            journal.save()?;
            return Err(e);
        }
    };
    started(&journal);
    let mut rec = Recorder::new();
    let result = crate::interrupt::or_interrupted(pipeline(
        host,
        method.as_ref(),
        &mut journal,
        &work,
        &mut rec,
    ))
    .await;
    let interrupted = result.is_err() && crate::interrupt::is_interrupted();
    if interrupted {
        // A transfer on a blocking thread stops too before its files go.
        crate::interrupt::settled().await;
    }
    let synced = matches!(&result, Ok((None, ..)));
    journal.state = match (&result, interrupted) {
        (Ok((None, ..)), _) => JournalState::Synced,
        (Ok(_), _) => JournalState::Done,
        (Err(_), true) => JournalState::Interrupted,
        (Err(_), false) => JournalState::Failed,
    };
    let finished = result.is_ok();
    let mut removed = method.tidy(&mut journal, finished, opts.keep_temp).await;
    // A source amitool stopped is never left stopped by a failed run.
    if journal.stopped_source
        && host
            .start_instance(&region, &journal.source_id)
            .await
            .is_ok()
    {
        journal.stopped_source = false;
        removed.push(format!("the stop of {} (started again)", journal.source_id));
    }
    // A warm sync keeps the root snapshot it read and the disk it made:
    // the next sync lists its changed blocks against the one and writes
    // over the other. The sync before goes.
    if synced {
        removed.extend(super::warm::synced(host, &mut journal).await?);
    }
    // The source's temporary snapshot goes with a finished migration, and
    // with one that stored nothing to resume from.
    if !synced && (finished || (journal.upload.is_none() && journal.disk_snapshot.is_none())) {
        if let Some(snap) = journal
            .temporary_snapshot
            .clone()
            .filter(|_| !opts.keep_temp)
        {
            // The journal forgets it first: a kill between the two leaves a
            // tagged snapshot the next run sweeps, never a journal naming
            // one that is gone.
            journal.temporary_snapshot = None;
            journal.save()?;
            if host.delete_snapshot(&region, &snap).await.is_ok() {
                removed.push(format!("the temporary snapshot {snap}"));
            } else {
                journal.temporary_snapshot = Some(snap);
            }
        }
    }
    if finished {
        removed.extend(sweep(host, &journal, opts.keep_temp).await);
    }
    // What is left of the work directory when the method needed none.
    let _ = std::fs::remove_dir(&work);
    journal.steps = rec.steps.iter().map(|s| s.name).collect();
    if finished {
        journal.steps.push(StepName::Cleanup);
    }
    journal.save()?;
    let (image_id, disk, insp, fixed) = match result {
        Ok(r) => r,
        Err(e) => return Err(stopped(method.as_ref(), &journal, removed, e, interrupted)),
    };
    rec.done(
        crate::migrate::StepName::Cleanup,
        if removed.is_empty() {
            "nothing to remove".to_string()
        } else {
            format!("removed {}", removed.join(", "))
        },
    );
    let mut findings = insp.findings.clone();
    findings.extend(fixed.into_iter().map(|f| format!("fixed: {f}")));
    if !insp.drivers.ena {
        findings.push("EnaSupport not set: the kernel has no ena driver".into());
    }
    Ok(Migration {
        migration_id: journal.migration_id.clone(),
        region,
        source_image_id: disk.image.image_id.clone(),
        source_instance_id: (journal.source_kind == SourceKind::Instance)
            .then(|| journal.source_id.clone()),
        image_id: image_id.unwrap_or_default(),
        steps: std::mem::take(&mut rec.steps),
        findings,
        changes: insp.boot_changes.clone(),
        transfer: journal.transfer.unwrap_or_default(),
        replacement: None,
        sync: super::warm::report(&journal),
        source_stopped_at: None,
        replacement_running_at: None,
        outage: None,
        request_budgets: host.request_budgets(),
        inspection: Some(insp),
    })
}

/// A finished migration's snapshots that nothing needs: one an earlier run
/// stored before it was killed and could not record (the disk it then made
/// again is the image's). The image's snapshot and a kept temporary one stay.
async fn sweep(host: &dyn MigrationHost, journal: &Journal, keep_temp: bool) -> Vec<String> {
    let Ok(tagged) = host
        .tagged_snapshots(&journal.region, &journal.migration_id)
        .await
    else {
        return vec![];
    };
    let mut removed = vec![];
    for snap in tagged {
        let needed = journal.disk_snapshot.as_ref() == Some(&snap)
            || journal
                .upload
                .as_ref()
                .is_some_and(|u| u.snapshot_id == snap)
            || (keep_temp && journal.temporary_snapshot.as_ref() == Some(&snap))
            || super::warm::needed(journal).contains(&snap);
        if !needed && host.delete_snapshot(&journal.region, &snap).await.is_ok() {
            removed.push(format!("the unrecorded snapshot {snap} of an earlier run"));
        }
    }
    removed
}

/// A failed or interrupted migration's error: what was removed and what is
/// kept for --resume or --cleanup, when anything is or it was Ctrl-C; a
/// refusal that left nothing is returned as it is.
fn stopped(
    method: &dyn Method,
    journal: &Journal,
    removed: Vec<String>,
    e: Error,
    interrupted: bool,
) -> Error {
    let mut kept = method.kept(journal);
    if let Some(s) = journal
        .disk_snapshot
        .as_ref()
        .filter(|s| journal.upload.as_ref().is_none_or(|u| &u.snapshot_id != *s))
    {
        kept.push(format!("the HVM disk's snapshot {s}"));
    }
    if let Some(s) = &journal.temporary_snapshot {
        kept.push(format!("the temporary snapshot {s}"));
    }
    // A full disk is resumable once there is room: the journal says how.
    let full = matches!(e, Error::NoSpace { .. });
    if kept.is_empty() && !interrupted && !full {
        return e;
    }
    kept.push(format!("its journal {}", journal.path().display()));
    let cause = if interrupted {
        "interrupted (Ctrl-C)".to_string()
    } else {
        crate::error::chain(&e)
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "nothing".to_string()
        } else {
            v.join(", ")
        }
    };
    Error::MigrationInterrupted {
        migration_id: journal.migration_id.clone(),
        message: format!("{cause}; removed {}; kept {}", list(&removed), list(&kept)),
        interrupted,
    }
}

/// The registered image (none for a warm sync), the source, its inspection, the fixes.
type Done = (Option<String>, SourceDisk, Inspection, Vec<String>);

/// A running source instance, before its root is snapshotted: stopped with
/// --stop-source (journaled, so a resume starts it again), else a warning:
/// the snapshot of a running disk is crash-consistent. Whether it ran.
async fn running_source(
    host: &dyn MigrationHost,
    journal: &mut Journal,
    rec: &mut Recorder,
) -> Result<bool> {
    if journal.source_kind != SourceKind::Instance || journal.temporary_snapshot.is_some() {
        return Ok(false);
    }
    let (region, id) = (journal.region.clone(), journal.source_id.clone());
    if journal.stopped_source {
        return Ok(true);
    }
    let state = host.instance_state(&region, &id).await?;
    // The cut-over of a warm migration stops the source for good (its
    // final snapshot then holds everything it wrote); the outage starts.
    if let Some(w) = journal.warm.as_ref().filter(|w| w.cutting_over) {
        if w.stopped_at.is_none() {
            let r = journal.replace.get_or_insert_with(Default::default);
            r.stopped_source = state == "running" || state == "pending";
            journal.warm.as_mut().expect("checked").stopped_at = Some(super::warm::now());
            journal.save()?;
        }
        if state != "stopped" {
            host.stop_instance(&region, &id).await?;
            rec.done(
                crate::migrate::StepName::StopSource,
                format!("{id} stopped for the cut-over (it is never terminated)"),
            );
        }
        return Ok(false);
    }
    if state != "running" {
        return Ok(false);
    }
    if journal.warm.is_some() {
        // A sync copies the running source by design: the cut-over's
        // final sync, after the stop, brings what it writes meanwhile.
        return Ok(true);
    }
    if journal.stop_source {
        journal.stopped_source = true;
        journal.save()?;
        host.stop_instance(&region, &id).await?;
    } else {
        eprintln!(
            "amitool: warning: {id} is running: its root snapshot is crash-consistent, as after a power loss (--stop-source stops it for the snapshot and starts it again)"
        );
    }
    Ok(true)
}

async fn pipeline(
    host: &dyn MigrationHost,
    method: &dyn Method,
    journal: &mut Journal,
    work: &Path,
    rec: &mut Recorder,
) -> Result<Done> {
    let region = journal.region.clone();
    method.check(journal).await?;
    let running = running_source(host, journal, rec).await?;
    let src = host
        .source_disk(&region, &source_of(journal), journal)
        .await;
    // A source amitool stopped runs again as soon as its snapshot exists.
    if journal.stopped_source {
        host.start_instance(&region, &journal.source_id).await?;
        journal.stopped_source = false;
        journal.save()?;
        rec.done(
            crate::migrate::StepName::RestartSource,
            format!(
                "{} started again after its root snapshot",
                journal.source_id
            ),
        );
    }
    let src = src?;
    check_source(&src.image)?;
    rec.done(
        crate::migrate::StepName::Snapshot,
        format!(
            "root disk of {}: {} ({} bytes)",
            src.image.image_id,
            src.disk.name().display(),
            src.disk.len()
        ),
    );

    // Inspected and planned where it lies, before any data moves.
    let (disk, flavor, fix_guest) = (src.disk.clone(), src.flavor, journal.fix_guest);
    let image_id = src.image.image_id.clone();
    let (mut insp, plan) = tokio::task::spawn_blocking(move || -> Result<_> {
        let insp = inspect::inspect_in(&disk, flavor).map_err(|source| Error::Guest {
            id: image_id.clone(),
            source,
        })?;
        if let Some(reason) = refusal(&image_id, &insp) {
            return Err(Error::Unconvertible {
                id: image_id,
                reason,
            });
        }
        let plan = Plan::new(&disk, &insp, fix_guest)?;
        Ok((insp, plan))
    })
    .await
    .map_err(|source| Error::Panicked { source })??;
    // An image this migration registered before a kill, found by its tag,
    // is its own: its name is not taken by another.
    if journal.image_id.is_none() {
        journal.image_id = host.registered_by(&region, &journal.migration_id).await?;
    }
    check_name(
        host,
        &region,
        &src.image,
        journal.name.as_deref(),
        journal.image_id.as_deref(),
    )
    .await?;
    rec.done(
        crate::migrate::StepName::Inspect,
        format!(
            "{} {} label={} uuid={}, boots {}{}",
            insp.layout.as_str(),
            insp.fs_type.as_str(),
            insp.label.as_deref().unwrap_or("-"),
            insp.uuid,
            insp.kernel.as_deref().unwrap_or("-"),
            src.disk
                .blocks_read()
                .map(|n| format!("; read in place: {n} blocks"))
                .unwrap_or_default()
        ),
    );
    rec.done(
        crate::migrate::StepName::Plan,
        format!(
            "{} of a {}-byte disk",
            plan.layout
                .partitions
                .iter()
                .map(|p| format!(
                    "partition {} at sector {} ({:#04x}, {} sectors)",
                    p.number, p.start_lba, p.kind, p.sectors
                ))
                .collect::<Vec<_>>()
                .join(", "),
            plan.layout.disk_size
        ),
    );
    let boot = insp.boot.as_ref().map(|b| &b.config);
    rec.done(
        crate::migrate::StepName::BootConfig,
        format!(
            "GRUB reads {} ({}: {}); {} line(s) to change in {} file(s)",
            boot.map_or("-", |b| b.path.as_str()),
            boot.map_or("-", |b| match b.kind {
                bootcfg::ConfigKind::Legacy => "legacy_configfile",
                bootcfg::ConfigKind::Grub2 => "configfile",
            }),
            boot.map_or("-", |b| b.rule.as_str()),
            insp.boot_changes.len(),
            insp.boot.as_ref().map_or(0, |b| b.edits.len())
        ),
    );
    if journal.fix_guest {
        rec.done(
            crate::migrate::StepName::FixGuest,
            if plan.fixed.is_empty() {
                "nothing to change".to_string()
            } else {
                plan.fixed.join("; ")
            },
        );
    }

    let mut tags = src.tags.clone();
    tags.retain(|k, _| !k.starts_with("aws:"));
    tags.insert(MIGRATION_TAG.into(), journal.migration_id.clone());
    tags.insert("amitool:source-image".into(), src.image.image_id.clone());
    if journal.source_kind == SourceKind::Instance {
        tags.insert("amitool:source-instance".into(), journal.source_id.clone());
    }
    tags.insert(inspect::DRIVERS_TAG.into(), insp.drivers.to_tag());
    let job = Job {
        source: &src,
        plan: &plan,
        tags: &tags,
        work,
    };
    // A disk stored by an earlier run of this migration is not made again.
    let snapshot_id = match journal.disk_snapshot.clone() {
        Some(s) => s,
        None => {
            let s = method.make_disk(&job, journal, rec).await?;
            journal.disk_snapshot = Some(s.clone());
            journal.save()?;
            s
        }
    };

    // A warm sync stops here: the disk is stored, the source runs on.
    if journal.warm.as_ref().is_some_and(|w| !w.cutting_over) {
        if running {
            insp.findings.push(format!(
                "{} runs on: this sync is crash-consistent; --cut-over stops it and moves what it writes meanwhile",
                journal.source_id
            ));
        }
        return Ok((None, src, insp, plan.fixed));
    }
    let reg = HvmRegistration {
        name: journal
            .name
            .clone()
            .unwrap_or_else(|| default_name(&src.image)),
        description: src
            .description
            .clone()
            .unwrap_or_else(|| format!("HVM migration of {} by amitool", src.image.image_id)),
        architecture: src
            .image
            .architecture
            .clone()
            .unwrap_or_else(|| "x86_64".into()),
        snapshot_id: snapshot_id.clone(),
        volume_size_gib: plan.volume_gib(),
        // Only with an ena driver: setting it on an image without one loses the network.
        ena_support: insp.drivers.ena,
        tags,
        grub_cfg: plan.cfg.clone(),
        drivers: insp.drivers.clone(),
        volume_type: journal
            .volume_type
            .clone()
            .or_else(|| src.volume_type.clone()),
    };
    crate::migrate::hooks::pause_in("register").await;
    let image = host
        .register_hvm(&region, &reg, &journal.migration_id)
        .await?;
    journal.image_id = Some(image.image_id.clone());
    journal.save()?;
    rec.done(
        crate::migrate::StepName::Register,
        format!(
            "{} (hvm, {}, snapshot {snapshot_id})",
            image.image_id, reg.architecture
        ),
    );
    let problems = host
        .verify_registered(&region, &image.image_id, &reg)
        .await?;
    if !problems.is_empty() {
        return Err(Error::Registered {
            image_id: image.image_id,
            problems: problems.join("; "),
        });
    }
    rec.done(
        crate::migrate::StepName::Verify,
        "the image's attributes (hvm, architecture, root device and snapshot, no kernel, EnaSupport) as asked",
    );
    if running && !journal.stop_source && journal.warm.is_none() {
        insp.findings.push(format!(
            "{} was running: its root snapshot is crash-consistent (--stop-source stops it first)",
            journal.source_id
        ));
    }
    Ok((Some(image.image_id), src, insp, plan.fixed))
}
