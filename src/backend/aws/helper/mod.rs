//! `migrate --method helper`: the conversion runs on a helper instance in the
//! source's account, driven by SSM. amitool makes two volumes in the helper's
//! zone (one from the source's snapshot, one empty), attaches them, runs the
//! preparation script (templates/prepare.sh.j2) in convert mode with
//! AWS-RunShellScript, snapshots the target and registers it with the same
//! code as the direct method. The source is inspected and planned in Rust
//! before anything is launched, read where it lies (GetSnapshotBlock), with
//! the same inspection as every method; the script only copies the
//! filesystem and writes what it is given. Every resource is tagged and journaled,
//! and removed again at the end or on failure (the helper only if amitool
//! launched it).

use std::collections::BTreeMap;

mod resources;
mod ssm;
use std::time::Duration;

use aws_sdk_ec2::types::VolumeType;

use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::image::bootcfg;
use crate::image::guestfix;
use crate::migrate::journal::{Journal, Upload};
use crate::migrate::script::{self, Device, Mode, Params, Report};
use crate::migrate::{
    self as pipeline, HvmRegistration, Migration, MigrationHost, Options, Source, MIGRATION_TAG,
};

/// The SSM public parameter for the latest Amazon Linux 2023.
pub const HELPER_AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
pub(crate) const WAIT: Duration = Duration::from_secs(900);
pub(crate) const GIB: u64 = 1 << 30;

/// What `--method helper` takes beyond the common options.
#[derive(Debug, Clone, Default)]
pub struct HelperOptions {
    pub instance: Option<String>,
    pub subnet: Option<String>,
    pub profile: Option<String>,
    pub instance_type: String,
}

pub(crate) fn ec2_err<'a, E>(
    aws: &'a AwsBackend,
    action: &'static str,
    region: &str,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Error + 'a
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let region = region.to_string();
    move |e| aws.err(action, &region, e)
}

fn device(dev: &str, size_gib: u64, volume: &str) -> Device {
    Device {
        device: dev.into(),
        size: size_gib * GIB,
        identity: volume.into(),
    }
}

fn refused(r: &Report, what: &str) -> Error {
    Error::InvalidInput(format!(
        "the preparation script refused to {what}: {}",
        r.reason.as_deref().unwrap_or("no reason given")
    ))
}

/// A failed or interrupted helper migration's error, saying what cleanup
/// removed and what is left and why, when anything is or it was Ctrl-C; a
/// refusal that left nothing is returned as it is.
fn stopped(journal: &Journal, removed: &[String], e: Error) -> Error {
    let mut left = vec![];
    if let (Some(h), true) = (&journal.helper_instance, journal.helper_launched) {
        left.push(format!("helper {h} (could not be terminated)"));
    }
    for v in [&journal.source_volume, &journal.target_volume]
        .into_iter()
        .flatten()
    {
        left.push(format!(
            "volume {v} (kept: --keep-temp, or it could not be deleted)"
        ));
    }
    if let Some(s) = &journal.temporary_snapshot {
        left.push(format!("snapshot {s} of the source (for --resume)"));
    }
    if let Some(u) = &journal.upload {
        left.push(format!(
            "snapshot {} of the converted disk (for --resume)",
            u.snapshot_id
        ));
    }
    let interrupted = matches!(e, Error::Interrupted);
    if left.is_empty() && !interrupted {
        return e;
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "nothing".to_string()
        } else {
            v.join(", ")
        }
    };
    Error::MigrationInterrupted {
        migration_id: journal.migration_id.clone(),
        message: format!(
            "{}; removed {}; left {}",
            crate::error::chain(&e),
            list(removed),
            list(&left)
        ),
        interrupted,
    }
}

