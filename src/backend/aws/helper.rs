//! `migrate --method helper`: the conversion runs on a helper instance in the
//! source's account, driven by SSM. amitool makes two volumes in the helper's
//! zone (one from the source's snapshot, one empty), attaches them, runs the
//! preparation script (templates/prepare.sh.j2) in inspect then convert mode
//! with AWS-RunShellScript, snapshots the target and registers it with the
//! same code as the direct method. Every resource is tagged and journaled,
//! and removed again at the end or on failure (the helper only if amitool
//! launched it).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{IamInstanceProfileSpecification, InstanceType, ResourceType, VolumeType};
use base64::Engine;

use crate::backend::aws::images::tag_spec;
use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::image::guestfix;
use crate::image::menulst::{self, MenuLst, RootSpec};
use crate::migrate::journal::{Journal, Upload};
use crate::migrate::script::{self, Device, Mode, Params, Report};
use crate::migrate::{
    self as pipeline, HvmRegistration, Migration, MigrationHost, Options, Source, MIGRATION_TAG,
};

/// The SSM public parameter for the latest Amazon Linux 2023.
pub const HELPER_AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
const WAIT: Duration = Duration::from_secs(900);
const GIB: u64 = 1 << 30;

/// What `--method helper` takes beyond the common options.
#[derive(Debug, Clone, Default)]
pub struct HelperOptions {
    pub instance: Option<String>,
    pub subnet: Option<String>,
    pub profile: Option<String>,
    pub instance_type: String,
}

fn ec2_err<'a, E>(
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

