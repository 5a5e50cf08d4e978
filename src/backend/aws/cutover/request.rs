//! The replacement's RunInstances request, made once for the launch and
//! for the dry run, and the dry run's DryRun=true calls.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, IamInstanceProfileSpecification, Placement, ResourceType,
    Tag, TagSpecification, Tenancy, VolumeType,
};

use super::{tag, SourceFacts, ROLE_TAG};
use crate::backend::aws::AwsBackend;
use crate::migrate::cutover::DataVolume;
use crate::migrate::MIGRATION_TAG;

impl AwsBackend {
    /// The RunInstances request of the replacement that migration `mid`
    /// launches; without one, EC2's DryRun of it (tagged "dry-run").
    pub(super) fn run_request(
        &self,
        region: &str,
        facts: &SourceFacts,
        image_id: &str,
        instance_type: &str,
        volumes: &[DataVolume],
        mid: Option<&str>,
    ) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
        let src = &facts.instance;
        let mut req = self
            .ec2(region)
            .run_instances()
            .image_id(image_id)
            .instance_type(instance_type.into())
            .min_count(1)
            .max_count(1)
            .dry_run(mid.is_none());
        if let Some(s) = src.subnet_id() {
            req = req.subnet_id(s);
        }
        for g in src.security_groups() {
            if let Some(id) = g.group_id() {
                req = req.security_group_ids(id);
            }
        }
        if let Some(k) = src.key_name() {
            req = req.key_name(k);
        }
        if let Some(arn) = src.iam_instance_profile().and_then(|p| p.arn()) {
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(arn).build());
        }
        if let Some(u) = &facts.user_data {
            req = req.user_data(u);
        }
        let monitored = src
            .monitoring()
            .and_then(|m| m.state())
            .is_some_and(|s| s.as_str() == "enabled");
        req = req.monitoring(
            aws_sdk_ec2::types::RunInstancesMonitoringEnabled::builder()
                .enabled(monitored)
                .build(),
        );
        if let Some(p) = src.placement() {
            let mut placement = Placement::builder();
            if let Some(z) = p.availability_zone() {
                placement = placement.availability_zone(z);
            }
            if let Some(t) = p.tenancy() {
                placement = placement.tenancy(Tenancy::from(t.as_str()));
            }
            req = req.placement(placement.build());
        }
        for v in volumes {
            let mut ebs = EbsBlockDevice::builder()
                .volume_size(v.size_gib)
                .delete_on_termination(v.delete_on_termination);
            if let Some(s) = &v.snapshot_id {
                ebs = ebs.snapshot_id(s);
            }
            if let Some(t) = &v.volume_type {
                ebs = ebs.volume_type(VolumeType::from(t.as_str()));
                // IOPS and throughput are given only where the type takes them.
                if matches!(t.as_str(), "io1" | "io2" | "gp3") {
                    if let Some(i) = v.iops {
                        ebs = ebs.iops(i);
                    }
                }
                if t == "gp3" {
                    if let Some(th) = v.throughput {
                        ebs = ebs.throughput(th);
                    }
                }
            }
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&v.device)
                    .ebs(ebs.build())
                    .build(),
            );
        }
        let mut tags: Vec<Tag> = src
            .tags()
            .iter()
            .filter(|t| {
                t.key()
                    .is_some_and(|k| !k.starts_with("aws:") && !k.starts_with("amitool:"))
            })
            .cloned()
            .collect();
        tags.push(tag(MIGRATION_TAG, mid.unwrap_or("dry-run")));
        tags.push(tag(ROLE_TAG, "replacement"));
        tags.push(tag("amitool:source-instance", &facts.instance_id));
        for kind in [ResourceType::Instance, ResourceType::Volume] {
            req = req.tag_specifications(
                TagSpecification::builder()
                    .resource_type(kind)
                    .set_tags(Some(tags.clone()))
                    .build(),
            );
        }
        req
    }

    /// Ask EC2 with DryRun=true whether the replacement, its volumes and the
    /// address move would be accepted; each answer, in words.
    pub(super) async fn replace_dry_run(
        &self,
        region: &str,
        facts: &SourceFacts,
        image_id: &str,
        instance_type: &str,
    ) -> Vec<String> {
        let mut out = vec![];
        let said = |op: &str, r: std::result::Result<(), String>| match r {
            Ok(()) => format!("{op}: would succeed (DryRun)"),
            Err(e) => format!("{op}: {e}"),
        };
        let answer = |e: String| {
            if e.contains("DryRunOperation") {
                Ok(())
            } else {
                Err(e)
            }
        };
        let run = self
            .run_request(region, facts, image_id, instance_type, &facts.volumes, None)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| crate::error::chain(&e));
        out.push(said("RunInstances", run.or_else(answer)));
        if let Some(z) = facts
            .instance
            .placement()
            .and_then(|p| p.availability_zone())
        {
            for v in &facts.volumes {
                let r = self
                    .ec2(region)
                    .create_volume()
                    .availability_zone(z)
                    .size(v.size_gib)
                    .dry_run(true)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::error::chain(&e));
                out.push(said(
                    &format!("CreateVolume for {}", v.device),
                    r.or_else(answer),
                ));
            }
        }
        if let Some(a) = &facts.allocation_id {
            let r = self
                .ec2(region)
                .associate_address()
                .allocation_id(a)
                .instance_id(&facts.instance_id)
                .allow_reassociation(true)
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| crate::error::chain(&e));
            out.push(said("AssociateAddress", r.or_else(answer)));
        }
        out
    }
}