/// Run a helper migration from its journal.
pub async fn run(
    aws: &AwsBackend,
    mut journal: Journal,
    opts: &Options,
    helper: &HelperOptions,
) -> Result<Migration> {
    pipeline::started(&journal);
    let mut rec = pipeline::Recorder::new();
    let result = crate::interrupt::or_interrupted(steps(aws, &mut journal, helper, &mut rec)).await;
    journal.state = match &result {
        Ok(_) => "done",
        Err(_) if crate::interrupt::is_interrupted() => "interrupted",
        Err(_) => "failed",
    }
    .into();
    let removed = aws.helper_cleanup(&mut journal, opts.keep_temp).await;
    journal.save()?;
    let (source_image_id, image_id, findings, changes) = match result {
        Ok(r) => r,
        Err(e) => return Err(stopped(&journal, &removed, e)),
    };
    rec.done(
        "cleanup",
        if removed.is_empty() {
            "nothing to remove".into()
        } else {
            format!("removed {}", removed.join(", "))
        },
    );
    Ok(Migration {
        migration_id: journal.migration_id.clone(),
        region: journal.region.clone(),
        source_image_id,
        source_instance_id: (journal.source_kind == "instance").then(|| journal.source_id.clone()),
        image_id,
        steps: std::mem::take(&mut rec.steps),
        findings,
        changes,
        inspection: None,
    })
}

