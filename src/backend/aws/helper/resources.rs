//! The helper's resources: the instance, its volumes and attachments, and
//! their removal (the SSM command that runs the script is in ssm.rs).

use std::collections::BTreeMap;

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceType, ResourceType, VolumeAttachmentState,
    VolumeState, VolumeType,
};

use super::{ec2_err, HelperOptions, HELPER_AMI_PARAMETER, WAIT};
use crate::backend::aws::images::tag_spec;
use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::{filter, AwsBackend};
use crate::error::{Error, Result};
use crate::migrate::journal::Journal;
use crate::migrate::MIGRATION_TAG;

/// What a resource is to its migration (source / target volume, helper).
pub(super) const ROLE_TAG: &str = "amitool:role";

impl AwsBackend {
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
        let inst = self.helper_instance(region, &id).await?;
        if crate::backend::aws::instances::state_name(&inst) != "running" {
            return Err(Error::refused(&id, format!("helper {id} is not running")));
        }
        let zone = inst
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string();
        Ok((id, zone))
    }

    /// The RunInstances request of a helper from the latest Amazon Linux 2023.
    async fn helper_request(
        &self,
        region: &str,
        opts: &HelperOptions,
        migration_id: &str,
    ) -> Result<aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder> {
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
                Error::missing(
                    "GetParameter",
                    region,
                    &format!("value for {HELPER_AMI_PARAMETER}"),
                )
            })?;
        let mut tags = BTreeMap::new();
        tags.insert(MIGRATION_TAG.to_string(), migration_id.to_string());
        tags.insert(ROLE_TAG.to_string(), "helper".to_string());
        tags.insert("Name".to_string(), format!("amitool helper {migration_id}"));
        let mut req = self
            .ec2(region)
            .run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::from(opts.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .tag_specifications(tag_spec(ResourceType::Instance, &tags));
        if let Some(s) = &opts.subnet {
            req = req.subnet_id(s);
        }
        if let Some(p) = &opts.profile {
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        Ok(req)
    }

    /// The helper instance `id`, named as the helper when it does not exist.
    async fn helper_instance(
        &self,
        region: &str,
        id: &str,
    ) -> Result<aws_sdk_ec2::types::Instance> {
        self.describe_instance(region, id)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::not_found("helper instance", id, region),
                e => e,
            })
    }

    /// What can be known before any data moves: the helper given exists and
    /// runs; the one to launch has an instance profile (without one its SSM
    /// agent never registers), and EC2 would launch it as asked (RunInstances
    /// with DryRun=true: the subnet, the profile, the type, the permission).
    pub(super) async fn check_helper(
        &self,
        region: &str,
        opts: &HelperOptions,
        journal: &Journal,
    ) -> Result<()> {
        if journal.helper_instance.is_some() {
            return Ok(());
        }
        if let Some(id) = &opts.instance {
            let inst = self.helper_instance(region, id).await?;
            return match crate::backend::aws::instances::state_name(&inst).as_str() {
                "running" => Ok(()),
                other => Err(Error::refused(
                    id,
                    format!("helper {id} is {other}, not running"),
                )),
            };
        }
        if opts.profile.is_none() {
            return Err(Error::InvalidInput(
                "a launched helper needs --helper-profile (an instance profile whose role lets the SSM agent register, e.g. with AmazonSSMManagedInstanceCore), or pass --helper-instance".into(),
            ));
        }
        if let Some(subnet) = &opts.subnet {
            let known = self
                .ec2(region)
                .describe_subnets()
                .subnet_ids(subnet)
                .send()
                .await;
            match known {
                Ok(out) if !out.subnets().is_empty() => {}
                Ok(_) => {
                    return Err(Error::not_found(
                        "subnet",
                        format!("{subnet} (--helper-subnet)"),
                        region,
                    ))
                }
                Err(e)
                    if super::super::error::code(&e)
                        .is_some_and(|c| c.starts_with("InvalidSubnetID")) =>
                {
                    return Err(Error::not_found(
                        "subnet",
                        format!("{subnet} (--helper-subnet)"),
                        region,
                    ))
                }
                Err(e) => return Err(ec2_err(self, "DescribeSubnets", region)(e)),
            }
        }
        let req = self
            .helper_request(region, opts, &journal.migration_id)
            .await?
            .dry_run(true);
        match req.send().await {
            Ok(out) => {
                // An EC2 that ignored DryRun launched it: it goes again at once.
                let ids: Vec<String> = out
                    .instances()
                    .iter()
                    .filter_map(|i| i.instance_id().map(String::from))
                    .collect();
                if !ids.is_empty() {
                    let _ = self
                        .ec2(region)
                        .terminate_instances()
                        .set_instance_ids(Some(ids))
                        .send()
                        .await;
                }
                Ok(())
            }
            Err(e) => match super::super::error::code(&e) {
                Some("DryRunOperation") => Ok(()),
                Some(code) => Err(Error::refused(
                    "the helper",
                    format!(
                        "EC2 would not launch the helper ({code}): {}",
                        e.as_service_error()
                            .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::message(s))
                            .unwrap_or("no message")
                    ),
                )),
                None => Err(ec2_err(self, "RunInstances", region)(e)),
            },
        }
    }

    /// Launch a helper from the latest Amazon Linux 2023 and wait until it runs.
    async fn launch_helper(
        &self,
        region: &str,
        opts: &HelperOptions,
        journal: &mut Journal,
    ) -> Result<String> {
        let req = self
            .helper_request(region, opts, &journal.migration_id)
            .await?
            .client_token(format!("{}-helper", journal.migration_id));
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
        let id = out
            .volume_id()
            .ok_or_else(|| Error::missing("CreateVolume", region, "volume id"))?
            .to_string();
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
                return Err(Error::Transfer {
                    action: "attach a volume to the helper",
                    region: region.to_string(),
                    message: format!(
                        "{volume} is attached to {i} at {d}, not to {instance} at {device}"
                    ),
                })
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

    /// Remove what a helper migration made for the copy (the helper if
    /// amitool launched it, the volumes, the copy's snapshot), never
    /// the source's temporary snapshot, the converted disk's snapshot or the
    /// registered image; with `keep_temp`, only the helper (the volumes and
    /// the snapshot stay, in the journal for `--cleanup`).
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
        // The copy's snapshot stays while its child (the result) is being
        // written, for a resume; once the child is complete, or was never
        // started, it goes (deleting a parent leaves its children whole).
        let child_pending = journal.upload.as_ref().is_some_and(|u| !u.completed);
        let copy = journal.copy_snapshot.clone().filter(|_| !child_pending);
        if let Some(snap) = copy.filter(|_| !keep_temp) {
            if self.delete_snapshot_quietly(&region, &snap).await.is_ok() {
                removed.push(snap);
                journal.copy_snapshot = None;
            }
        }
        let _ = journal.save();
        removed
    }
}
