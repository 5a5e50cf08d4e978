//! `migrate --dry-run` on AWS: resolve and check the source (read-only
//! calls), then say what would be made, and ask EC2 with DryRun=true whether
//! each call that creates something would be allowed. Nothing is created.

use serde::Serialize;

use crate::backend::aws::helper::{HelperOptions, HELPER_AMI_PARAMETER};
use crate::backend::aws::AwsBackend;
use crate::error::Result;
use crate::migrate::script::{self, Device, Mode, Params};
use crate::migrate::Source;
use crate::output::Tabular;

/// One EC2 call asked with DryRun=true, and EC2's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub api: &'static str,
    /// `allowed`, `denied: ...`, or what else EC2 said.
    pub result: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub method: &'static str,
    pub region: String,
    pub source_image_id: String,
    pub root_snapshot: Option<String>,
    pub steps: Vec<&'static str>,
    pub resources: Vec<String>,
    pub checks: Vec<Check>,
    /// The helper's device check (the script in check mode); the convert script is rendered from the plan.
    pub script: Option<String>,
    /// The source read where it lies (an image's root snapshot, GetSnapshotBlock):
    /// what would change, be refused, and be read and written.
    pub inspection: Option<crate::migrate::Preview>,
    /// Why the source could not be read in place, when it could not.
    pub inspection_error: Option<String>,
    /// `--replace`: the replacement that would be launched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<crate::migrate::cutover::ReplacePreview>,
}

impl Tabular for Check {
    fn headers() -> Vec<&'static str> {
        vec!["DRY-RUN CALL", "RESULT"]
    }

    fn row(&self) -> Vec<String> {
        vec![self.api.into(), self.result.clone()]
    }
}

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
        method: if helper.is_some() { "helper" } else { "direct" },
        region: region.to_string(),
        source_image_id: image_id.clone(),
        root_snapshot: root_volume.is_none().then(|| snapshot.clone()),
        steps: vec![],
        resources,
        checks,
        script: None,
        inspection: None,
        inspection_error: None,
    };
    match helper {
        None => {
            p.steps = vec![
                "snapshot", "inspect", "plan", "build", "upload", "register", "verify",
            ];
            p.resources
                .push("a work directory holding the root disk's data (sparse)".into());
            p.resources
                .push("a new snapshot written with the EBS direct APIs (the result)".into());
            p.resources
                .push("an HVM image registered from it (the result)".into());
        }
        Some(h) => {
            p.steps = vec![
                "snapshot",
                "inspect",
                "boot area",
                "helper",
                "volumes",
                "convert",
                "snapshot target",
                "register",
                "cleanup",
            ];
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
