//! `migrate --replace` and `--rollback`: the cut-over to a replacement
//! instance after the image is registered, and its undoing.

use crate::cli::migrate::{host, MigrateArgs};
use crate::cli::Context;
use crate::error::{Error, Result};
use crate::ids;
use crate::migrate::cutover::CutOver;
use crate::migrate::{self, Migration};
use crate::output::{self, Format};

/// `--replace` needs the AWS backend and instance sources; its ids checked.
pub(super) fn check(ctx: &Context, a: &MigrateArgs) -> Result<()> {
    if !a.replace {
        return Ok(());
    }
    cut_over_of(ctx)?;
    if !a.ami.is_empty() {
        return Err(Error::InvalidInput(
            "--replace replaces instances: give --instance (or instance ids in --from-file), not --ami"
                .into(),
        ));
    }
    if let Some(t) = &a.instance_type {
        ids::check_instance_type(t)?;
    }
    if let Some(f) = &a.successor_family {
        crate::cli::instances::check_family(f)?;
    }
    Ok(())
}

/// The backend's cut-over, or why it has none.
pub(super) fn cut_over_of(ctx: &Context) -> Result<&dyn CutOver> {
    ctx.backend.cut_over().ok_or_else(|| {
        Error::InvalidInput(format!(
            "--replace and --rollback run on the AWS backend: the {} backend has no network identity to move",
            ctx.backend.name()
        ))
    })
}

/// The cut-over after a migration of an instance with --replace (also when
/// a resume finds the image registered and the cut-over unfinished).
pub(super) async fn cut_over(ctx: &Context, m: &mut Migration) -> Result<()> {
    let Some(co) = ctx.backend.cut_over() else {
        return Ok(());
    };
    let host = host(ctx)?;
    let mut journal = migrate::Journal::load(&host.journal_dir(), &m.migration_id)?;
    let Some(r) = journal.replace.clone() else {
        return Ok(());
    };
    if r.instance_type.is_none() {
        let drivers = m
            .inspection
            .as_ref()
            .map(|i| (i.drivers.ena, i.drivers.nvme));
        let (t, why) = replacement_type(
            ctx,
            co,
            &journal.region,
            &journal.source_id,
            (Some(&m.image_id), drivers),
            &r.options,
        )
        .await?;
        let mut r = r.clone();
        r.instance_type = Some(t);
        r.reasons = why;
        journal.replace = Some(r);
        journal.save()?;
    }
    let mut rec = migrate::Recorder::new();
    let done = co.cut_over(&mut journal, &m.image_id, &mut rec).await;
    m.steps.extend(std::mem::take(&mut rec.steps));
    m.replacement = Some(done?);
    Ok(())
}

/// The replacement's type, and why: --instance-type, or the successor of
/// the source's type for `image` (the new image, with the drivers the
/// inspection found; or, in a dry run, the source's own image), with the
/// fstab lines on instance-store volumes the successor lacks.
pub(super) async fn replacement_type(
    ctx: &Context,
    co: &dyn CutOver,
    region: &str,
    instance_id: &str,
    (image, drivers): (Option<&str>, Option<(bool, bool)>),
    o: &crate::migrate::cutover::ReplaceOptions,
) -> Result<(String, Vec<String>)> {
    if let Some(t) = &o.instance_type {
        return Ok((t.clone(), vec![format!("{t}: asked with --instance-type")]));
    }
    let (itype, _) = co.instance_of(region, instance_id).await?;
    let src = crate::cli::instances::source_type(ctx, region, &itype, false)
        .await
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{itype} is described nowhere: give --instance-type"
            ))
        })?;
    let mut needs = crate::cli::instances::needs_of(ctx, region, image).await;
    if let Some((ena, nvme)) = drivers {
        needs.ena = Some(ena);
        needs.nvme = Some(nvme);
    }
    let offered = crate::cli::instances::candidates(ctx, region, false).await?;
    let (t, mut why) =
        crate::successor::successor(&src, &needs, &offered, o.successor_family.as_deref())
            .map_err(|e| Error::InvalidInput(format!("--replace: {e}; give --instance-type")))?;
    let kept = offered
        .iter()
        .find(|x| x.instance_type == t)
        .map_or(0, |x| x.instance_store);
    if let (true, Some(image)) = (src.instance_store > kept, image) {
        let lines = lost_mounts(ctx, region, image, src.instance_store).await;
        if !lines.is_empty() {
            why.push(format!(
                "fstab entries on instance-store volumes {t} lacks: {}",
                lines.join("; ")
            ));
        }
    }
    Ok((t, why))
}

/// The new image's fstab lines that mount the source type's instance-store
/// volumes (read where the image's snapshot lies); none when unreadable.
async fn lost_mounts(ctx: &Context, region: &str, image_id: &str, count: u32) -> Vec<String> {
    let Ok(disk) = ctx.backend.image_disk(region, image_id).await else {
        return vec![];
    };
    crate::interrupt::blocking(move || {
        let d = crate::image::guest::discover_in(&disk.disk, None).ok()?;
        let g = crate::image::guest::Guest::open_in(&disk.disk, &d.mounts).ok()?;
        let fstab = g.read_text("/etc/fstab")?;
        Some(crate::successor::instance_store_mounts(&fstab, count))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// `--rollback MIGRATION_ID`.
pub(super) async fn rollback(ctx: &Context, id: &str) -> Result<u8> {
    crate::migrate::journal::check_migration_id(id)?;
    let co = cut_over_of(ctx)?;
    let host = host(ctx)?;
    let mut journal = migrate::Journal::load(&host.journal_dir(), id)?;
    let done = co.roll_back(&mut journal).await?;
    match ctx.format() {
        Format::Json => output::emit(&output::json(&done)),
        f => {
            for s in &done.steps {
                output::emit(&output::labelled(f, "done", s));
            }
            output::emit(&format!(
                "{}: {} {} (the source), {} {} (the replacement){}",
                done.migration_id,
                done.source_instance_id,
                done.source_state,
                done.replacement_instance_id,
                done.replacement_state,
                done.elastic_ip
                    .as_ref()
                    .map(|ip| format!(", {ip} on {}", done.elastic_ip_on.as_deref().unwrap_or("-")))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(0)
}