async fn steps(
    aws: &AwsBackend,
    journal: &mut Journal,
    helper: &HelperOptions,
    rec: &mut pipeline::Recorder,
) -> Result<(String, String, Vec<String>, Vec<bootcfg::Change>)> {
    let region = journal.region.clone();
    let source = pipeline::source_of(journal);
    let (image_id, root_volume) = match &source {
        Source::Image(id) => (id.clone(), None),
        Source::Instance(id) => {
            let (vol, image) = aws.instance_root(&region, id).await?;
            (image, Some(vol))
        }
    };
    let raw = aws.describe_raw(&region, &image_id).await?;
    let image = crate::backend::aws::convert::migratable(&region, &raw)?;
    let (ami_snapshot, vtype) = AwsBackend::root_snapshot(&raw)?;
    let vtype = vtype.unwrap_or(VolumeType::Gp2);
    // The target (and the new image's root) keeps the source's type unless told.
    let target_type = journal
        .volume_type
        .as_deref()
        .map(VolumeType::from)
        .unwrap_or_else(|| vtype.clone());
    let snapshot = match (root_volume, journal.temporary_snapshot.clone()) {
        (None, _) => ami_snapshot,
        (Some(_), Some(s)) => s,
        (Some(vol), None) => {
            let snap = aws
                .create_snapshot_of(&region, &vol, &journal.migration_id)
                .await?;
            journal.temporary_snapshot = Some(snap.clone());
            journal.save()?;
            aws.wait_snapshot(&region, &snap).await?;
            snap
        }
    };
    let size_gib = aws
        .ec2(&region)
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .map_err(ec2_err(aws, "DescribeSnapshots", &region))?
        .snapshots()
        .first()
        .and_then(|s| s.volume_size())
        .unwrap_or(8) as u64;
    rec.done(
        "snapshot",
        format!("root snapshot {snapshot} of {image_id} ({size_gib} GiB)"),
    );

    // The source read where it lies, before anything is launched: the same
    // inspection, plan and refusals as the other methods; the helper only
    // moves bytes.
    let plan = inspect_in_place(aws, &region, &image, &snapshot, journal.fix_guest).await?;
    pipeline::check_name(
        aws,
        &region,
        &image,
        journal.name.as_deref(),
        journal.image_id.as_deref(),
    )
    .await?;
    rec.done(
        "inspect",
        format!(
            "{} {} uuid={}, boots {}; read in place: {} blocks",
            plan.insp.layout.as_str(),
            plan.insp.fs_type.as_str(),
            plan.insp.uuid,
            plan.insp.kernel.as_deref().unwrap_or("-"),
            plan.blocks_read
        ),
    );
    // The HVM disk's first MiB (MBR, boot.img, core.img), built here as for
    // every method and staged as a snapshot the target volume is made from:
    // the helper's script writes no boot code.
    if journal.boot_snapshot.is_none() {
        let layout = plan.insp.hvm_layout();
        let work = tempfile::tempdir()
            .map_err(|e| Error::io("create a work directory in", std::env::temp_dir(), e))?;
        let area = crate::image::hvm::boot_area(&layout, &plan.cfg, work.path())
            .map_err(|e| Error::InvalidInput(format!("build the boot area: {e}")))?;
        let mid = journal.migration_id.clone();
        let tags = [
            (MIGRATION_TAG.to_string(), mid.clone()),
            (resources::ROLE_TAG.to_string(), "boot".to_string()),
        ];
        let snap = crate::backend::aws::transfer::upload_bytes(
            &aws.ebs(&region),
            &region,
            size_gib + 1,
            &area,
            &format!("amitool {mid}: the HVM disk's boot area"),
            &tags,
            &format!("{mid}-boot"),
        )
        .await?;
        journal.boot_snapshot = Some(snap.clone());
        journal.save()?;
        aws.wait_snapshot(&region, &snap).await?;
    }
    let boot_snapshot = journal.boot_snapshot.clone().expect("set above");
    rec.done(
        "boot area",
        format!("{boot_snapshot}: the MBR and core.img, staged for the target volume"),
    );
    let (instance, zone) = aws.helper(&region, helper, journal).await?;
    rec.done(
        "helper",
        format!(
            "{instance} in {zone}{}",
            if journal.helper_launched {
                " (launched)"
            } else {
                ""
            }
        ),
    );
    if journal.source_volume.is_none() {
        journal.source_volume = Some(
            aws.volume(
                &region,
                &zone,
                ("source", Some(&snapshot)),
                size_gib,
                &vtype,
                journal,
            )
            .await?,
        );
        journal.save()?;
    }
    if journal.target_volume.is_none() {
        journal.target_volume = Some(
            aws.volume(
                &region,
                &zone,
                ("target", Some(&boot_snapshot)),
                size_gib + 1,
                &target_type,
                journal,
            )
            .await?,
        );
        journal.save()?;
    }
    let (src_vol, dst_vol) = (
        journal.source_volume.clone().expect("set"),
        journal.target_volume.clone().expect("set"),
    );
    aws.attach(&region, &src_vol, &instance, "/dev/sdf").await?;
    aws.attach(&region, &dst_vol, &instance, "/dev/sdg").await?;
    rec.done(
        "volumes",
        format!(
            "{src_vol} (source) on /dev/sdf, {dst_vol} (target, {} GiB) on /dev/sdg",
            size_gib + 1
        ),
    );

    let (src_dev, dst_dev) = (
        device("/dev/sdf", size_gib, &src_vol),
        device("/dev/sdg", size_gib + 1, &dst_vol),
    );
    let Plan {
        insp,
        cfg,
        fixes,
        blocks_read: _,
    } = plan;
    let params = Params {
        mode: Mode::Convert,
        migration_id: journal.migration_id.clone(),
        source: src_dev,
        target: dst_dev,
        fs_offset: insp.fs_offset,
        fs_size: insp.fs_size,
        fixes: fixes.iter().map(|(f, _)| f.clone()).collect(),
    };
    let mut findings = insp.findings.clone();
    findings.extend(fixes.iter().filter_map(|(_, fixed)| fixed.clone()));
    let changes = insp.boot_changes.clone();
    let drivers = insp.drivers.clone();
    let done = aws
        .run_script(
            &region,
            &instance,
            &journal.migration_id,
            &script::render(&params)?,
        )
        .await?;
    if !done.ok {
        return Err(refused(&done, "convert"));
    }
    rec.done(
        "convert",
        format!(
            "the filesystem at 1 MiB of {dst_vol}, {} file(s) rewritten",
            params.fixes.len()
        ),
    );

    for vol in [&src_vol, &dst_vol] {
        aws.detach(&region, vol, false).await?;
    }
    // create_snapshot_of finds the one an earlier run made of this volume.
    let target_snapshot = match journal.upload.as_ref().filter(|u| u.completed) {
        Some(u) => u.snapshot_id.clone(),
        None => {
            let snap = aws
                .create_snapshot_of(&region, &dst_vol, &journal.migration_id)
                .await?;
            journal.upload = Some(Upload {
                snapshot_id: snap.clone(),
                ..Default::default()
            });
            journal.save()?;
            aws.wait_snapshot(&region, &snap).await?;
            journal.upload.as_mut().expect("set").completed = true;
            journal.save()?;
            snap
        }
    };
    rec.done("snapshot target", target_snapshot.clone());
    let mut tags: BTreeMap<String, String> = raw
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .filter(|(k, _)| !k.starts_with("aws:"))
        .collect();
    tags.insert(MIGRATION_TAG.into(), journal.migration_id.clone());
    tags.insert("amitool:source-image".into(), image_id.clone());
    if journal.source_kind == "instance" {
        tags.insert("amitool:source-instance".into(), journal.source_id.clone());
    }
    tags.insert(crate::image::inspect::DRIVERS_TAG.into(), drivers.to_tag());
    let reg = HvmRegistration {
        name: journal.name.clone().unwrap_or_else(|| {
            format!(
                "{}-hvm",
                image.name.clone().unwrap_or_else(|| image_id.clone())
            )
        }),
        volume_size_gib: size_gib + 1,
        description: raw
            .description()
            .map(String::from)
            .unwrap_or_else(|| format!("HVM migration of {image_id} by amitool")),
        architecture: image
            .architecture
            .clone()
            .unwrap_or_else(|| "x86_64".into()),
        snapshot_id: target_snapshot,
        // Only with an ena driver: setting it on an image without one loses the network.
        ena_support: drivers.ena,
        tags,
        grub_cfg: cfg,
        drivers: drivers.clone(),
        volume_type: Some(target_type.as_str().to_string()),
    };
    pipeline::test_pause_in("register").await;
    let registered = aws
        .register_hvm(&region, &reg, &journal.migration_id)
        .await?;
    journal.image_id = Some(registered.image_id.clone());
    journal.save()?;
    let problems = aws
        .verify_registered(&region, &registered.image_id, &reg)
        .await?;
    if !problems.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the registered image {} is not what was asked: {}",
            registered.image_id,
            problems.join("; ")
        )));
    }
    rec.done(
        "register",
        format!("{} (hvm, {})", registered.image_id, reg.architecture),
    );
    if !drivers.ena {
        findings.push("EnaSupport not set: the kernel has no ena driver".into());
    }
    Ok((image_id, registered.image_id, findings, changes))
}

