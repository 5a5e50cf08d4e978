//! The helper's resources: the instance, its volumes and attachments, the
//! SSM command that runs the preparation script, and their removal.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceType, ResourceType, VolumeAttachmentState,
    VolumeState, VolumeType,
};
use base64::Engine;

use super::{ec2_err, HelperOptions, HELPER_AMI_PARAMETER, WAIT};
use crate::backend::aws::images::tag_spec;
use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::{filter, AwsBackend};
use crate::error::{Error, Result};
use crate::migrate::journal::Journal;
use crate::migrate::script::{self, Report};
use crate::migrate::MIGRATION_TAG;

/// What a resource is to its migration (source / target volume, helper).
pub(super) const ROLE_TAG: &str = "amitool:role";

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
        crate::backend::aws::error::convert(action, region, self.sdk_config().endpoint_url(), e)
    }

    /// The helper: the one given (its zone), or a new one from the latest Amazon Linux.
    pub(super) async fn helper(
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
            (None, None) => match self.launched_helper(region, &journal.migration_id).await? {
                // Launched by a run killed before its journal knew of it.
                Some(id) => {
                    journal.helper_instance = Some(id.clone());
                    journal.helper_launched = true;
                    journal.save()?;
                    id
                }
                None => self.launch_helper(region, opts, journal).await?,
            },
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

    /// Launch a helper from the latest Amazon Linux 2023 and wait until it runs.
    async fn launch_helper(
        &self,
        region: &str,
        opts: &HelperOptions,
        journal: &mut Journal,
    ) -> Result<String> {
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
                Error::InvalidInput(format!("{HELPER_AMI_PARAMETER} has no value in {region}"))
            })?;
        let mut tags = BTreeMap::new();
        tags.insert(MIGRATION_TAG.to_string(), journal.migration_id.clone());
        tags.insert(ROLE_TAG.to_string(), "helper".to_string());
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
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
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
        Ok(id)
    }

    /// A helper this migration launched in a run killed before its journal knew.
    async fn launched_helper(&self, region: &str, migration_id: &str) -> Result<Option<String>> {
        let out = self
            .ec2(region)
            .describe_instances()
            .filters(filter(&format!("tag:{MIGRATION_TAG}"), migration_id))
            .filters(filter(&format!("tag:{ROLE_TAG}"), "helper"))
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .map_err(ec2_err(self, "DescribeInstances", region))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.instance_id().map(String::from)))
    }

    /// The source volume (from `snapshot`) or the empty target, made once.
    pub(super) async fn volume(
        &self,
        region: &str,
        zone: &str,
        (role, snapshot): (&str, Option<&str>),
        size_gib: u64,
        vtype: &VolumeType,
        journal: &Journal,
    ) -> Result<String> {
        // A run killed between CreateVolume and its journal finds the volume it made.
        let earlier = self
            .ec2(region)
            .describe_volumes()
            .filters(filter(
                &format!("tag:{MIGRATION_TAG}"),
                &journal.migration_id,
            ))
            .filters(filter(&format!("tag:{ROLE_TAG}"), role))
            .send()
            .await
            .map_err(ec2_err(self, "DescribeVolumes", region))?;
        let mut tags = BTreeMap::new();
        tags.insert(MIGRATION_TAG.to_string(), journal.migration_id.clone());
        tags.insert(ROLE_TAG.to_string(), role.to_string());
        if let Some(id) = earlier
            .volumes()
            .iter()
            .filter(|v| {
                matches!(
                    v.state(),
                    Some(VolumeState::Creating | VolumeState::Available | VolumeState::InUse)
                )
            })
            .find_map(|v| v.volume_id())
        {
            return Ok(id.to_string());
        }
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

    /// The instance and device a volume is attached to, if it is.
    async fn attachment(&self, region: &str, volume: &str) -> Result<Option<(String, String)>> {
        let out = self
            .ec2(region)
            .describe_volumes()
            .volume_ids(volume)
            .send()
            .await
            .map_err(ec2_err(self, "DescribeVolumes", region))?;
        Ok(out
            .volumes()
            .iter()
            .flat_map(|v| v.attachments())
            .filter(|a| {
                !matches!(
                    a.state(),
                    Some(VolumeAttachmentState::Detached | VolumeAttachmentState::Detaching)
                )
            })
            .find_map(|a| Some((a.instance_id()?.to_string(), a.device()?.to_string()))))
    }

    /// Attach, unless an earlier run of this migration already did.
    pub(super) async fn attach(
        &self,
        region: &str,
        volume: &str,
        instance: &str,
        device: &str,
    ) -> Result<()> {
        match self.attachment(region, volume).await? {
            Some((i, d)) if i == instance && d == device => {}
            Some((i, d)) => {
                return Err(Error::InvalidInput(format!(
                    "{volume} is attached to {i} at {d}, not to {instance} at {device}"
                )))
            }
            None => {
                self.ec2(region)
                    .attach_volume()
                    .volume_id(volume)
                    .instance_id(instance)
                    .device(device)
                    .send()
                    .await
                    .map_err(ec2_err(self, "AttachVolume", region))?;
            }
        }
        self.ec2(region)
            .wait_until_volume_in_use()
            .volume_ids(volume)
            .wait(WAIT)
            .await
            .map(|_| ())
            .map_err(|e| transfer_err("wait for an attachment", region, e))
    }

    /// Detach wherever it is attached (nothing to do when it is not), and wait.
    pub(super) async fn detach(&self, region: &str, volume: &str, force: bool) -> Result<()> {
        if let Some((instance, device)) = self.attachment(region, volume).await? {
            self.ec2(region)
                .detach_volume()
                .volume_id(volume)
                .instance_id(instance)
                .device(device)
                .force(force)
                .send()
                .await
                .map_err(ec2_err(self, "DetachVolume", region))?;
        }
        self.ec2(region)
            .wait_until_volume_available()
            .volume_ids(volume)
            .wait(WAIT)
            .await
            .map(|_| ())
            .map_err(|e| transfer_err("wait for a detachment", region, e))
    }

    pub(super) async fn run_script(
        &self,
        region: &str,
        instance: &str,
        migration_id: &str,
        body: &str,
    ) -> Result<Report> {
        run_script(&self.ssm(region), region, instance, migration_id, body).await
    }

    /// Remove what a helper migration made, but the registered image and its
    /// snapshot; with `keep_temp`, only the helper amitool launched (the
    /// volumes and the snapshot stay, in the journal for `--cleanup`).
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
        for slot in [&mut journal.source_volume, &mut journal.target_volume] {
            let Some(vol) = slot.clone().filter(|_| !keep_temp) else {
                continue;
            };
            // Terminating the helper detaches it too; a volume that cannot
            // be removed stays in the journal for --cleanup.
            let _ = self.detach(&region, &vol, true).await;
            if self
                .ec2(&region)
                .delete_volume()
                .volume_id(&vol)
                .send()
                .await
                .is_ok()
            {
                removed.push(vol);
                *slot = None;
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

/// Run the rendered script through AWS-RunShellScript and read its report.
/// SendCommand is retried while SSM does not know the instance yet, and
/// GetCommandInvocation while the invocation does not exist yet.
pub(crate) async fn run_script(
    ssm: &aws_sdk_ssm::Client,
    region: &str,
    instance: &str,
    migration_id: &str,
    body: &str,
) -> Result<Report> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let file = format!("/tmp/amitool-{migration_id}.sh");
    let command = format!("echo {b64} | base64 -d > {file} && bash {file}");
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
                if crate::backend::aws::error::code(&e) == Some("InvalidInstanceId")
                    && started.elapsed() < WAIT =>
            {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Err(e) => {
                return Err(crate::backend::aws::error::convert(
                    "SendCommand",
                    region,
                    None,
                    e,
                ))
            }
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
            Err(e) if crate::backend::aws::error::code(&e) == Some("InvocationDoesNotExist") => {}
            Err(e) => {
                return Err(crate::backend::aws::error::convert(
                    "GetCommandInvocation",
                    region,
                    None,
                    e,
                ))
            }
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

#[cfg(test)]
mod tests {
    //! SSM failures LocalStack cannot produce, with aws-smithy-mocks.
    use super::*;
    use aws_sdk_ssm::error::ErrorMetadata;
    use aws_sdk_ssm::operation::get_command_invocation::{
        GetCommandInvocationError, GetCommandInvocationOutput,
    };
    use aws_sdk_ssm::operation::send_command::SendCommandOutput;
    use aws_sdk_ssm::types::error::InvocationDoesNotExist;
    use aws_sdk_ssm::types::{Command, CommandInvocationStatus};
    use aws_sdk_ssm::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn sent() -> aws_smithy_mocks::Rule {
        mock!(Client::send_command).then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id("c-1").build())
                .build()
        })
    }

    fn not_yet() -> GetCommandInvocationError {
        GetCommandInvocationError::InvocationDoesNotExist(
            InvocationDoesNotExist::builder()
                .meta(
                    ErrorMetadata::builder()
                        .code("InvocationDoesNotExist")
                        .build(),
                )
                .build(),
        )
    }

    fn invocation(
        status: CommandInvocationStatus,
        stdout: &str,
        stderr: &str,
    ) -> GetCommandInvocationOutput {
        GetCommandInvocationOutput::builder()
            .status(status)
            .standard_output_content(stdout)
            .standard_error_content(stderr)
            .build()
    }

    #[tokio::test]
    async fn waits_through_invocation_does_not_exist_and_reads_a_refusal() {
        let send = sent();
        let get = mock!(Client::get_command_invocation)
            .sequence()
            .error(not_yet)
            .output(|| invocation(CommandInvocationStatus::InProgress, "", ""))
            .output(|| {
                invocation(
                    CommandInvocationStatus::Failed,
                    "amitool: refused\n{\"migration_id\":\"mig-0123456789ab\",\"mode\":\"convert\",\"ok\":false,\"reason\":\"target device /dev/sdg has 1 bytes\"}\n",
                    "",
                )
            })
            .build();
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&send, &get]);
        let r = run_script(
            &ssm,
            "us-east-1",
            "i-0123456789abcdef0",
            "mig-0123456789ab",
            "#!/bin/bash\n",
        )
        .await
        .unwrap();
        assert!(!r.ok);
        assert_eq!(
            r.reason.as_deref(),
            Some("target device /dev/sdg has 1 bytes")
        );
        assert_eq!(get.num_calls(), 3);
    }

    #[tokio::test]
    async fn a_failed_command_without_report_is_a_clear_error() {
        let send = sent();
        let get = mock!(Client::get_command_invocation).then_output(|| {
            invocation(
                CommandInvocationStatus::Failed,
                "",
                "bash: line 1: base64: command not found\n",
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&send, &get]);
        let e = run_script(
            &ssm,
            "us-east-1",
            "i-0123456789abcdef0",
            "mig-0123456789ab",
            "#!/bin/bash\n",
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "run the preparation script in us-east-1: status Failed, no report; stderr: bash: line 1: base64: command not found"
        );
    }
}
