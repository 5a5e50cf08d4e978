//! `migrate --method helper`: the conversion runs on a helper instance in the
//! source's account, driven by SSM. amitool makes two volumes in the helper's
//! zone (one from the source's snapshot, one empty), attaches them, runs the
//! preparation script (templates/prepare.sh.j2) in inspect then convert mode
//! with AWS-RunShellScript, snapshots the target and registers it with the
//! same code as the direct method. Every resource is tagged and journaled,
//! and removed again at the end or on failure (the helper only if amitool
//! launched it).

use std::collections::BTreeMap;

mod resources;
mod ssm;
use std::time::Duration;

use aws_sdk_ec2::types::VolumeType;
use base64::Engine;

use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::image::bootcfg;
use crate::image::guestfix;
use crate::image::menulst::MenuLst;
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
    let mut rec = pipeline::Recorder::new();
    let result =
        crate::interrupt::or_interrupted(steps(aws, &mut journal, opts, helper, &mut rec)).await;
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
    opts: &Options,
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
    // The helper's script copies one whole-disk filesystem; a partitioned
    // disk (separate /boot, LVM root) is refused before anything is launched.
    if aws.flavor_of(&region, image.kernel_id.as_deref()).await
        == Some(crate::kernels::Flavor::Hd00)
    {
        return Err(Error::InvalidInput(format!(
            "{image_id} boots with the hd00 PV-GRUB (a partitioned disk): the helper method copies whole-disk (hd0) filesystems only; use --method direct"
        )));
    }
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
                ("target", None),
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
    let mut params = Params {
        mode: Mode::Inspect,
        migration_id: journal.migration_id.clone(),
        source: src_dev,
        target: dst_dev,
        fs_offset: 0,
        fs_size: size_gib * GIB,
        grub_cfg: None,
        fixes: vec![],
    };
    let facts = aws
        .run_script(
            &region,
            &instance,
            &journal.migration_id,
            &script::render(&params)?,
        )
        .await?;
    if !facts.ok {
        return Err(refused(&facts, "inspect"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &Option<String>| {
        s.as_deref()
            .and_then(|v| b64.decode(v).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let menu = MenuLst::parse(&decode(&facts.menu_b64).unwrap_or_default());
    let uuid = facts.uuid.clone().unwrap_or_default();
    if menu
        .default_entry()
        .and_then(|e| e.kernel.as_ref())
        .is_none()
    {
        return Err(Error::InvalidInput(format!(
            "{image_id} cannot be migrated: no boot menu with a default kernel ({})",
            facts.menu_path.as_deref().unwrap_or("none found")
        )));
    }
    // The default kernel's drivers, as the helper read them from /lib/modules.
    let kernel_version = menu
        .default_entry()
        .and_then(|e| e.kernel.as_deref())
        .and_then(crate::image::inspect::version_of);
    let found = kernel_version
        .as_ref()
        .and_then(|v| facts.drivers.get(v))
        .map(|d| d.split_whitespace().map(String::from).collect::<Vec<_>>())
        .unwrap_or_default();
    let drivers = crate::image::inspect::Drivers {
        xen_blkfront: found.iter().any(|d| d == "xen-blkfront"),
        ena: found.iter().any(|d| d == "ena"),
        nvme: found.iter().any(|d| d == "nvme"),
    };
    // The same planner as the direct and local methods, over the files the
    // helper shipped: GRUB hands over to the guest's own menu, rewritten for HVM.
    let files = facts.file_set();
    let plan = bootcfg::plan(
        &files,
        &bootcfg::Context {
            root_uuid: Some(uuid.clone()),
            boot_uuid: None,
            grub_root: "(hd0,0)".into(),
            default_version: kernel_version.clone(),
            hvm_default: None,
        },
    )
    .ok_or_else(|| {
        Error::InvalidInput(format!(
            "{image_id} cannot be migrated: none of its boot menus could be read"
        ))
    })?;
    let cfg = bootcfg::handover(&uuid, &plan.config);
    let changes = plan.changes();
    rec.done(
        "inspect",
        format!(
            "uuid={uuid} label={} menu {}",
            facts.label.as_deref().unwrap_or("-"),
            facts.menu_path.as_deref().unwrap_or("-")
        ),
    );

    params.mode = Mode::Convert;
    params.fs_size = facts.fs_size.unwrap_or(params.fs_size);
    params.grub_cfg = Some(cfg.clone());
    params.fixes = plan
        .edits
        .iter()
        .map(guestfix::GuestFix::from_edit)
        .collect();
    let mut findings = vec![];
    if opts.fix_guest {
        // fix_fstab's text includes the root entry's rewrite, so it replaces that edit.
        for fix in guestfix::plan(&files, &uuid) {
            params.fixes.retain(|f| f.path != fix.path);
            findings.push(format!("fixed: {}", fix.description));
            params.fixes.push(fix);
        }
    }
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
        format!("core.img {} bytes", done.core_img_bytes.unwrap_or(0)),
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
    // No amitool:boot-drivers tag: the helper reads modules, not the initramfs.
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
        findings.push(format!(
            "EnaSupport not set: no ena driver for kernel {}",
            kernel_version.as_deref().unwrap_or("(none found)")
        ));
    }
    Ok((image_id, registered.image_id, findings, changes))
}