impl AwsBackend {
    pub fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let conf = aws_sdk_ssm::config::Builder::from(self.sdk_config())
            .region(aws_config::Region::new(region.to_string()))
            .build();
        aws_sdk_ssm::Client::from_conf(conf)
    }

    fn ssm_err<E, R>(
        &self,
        action: &'static str,
        region: &str,
        e: aws_sdk_ssm::error::SdkError<E, R>,
    ) -> Error
    where
        E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        super::error::convert(action, region, self.sdk_config().endpoint_url(), e)
    }

    /// The helper: the one given (its zone), or a new one from the latest Amazon Linux.
    async fn helper(
        &self,
        region: &str,
        opts: &HelperOptions,
        journal: &mut Journal,
    ) -> Result<(String, String)> {
        let id = match (&journal.helper_instance, &opts.instance) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) => {
                journal.helper_instance = Some(id.clone());
                journal.save()?;
                id.clone()
            }
            (None, None) => {
                let ami = self
                    .ssm(region)
                    .get_parameter()
                    .name(HELPER_AMI_PARAMETER)
                    .send()
                    .await
                    .map_err(|e| self.ssm_err("GetParameter", region, e))?
                    .parameter()
                    .and_then(|p| p.value().map(String::from))
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "{HELPER_AMI_PARAMETER} has no value in {region}"
                        ))
                    })?;
                let mut tags = BTreeMap::new();
                tags.insert(MIGRATION_TAG.to_string(), journal.migration_id.clone());
                tags.insert(
                    "Name".to_string(),
                    format!("amitool helper {}", journal.migration_id),
                );
                let mut req = self
                    .ec2(region)
                    .run_instances()
                    .image_id(&ami)
                    .instance_type(InstanceType::from(opts.instance_type.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .client_token(format!("{}-helper", journal.migration_id))
                    .tag_specifications(tag_spec(ResourceType::Instance, &tags));
                if let Some(s) = &opts.subnet {
                    req = req.subnet_id(s);
                }
                if let Some(p) = &opts.profile {
                    req = req.iam_instance_profile(
                        IamInstanceProfileSpecification::builder().name(p).build(),
                    );
                }
                let out = req
                    .send()
                    .await
                    .map_err(ec2_err(self, "RunInstances", region))?;
                let id = out
                    .instances()
                    .first()
                    .and_then(|i| i.instance_id())
                    .unwrap_or_default()
                    .to_string();
                journal.helper_instance = Some(id.clone());
                journal.helper_launched = true;
                journal.save()?;
                self.ec2(region)
                    .wait_until_instance_running()
                    .instance_ids(&id)
                    .wait(WAIT)
                    .await
                    .map_err(|e| transfer_err("wait for the helper to run", region, e))?;
                id
            }
        };
        let out = self
            .ec2(region)
            .describe_instances()
            .instance_ids(&id)
            .send()
            .await
            .map_err(ec2_err(self, "DescribeInstances", region))?;
        let inst = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .ok_or_else(|| {
                Error::InvalidInput(format!("no such helper instance {id} in {region}"))
            })?;
        if inst.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("running") {
            return Err(Error::InvalidInput(format!("helper {id} is not running")));
        }
        let zone = inst
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string();
        Ok((id, zone))
    }

    async fn volume(
        &self,
        region: &str,
        zone: &str,
        snapshot: Option<&str>,
        size_gib: u64,
        vtype: &VolumeType,
        journal: &Journal,
    ) -> Result<String> {
        let mut tags = BTreeMap::new();
        tags.insert(MIGRATION_TAG.to_string(), journal.migration_id.clone());
        let mut req = self
            .ec2(region)
            .create_volume()
            .availability_zone(zone)
            .volume_type(vtype.clone())
            .size(size_gib as i32)
            .tag_specifications(tag_spec(ResourceType::Volume, &tags));
        if let Some(s) = snapshot {
            req = req.snapshot_id(s);
        }
        let out = req
            .send()
            .await
            .map_err(ec2_err(self, "CreateVolume", region))?;
        let id = out.volume_id().unwrap_or_default().to_string();
        self.ec2(region)
            .wait_until_volume_available()
            .volume_ids(&id)
            .wait(WAIT)
            .await
            .map_err(|e| transfer_err("wait for a volume", region, e))?;
        Ok(id)
    }

    async fn attach(&self, region: &str, volume: &str, instance: &str, device: &str) -> Result<()> {
        self.ec2(region)
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(device)
            .send()
            .await
            .map_err(ec2_err(self, "AttachVolume", region))?;
        self.ec2(region)
            .wait_until_volume_in_use()
            .volume_ids(volume)
            .wait(WAIT)
            .await
            .map(|_| ())
            .map_err(|e| transfer_err("wait for an attachment", region, e))
    }

    /// Run the rendered script through AWS-RunShellScript and read its report.
    /// SendCommand is retried while SSM does not know the instance yet, and
    /// GetCommandInvocation while the invocation does not exist yet.
    async fn run_script(
        &self,
        region: &str,
        instance: &str,
        migration_id: &str,
        body: &str,
    ) -> Result<Report> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        let file = format!("/tmp/amitool-{migration_id}.sh");
        let command = format!("echo {b64} | base64 -d > {file} && bash {file}");
        let ssm = self.ssm(region);
        let started = std::time::Instant::now();
        let command_id = loop {
            let sent = ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(instance)
                .parameters("commands", vec![command.clone()])
                .timeout_seconds(3600)
                .comment(format!("amitool {migration_id}"))
                .send()
                .await;
            match sent {
                Ok(out) => {
                    break out
                        .command()
                        .and_then(|c| c.command_id())
                        .unwrap_or_default()
                        .to_string()
                }
                Err(e)
                    if super::error::code(&e) == Some("InvalidInstanceId")
                        && started.elapsed() < WAIT =>
                {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                Err(e) => return Err(self.ssm_err("SendCommand", region, e)),
            }
        };
        let mut delay = Duration::from_millis(500);
        loop {
            let got = ssm
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(instance)
                .send()
                .await;
            match got {
                Ok(inv) => {
                    let status = inv
                        .status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default();
                    if !matches!(status.as_str(), "Pending" | "InProgress" | "Delayed") {
                        let stdout = inv.standard_output_content().unwrap_or_default();
                        let report = script::parse_report(stdout).map_err(|_| Error::Transfer {
                            action: "run the preparation script",
                            region: region.into(),
                            message: format!(
                                "status {status}, no report; stderr: {}",
                                inv.standard_error_content()
                                    .unwrap_or_default()
                                    .lines()
                                    .last()
                                    .unwrap_or_default()
                            ),
                        })?;
                        return Ok(report);
                    }
                }
                Err(e) if super::error::code(&e) == Some("InvocationDoesNotExist") => {}
                Err(e) => return Err(self.ssm_err("GetCommandInvocation", region, e)),
            }
            if started.elapsed() > Duration::from_secs(3600) {
                return Err(Error::Transfer {
                    action: "run the preparation script",
                    region: region.into(),
                    message: "no result within an hour".into(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Remove what a helper migration made, but the registered image and its snapshot.
    pub async fn helper_cleanup(&self, journal: &mut Journal, keep_temp: bool) -> Vec<String> {
        let region = journal.region.clone();
        let mut removed = vec![];
        if let (Some(id), true) = (journal.helper_instance.clone(), journal.helper_launched) {
            if self
                .ec2(&region)
                .terminate_instances()
                .instance_ids(&id)
                .send()
                .await
                .is_ok()
            {
                removed.push(id);
                journal.helper_instance = None;
            }
        }
        for vol in [journal.source_volume.take(), journal.target_volume.take()]
            .into_iter()
            .flatten()
        {
            let _ = self
                .ec2(&region)
                .detach_volume()
                .volume_id(&vol)
                .force(true)
                .send()
                .await;
            let _ = self
                .ec2(&region)
                .wait_until_volume_available()
                .volume_ids(&vol)
                .wait(WAIT)
                .await;
            if self
                .ec2(&region)
                .delete_volume()
                .volume_id(&vol)
                .send()
                .await
                .is_ok()
            {
                removed.push(vol);
            }
        }
        if let Some(snap) = journal.temporary_snapshot.clone().filter(|_| !keep_temp) {
            if self.delete_snapshot_quietly(&region, &snap).await.is_ok() {
                removed.push(snap);
                journal.temporary_snapshot = None;
            }
        }
        let _ = journal.save();
        removed
    }
}

fn device(dev: &str, size_gib: u64, volume: &str) -> Device {
    Device {
        device: dev.into(),
        size: size_gib * GIB,
        identity: volume.into(),
    }
}

fn refused(r: &Report, what: &str, region: &str) -> Error {
    if r.check_only {
        return Error::Transfer {
            action: "run the preparation script",
            region: region.to_string(),
            message: format!(
                "the SSM agent ran the script in check-only mode (LocalStack's stand-in): it validated the {what} inputs and read no volume, so there is nothing to convert"
            ),
        };
    }
    Error::InvalidInput(format!(
        "the preparation script refused to {what}: {}",
        r.reason.as_deref().unwrap_or("no reason given")
    ))
}

/// Run a helper migration from its journal.
pub async fn run(
    aws: &AwsBackend,
    mut journal: Journal,
    opts: &Options,
    helper: &HelperOptions,
) -> Result<Migration> {
    let mut rec = pipeline::Recorder::new();
    let result = steps(aws, &mut journal, opts, helper, &mut rec).await;
    journal.state = if result.is_ok() { "done" } else { "failed" }.into();
    let left = aws.helper_cleanup(&mut journal, opts.keep_temp).await;
    journal.save()?;
    let (source_image_id, image_id, findings) = result?;
    rec.done(
        "cleanup",
        if left.is_empty() {
            "nothing to remove".into()
        } else {
            format!("removed {}", left.join(", "))
        },
    );
    Ok(Migration {
        migration_id: journal.migration_id.clone(),
        region: journal.region.clone(),
        source_image_id,
        image_id,
        steps: rec.steps,
        findings,
        inspection: None,
    })
}

async fn steps(
    aws: &AwsBackend,
    journal: &mut Journal,
    opts: &Options,
    helper: &HelperOptions,
    rec: &mut pipeline::Recorder,
) -> Result<(String, String, Vec<String>)> {
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
    let image = super::convert::image(&region, &raw);
    pipeline::check_source(&image)?;
    if !raw.product_codes().is_empty() {
        return Err(Error::InvalidInput(format!("{image_id} carries Marketplace product codes: its software may not be copied into a new image")));
    }
    let (ami_snapshot, vtype) = AwsBackend::root_snapshot(&raw)?;
    let vtype = vtype.unwrap_or(VolumeType::Gp2);
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
            aws.volume(&region, &zone, Some(&snapshot), size_gib, &vtype, journal)
                .await?,
        );
        journal.save()?;
    }
    if journal.target_volume.is_none() {
        journal.target_volume = Some(
            aws.volume(&region, &zone, None, size_gib + 1, &vtype, journal)
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
    if !facts.ok || facts.check_only {
        return Err(refused(&facts, "inspect", &region));
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
    let cfg = menulst::to_grub2(
        &menu,
        &RootSpec {
            uuid: uuid.clone(),
            label: facts.label.clone(),
        },
    );
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
    let mut findings = vec![];
    if opts.fix_guest {
        if let Some((content, changes)) =
            decode(&facts.fstab_b64).and_then(|t| guestfix::fix_fstab(&t, &uuid))
        {
            params.fixes.push(guestfix::GuestFix {
                path: "/etc/fstab".into(),
                content,
                description: changes.join("; "),
            });
            findings.extend(changes.into_iter().map(|c| format!("fixed: {c}")));
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
    if !done.ok || done.check_only {
        return Err(refused(&done, "convert", &region));
    }
    rec.done(
        "convert",
        format!("core.img {} bytes", done.core_img_bytes.unwrap_or(0)),
    );

    for vol in [&src_vol, &dst_vol] {
        aws.ec2(&region)
            .detach_volume()
            .volume_id(vol)
            .send()
            .await
            .map_err(ec2_err(aws, "DetachVolume", &region))?;
        aws.ec2(&region)
            .wait_until_volume_available()
            .volume_ids(vol)
            .wait(WAIT)
            .await
            .map_err(|e| transfer_err("wait for a detachment", &region, e))?;
    }
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
        // The helper does not read the guest's modules: EnaSupport stays off
        // (setting it on an image without the driver loses the network).
        ena_support: false,
        tags,
        grub_cfg: cfg,
        drivers: Default::default(),
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
    findings.push("EnaSupport not set: the helper method does not read the guest's kernel modules (use --method direct to detect an ena driver)".into());
    Ok((image_id, registered.image_id, findings))
}
