//! `migrate --instance I --replace` on AWS: the replacement launched from
//! the new HVM image with the source's network identity, data volumes and
//! tags, the Elastic IP moved, the source stopped (never terminated) and
//! tagged; and `--rollback`. Every step is journaled and looked up before
//! it is redone, so a killed run resumes with exactly one replacement.

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, Tag};

use crate::backend::aws::instances::state_name;
use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::migrate::cutover::{DataVolume, Replace, Replacement};
use crate::migrate::{Journal, Recorder, MIGRATION_TAG};

mod capability;
mod request;
mod rollback;
mod volumes;

const WAIT: std::time::Duration = std::time::Duration::from_secs(900);
pub const ROLE_TAG: &str = "amitool:role";
pub const REPLACEMENT_TAG: &str = "amitool:replacement";

pub(super) fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Keep the cut-over's state in the journal.
fn save(journal: &mut Journal, r: &Replace) -> Result<()> {
    journal.replace = Some(r.clone());
    journal.save()
}

/// What of the source the replacement keeps.
pub struct SourceFacts {
    pub instance_id: String,
    pub instance: Instance,
    pub user_data: Option<String>,
    pub volumes: Vec<DataVolume>,
    pub allocation_id: Option<String>,
    pub elastic_ip: Option<String>,
}

impl AwsBackend {
    /// The source instance, its user data, non-root EBS volumes and Elastic IP.
    pub(super) async fn source_facts(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<SourceFacts> {
        let ec2 = self.ec2(region);
        let instance = self.describe_instance(region, instance_id).await?;
        let user_data = ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| self.err("DescribeInstanceAttribute", region, e))?
            .user_data()
            .and_then(|u| u.value())
            .filter(|v| !v.is_empty())
            .map(String::from);
        let root = instance
            .root_device_name()
            .unwrap_or("/dev/sda1")
            .to_string();
        let mut volumes = vec![];
        for m in instance.block_device_mappings() {
            let (Some(dev), Some(ebs)) = (m.device_name(), m.ebs()) else {
                continue;
            };
            if dev == root {
                continue;
            }
            let Some(vid) = ebs.volume_id() else { continue };
            let v = ec2
                .describe_volumes()
                .volume_ids(vid)
                .send()
                .await
                .map_err(|e| self.err("DescribeVolumes", region, e))?;
            let v = v.volumes().first().ok_or_else(|| {
                Error::missing(
                    "DescribeVolumes",
                    region,
                    &format!("volume {vid} of {instance_id}"),
                )
            })?;
            volumes.push(DataVolume {
                device: dev.to_string(),
                volume_id: vid.to_string(),
                size_gib: v.size().unwrap_or(1),
                volume_type: v.volume_type().map(|t| t.as_str().to_string()),
                iops: v.iops(),
                throughput: v.throughput(),
                delete_on_termination: ebs.delete_on_termination().unwrap_or(false),
                snapshot_id: None,
                moved: false,
            });
        }
        let addresses = ec2
            .describe_addresses()
            .filters(filter("instance-id", instance_id))
            .send()
            .await
            .map_err(|e| self.err("DescribeAddresses", region, e))?;
        let address = addresses.addresses().first();
        Ok(SourceFacts {
            instance_id: instance_id.to_string(),
            user_data,
            volumes,
            allocation_id: address.and_then(|a| a.allocation_id()).map(String::from),
            elastic_ip: address.and_then(|a| a.public_ip()).map(String::from),
            instance,
        })
    }

    /// The replacement this migration launched earlier, if it is still there.
    async fn existing_replacement(&self, region: &str, mid: &str) -> Result<Option<String>> {
        let out = self
            .ec2(region)
            .describe_instances()
            .filters(filter(&format!("tag:{MIGRATION_TAG}"), mid))
            .filters(filter(&format!("tag:{ROLE_TAG}"), "replacement"))
            .send()
            .await
            .map_err(|e| self.err("DescribeInstances", region, e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| {
                !matches!(
                    i.state().and_then(|s| s.name()),
                    Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
                )
            })
            .and_then(|i| i.instance_id())
            .map(String::from))
    }

    async fn instance_state(&self, region: &str, id: &str) -> Result<String> {
        Ok(state_name(&self.describe_instance(region, id).await?))
    }

    async fn move_address(&self, region: &str, allocation_id: &str, to: &str) -> Result<()> {
        self.ec2(region)
            .associate_address()
            .allocation_id(allocation_id)
            .instance_id(to)
            .allow_reassociation(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("AssociateAddress", region, e))
    }

    /// The cut-over, after the image is registered: every step journaled.
    async fn run_cut_over(
        &self,
        journal: &mut Journal,
        image_id: &str,
        rec: &mut Recorder,
    ) -> Result<Replacement> {
        let region = journal.region.clone();
        let source = journal.source_id.clone();
        let mid = journal.migration_id.clone();
        let mut r: Replace = journal
            .replace
            .clone()
            .ok_or_else(|| Error::refused(&mid, format!("{mid} was not asked to --replace")))?;
        let instance_type = r.instance_type.clone().ok_or_else(|| {
            Error::refused(&mid, format!("{mid}: no replacement type was chosen"))
        })?;
        let facts = self.source_facts(&region, &source).await?;
        if r.allocation_id.is_none() && !r.eip_moved {
            r.allocation_id = facts.allocation_id.clone();
            r.elastic_ip = facts.elastic_ip.clone();
        }
        if r.volumes.is_empty() {
            r.volumes = facts.volumes.clone();
        }
        save(journal, &r)?;
        if !r.options.keep_source_running && r.replacement.is_none() {
            self.stop_for_copy(journal, &mut r, &facts, rec).await?;
        }
        if !r.volumes_copied && !r.options.move_data_volumes {
            self.copy_data_volumes(journal, &mut r, rec).await?;
        }
        let replacement = self
            .launch(journal, &mut r, &facts, image_id, &instance_type, rec)
            .await?;
        if r.options.move_data_volumes && !r.volumes_copied {
            self.move_data_volumes(journal, &mut r, &replacement, rec)
                .await?;
        }
        self.hand_over(journal, &mut r, &replacement, rec).await?;
        self.report(&region, &source, &replacement, instance_type, &r)
            .await
    }

