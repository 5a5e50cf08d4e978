//! `migrate --dry-run` on AWS: resolve and check the source (read-only
//! calls), then say what would be made, and ask EC2 with DryRun=true whether
//! each call that creates something would be allowed. Nothing is created.

use crate::backend::aws::helper::{HelperOptions, HELPER_AMI_PARAMETER};
use crate::backend::aws::AwsBackend;
use crate::error::Result;
use crate::migrate::script::{self, Device, Mode, Params};
use crate::migrate::Source;

pub use crate::migrate::dryrun::{Check, ProviderPlan as Plan};

/// What EC2 said to a DryRun=true call.
fn judge<E, R>(
    r: std::result::Result<
        R,
        aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    >,
) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match r {
        Ok(_) => "allowed (EC2 ignored DryRun)".into(),
        Err(e) => match crate::backend::aws::error::code(&e) {
            Some("DryRunOperation") => "allowed".into(),
            Some("UnauthorizedOperation") => "denied: the caller lacks the permission".into(),
            Some(code) => format!(
                "{code}: {}",
                e.as_service_error()
                    .and_then(|s| s.message())
                    .unwrap_or_default()
            ),
            None => format!("no answer: {}", crate::error::chain(&e)),
        },
    }
}

pub async fn plan(
    aws: &AwsBackend,
    region: &str,
    source: &Source,
    helper: Option<&HelperOptions>,
    steps: &crate::migrate::StepPlan,
) -> Result<Plan> {
    let (image_id, root_volume) = match source {
        Source::Image(id) => (id.clone(), None),
        Source::Instance(id) => {
            let (vol, image) = aws.instance_root(region, id).await?;
            (image, Some(vol))
        }
    };
    let raw = aws.describe_raw(region, &image_id).await?;
    crate::backend::aws::convert::migratable(region, &raw)?;
    let (snapshot, _) = AwsBackend::root_snapshot(&raw)?;
    let ec2 = aws.ec2(region);
    let mut checks = vec![];
    let mut resources = vec![];
    if let Some(vol) = &root_volume {
        resources.push(format!("a snapshot of {vol} (deleted at the end)"));
        checks.push(Check {
            api: "CreateSnapshot",
            result: judge(
                ec2.create_snapshot()
                    .volume_id(vol)
                    .dry_run(true)
                    .send()
                    .await,
            ),
        });
    }
    let mut p = Plan {
        replacement: None,
        method: if helper.is_some() {
            crate::migrate::Method::Helper
        } else {
            crate::migrate::Method::Direct
        },
        region: region.to_string(),
        source_image_id: image_id.clone(),
        root_snapshot: root_volume.is_none().then(|| snapshot.clone()),
        steps: crate::migrate::planned_steps(steps),
        resources,
        checks,
        script: None,
        inspection: None,
        inspection_error: None,
    };
    match helper {
        None => {
            p.resources
                .push("a work directory holding the root disk's data (sparse)".into());
            p.resources
                .push("a new snapshot written with the EBS direct APIs (the result)".into());
            p.resources
                .push("an HVM image registered from it (the result)".into());
        }
        Some(h) => {
            let size = ec2
                .describe_snapshots()
                .snapshot_ids(&snapshot)
                .send()
                .await
                .ok()
                .and_then(|o| o.snapshots().first().and_then(|s| s.volume_size()))
                .unwrap_or(8) as u64;
            match &h.instance {
                Some(i) => p
                    .resources
                    .push(format!("nothing for the helper: {i} is used as it is")),
                None => {
                    let ami = aws
                        .ssm(region)
                        .get_parameter()
                        .name(HELPER_AMI_PARAMETER)
                        .send()
                        .await
                        .ok()
                        .and_then(|o| o.parameter().and_then(|p| p.value().map(String::from)));
                    p.resources.push(format!(
                        "a {} helper from {} (terminated at the end)",
                        h.instance_type,
                        ami.as_deref().unwrap_or(HELPER_AMI_PARAMETER)
                    ));
                    if let Some(ami) = ami {
                        let mut req = ec2
                            .run_instances()
                            .image_id(ami)
                            .instance_type(aws_sdk_ec2::types::InstanceType::from(
                                h.instance_type.as_str(),
                            ))
                            .min_count(1)
                            .max_count(1)
                            .dry_run(true);
                        if let Some(s) = &h.subnet {
                            req = req.subnet_id(s);
                        }
                        checks_push(&mut p, "RunInstances", judge(req.send().await));
                    }
                }
            }
            p.resources.push(format!(
                "a snapshot of the HVM disk's first MiB (MBR and core.img, written with the EBS direct APIs), a {size} GiB volume from {snapshot} and a {} GiB volume from that first snapshot (all deleted at the end)",
                size + 1
            ));
            p.resources.push(
                "a snapshot of the second volume and an HVM image registered from it (the result)"
                    .into(),
            );
            let zone = format!("{region}a");
            checks_push(
                &mut p,
                "CreateVolume",
                judge(
                    ec2.create_volume()
                        .availability_zone(zone)
                        .size(size as i32 + 1)
                        .dry_run(true)
                        .send()
                        .await,
                ),
            );
            let params = Params {
                mode: Mode::Check,
                migration_id: "mig-000000000000".into(),
                source: Device {
                    device: "/dev/sdf".into(),
                    size: size << 30,
                    identity: "vol-00000000".into(),
                },
                target: Device {
                    device: "/dev/sdg".into(),
                    size: (size + 1) << 30,
                    identity: "vol-00000001".into(),
                },
                ranges: vec![crate::image::hvm::Range {
                    src: 0,
                    len: size << 30,
                    dst: 1 << 20,
                }],
                filesystems: vec![0],
            };
            p.script = Some(script::render(&params)?);
        }
    }
    Ok(p)
}

fn checks_push(p: &mut Plan, api: &'static str, result: String) {
    p.checks.push(Check { api, result });
}

#[async_trait::async_trait]
impl crate::migrate::dryrun::ProviderDryRun for AwsBackend {
    async fn plan(
        &self,
        region: &str,
        source: &Source,
        helper: Option<&HelperOptions>,
        steps: &crate::migrate::StepPlan,
    ) -> Result<Plan> {
        plan(self, region, source, helper, steps).await
    }
}