/// What the helper is told to do, planned from the source read in place.
struct Plan {
    insp: crate::image::inspect::Inspection,
    /// core.img's configuration: the hand-over to the guest's own file.
    cfg: String,
    /// Files to write into the copy, each with its `fixed:` finding (a --fix-guest fix).
    fixes: Vec<(guestfix::GuestFix, Option<String>)>,
    blocks_read: u64,
}

/// Inspect `snapshot` where it lies (GetSnapshotBlock) and plan the copy;
/// refuse what no method can migrate and what the helper's one-filesystem
/// copy cannot (several partitions).
async fn inspect_in_place(
    aws: &AwsBackend,
    region: &str,
    image: &crate::model::Image,
    snapshot: &str,
    fix_guest: bool,
) -> Result<Plan> {
    use crate::image::guest::Guest;
    use crate::image::inspect;
    let flavor = aws.flavor_of(region, image.kernel_id.as_deref()).await;
    let src = crate::backend::aws::blocks::SnapshotSource::open(aws.ebs(region), region, snapshot)
        .await?;
    let disk: crate::image::source::Disk = std::sync::Arc::new(src);
    let image_id = image.image_id.clone();
    let d = disk.clone();
    let (insp, extra) = tokio::task::spawn_blocking(move || -> Result<_> {
        let insp = inspect::inspect_in(&d, flavor)
            .map_err(|e| Error::InvalidInput(format!("{image_id}: {e}")))?;
        let extra = match (&insp.root_uuid, fix_guest) {
            (Some(root), true) => {
                let g = Guest::open_in(&d, &insp.mounts)
                    .map_err(|e| Error::InvalidInput(format!("fix-guest: {e}")))?;
                guestfix::plan(&g, root)
            }
            _ => vec![],
        };
        Ok((insp, extra))
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("inspect: {e}")))??;
    if let Some(why) = pipeline::refusal(&image.image_id, &insp) {
        return Err(Error::InvalidInput(why));
    }
    if insp.partitions.len() > 1 {
        return Err(Error::InvalidInput(format!(
            "{} has {} partitions (a separate /boot or an LVM2 root): the helper method copies one filesystem; use --method direct",
            image.image_id,
            insp.partitions.len()
        )));
    }
    let cfg = pipeline::plan_config(&insp)?;
    let mut fixes: Vec<(guestfix::GuestFix, Option<String>)> = insp
        .boot
        .as_ref()
        .map(|b| {
            b.edits
                .iter()
                .map(|e| (guestfix::GuestFix::from_edit(e), None))
                .collect()
        })
        .unwrap_or_default();
    // fix_fstab's text includes the root entry's rewrite, so it replaces that edit.
    for fix in extra {
        fixes.retain(|(f, _)| f.path != fix.path);
        let note = Some(format!("fixed: {}", fix.description));
        fixes.push((fix, note));
    }
    Ok(Plan {
        blocks_read: disk.blocks_read().unwrap_or(0),
        insp,
        cfg,
        fixes,
    })
}