    /// The source stops before its data volumes are copied (never terminated).
    async fn stop_for_copy(
        &self,
        journal: &mut Journal,
        r: &mut Replace,
        facts: &SourceFacts,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (region, source) = (journal.region.clone(), journal.source_id.clone());
        let state = state_name(&facts.instance);
        if state == "running" || state == "pending" {
            self.stop_and_wait(&region, &source).await?;
            r.stopped_source = true;
            save(journal, r)?;
            rec.done(
                crate::migrate::StepName::StopSource,
                format!("{source} stopped (it is never terminated)"),
            );
        } else if state != "stopped" {
            self.ec2(&region)
                .wait_until_instance_stopped()
                .instance_ids(&source)
                .wait(WAIT)
                .await
                .map_err(|e| transfer_err("wait for the source to stop", &region, e))?;
        }
        Ok(())
    }

    /// The replacement, exactly one: the journal's, else one found by its
    /// tags, else RunInstances (with a client token); waited until running.
    async fn launch(
        &self,
        journal: &mut Journal,
        r: &mut Replace,
        facts: &SourceFacts,
        image_id: &str,
        instance_type: &str,
        rec: &mut Recorder,
    ) -> Result<String> {
        let (region, mid) = (journal.region.clone(), journal.migration_id.clone());
        let replacement = match r.replacement.clone() {
            Some(id) => id,
            None => {
                let id = match self.existing_replacement(&region, &mid).await? {
                    Some(id) => id,
                    None => self
                        .run_request(
                            &region,
                            facts,
                            image_id,
                            instance_type,
                            // Moved volumes are attached once it runs.
                            if r.options.move_data_volumes {
                                &[]
                            } else {
                                &r.volumes
                            },
                            Some(&mid),
                        )
                        .client_token(format!("{mid}-replace"))
                        .send()
                        .await
                        .map_err(|e| self.err("RunInstances", &region, e))?
                        .instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .map(String::from)
                        .ok_or_else(|| Error::missing("RunInstances", &region, "instance id"))?,
                };
                r.replacement = Some(id.clone());
                save(journal, r)?;
                id
            }
        };
        self.ec2(&region)
            .wait_until_instance_running()
            .instance_ids(&replacement)
            .wait(WAIT)
            .await
            .map_err(|e| transfer_err("wait for the replacement to run", &region, e))?;
        rec.done(
            crate::migrate::StepName::LaunchReplacement,
            format!("{replacement} ({instance_type}) from {image_id}"),
        );
        Ok(replacement)
    }

    /// The Elastic IP follows the replacement; the source says what replaced it.
    async fn hand_over(
        &self,
        journal: &mut Journal,
        r: &mut Replace,
        replacement: &str,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (region, source, mid) = (
            journal.region.clone(),
            journal.source_id.clone(),
            journal.migration_id.clone(),
        );
        if let (Some(a), false) = (r.allocation_id.clone(), r.eip_moved) {
            self.move_address(&region, &a, replacement).await?;
            r.eip_moved = true;
            save(journal, r)?;
            rec.done(
                crate::migrate::StepName::ElasticIp,
                format!(
                    "{} moved from {source} to {replacement}",
                    r.elastic_ip.as_deref().unwrap_or(&a)
                ),
            );
        }
        if !r.source_tagged {
            self.ec2(&region)
                .create_tags()
                .resources(&source)
                .tags(tag(REPLACEMENT_TAG, replacement))
                .tags(tag(MIGRATION_TAG, &mid))
                .send()
                .await
                .map_err(|e| self.err("CreateTags", &region, e))?;
            r.source_tagged = true;
        }
        r.done = true;
        save(journal, r)
    }

    /// What the cut-over made, as EC2 now describes it.
    async fn report(
        &self,
        region: &str,
        source: &str,
        replacement: &str,
        instance_type: String,
        r: &Replace,
    ) -> Result<Replacement> {
        let inst = self.describe_instance(region, replacement).await?;
        let volumes = inst
            .block_device_mappings()
            .iter()
            .filter(|m| m.device_name() != inst.root_device_name())
            .filter_map(|m| {
                Some((
                    m.device_name()?.to_string(),
                    m.ebs()?.volume_id()?.to_string(),
                ))
            })
            .collect();
        Ok(Replacement {
            instance_id: replacement.to_string(),
            instance_type,
            reasons: r.reasons.clone(),
            subnet_id: inst.subnet_id().map(String::from),
            security_groups: inst
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(String::from))
                .collect(),
            volumes,
            elastic_ip: r.elastic_ip.clone(),
            source_state: self.instance_state(region, source).await?,
        })
    }
}
