//! Instances as a migration needs them: one described (a missing id said as
//! "no such instance"), its root volume, and a stop or start waited for.

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::Instance;

use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};

/// How long a stop or a start may take.
const WAIT: std::time::Duration = std::time::Duration::from_secs(900);

/// An instance's state name (`running`, `stopped`, ...).
pub(crate) fn state_name(inst: &Instance) -> String {
    inst.state()
        .and_then(|s| s.name())
        .map_or_else(|| "unknown".to_string(), |n| n.as_str().to_string())
}

impl AwsBackend {
    /// One instance, as DescribeInstances tells it.
    pub(crate) async fn describe_instance(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<Instance> {
        let missing = || Error::not_found("instance", instance_id, region);
        let out = self
            .ec2(region)
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| {
                if super::error::code(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) {
                    return missing();
                }
                self.err("DescribeInstances", region, e)
            })?;
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .cloned()
            .ok_or_else(missing)
    }

    /// The root volume and image of an instance.
    pub(crate) async fn instance_root(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<(String, String)> {
        let inst = self.describe_instance(region, instance_id).await?;
        let root = inst.root_device_name().unwrap_or("/dev/sda1");
        let volume = inst
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(root))
            .and_then(|m| m.ebs())
            .and_then(|e| e.volume_id())
            .ok_or_else(|| {
                Error::refused(instance_id, format!("{instance_id} has no EBS root volume"))
            })?;
        let image = inst.image_id().ok_or_else(|| {
            Error::missing(
                "DescribeInstances",
                region,
                &format!("image id of {instance_id}"),
            )
        })?;
        Ok((volume.to_string(), image.to_string()))
    }

    /// StopInstances (never terminate), waited for.
    pub(crate) async fn stop_and_wait(&self, region: &str, instance_id: &str) -> Result<()> {
        self.ec2(region)
            .stop_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.err("StopInstances", region, e))?;
        self.ec2(region)
            .wait_until_instance_stopped()
            .instance_ids(instance_id)
            .wait(WAIT)
            .await
            .map(|_| ())
            .map_err(|e| transfer_err("wait for the source instance to stop", region, e))
    }

    /// StartInstances, waited for.
    pub(crate) async fn start_and_wait(&self, region: &str, instance_id: &str) -> Result<()> {
        self.ec2(region)
            .start_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.err("StartInstances", region, e))?;
        self.ec2(region)
            .wait_until_instance_running()
            .instance_ids(instance_id)
            .wait(WAIT)
            .await
            .map(|_| ())
            .map_err(|e| transfer_err("wait for the source instance to run again", region, e))
    }
}

fn filter(name: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .values(value)
        .build()
}

impl AwsBackend {
    /// `amitool instances` in one region: DescribeInstances (paginated),
    /// their volumes (DescribeVolumes), Elastic IPs (DescribeAddresses) and
    /// the instance-store count of each type (DescribeInstanceTypes).
    pub(crate) async fn list_instances(
        &self,
        region: &str,
        state: Option<&str>,
        virt: Option<crate::model::Virtualization>,
    ) -> Result<Vec<crate::model::InstanceInfo>> {
        use crate::model::{InstanceInfo, InstanceVolume};
        let ec2 = self.ec2(region);
        let mut req = ec2.describe_instances();
        if let Some(s) = state {
            req = req.filters(filter("instance-state-name", s));
        }
        // The virtualization is filtered here: EC2's `virtualization-type`
        // filter is not in every implementation of the API (moto has none).
        let mut pages = req.into_paginator().send();
        let mut found: Vec<Instance> = vec![];
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstances", region, e))?;
            found.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter(|i| {
                        virt.is_none_or(|v| {
                            i.virtualization_type().map(|t| t.as_str()) == Some(v.as_str())
                        })
                    })
                    .cloned(),
            );
        }
        if found.is_empty() {
            return Ok(vec![]);
        }
        let volume_ids: Vec<String> = found
            .iter()
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(String::from))
            .collect();
        let mut volumes = std::collections::HashMap::new();
        for chunk in volume_ids.chunks(200) {
            let out = ec2
                .describe_volumes()
                .set_volume_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("DescribeVolumes", region, e))?;
            for v in out.volumes() {
                if let Some(id) = v.volume_id() {
                    volumes.insert(
                        id.to_string(),
                        (
                            v.size().map(i64::from),
                            v.volume_type().map(|t| t.as_str().to_string()),
                        ),
                    );
                }
            }
        }
        let addresses = ec2
            .describe_addresses()
            .send()
            .await
            .map_err(|e| self.err("DescribeAddresses", region, e))?;
        let eip = |id: &str| {
            addresses
                .addresses()
                .iter()
                .find(|a| a.instance_id() == Some(id))
                .and_then(|a| a.public_ip())
                .map(String::from)
        };
        let mut types: Vec<String> = found
            .iter()
            .filter_map(|i| i.instance_type().map(|t| t.as_str().to_string()))
            .collect();
        types.sort();
        types.dedup();
        let mut stores = std::collections::HashMap::new();
        for t in types {
            let q = crate::backend::InstanceTypeQuery {
                names: vec![t.clone()],
                ..Default::default()
            };
            // A type EC2 no longer describes (hs1) falls back to the built-in table.
            let described = crate::backend::Backend::describe_instance_types(self, region, &q)
                .await
                .ok()
                .and_then(|v| v.into_iter().next())
                .or_else(|| crate::catalog::compat().instance_type(&t).cloned());
            stores.insert(t, described.map(|d| d.instance_store));
        }
        // An instance EC2 describes without an id cannot be named: it is left out.
        Ok(found
            .iter()
            .filter(|i| i.instance_id().is_some())
            .map(|i| {
                let id = i.instance_id().unwrap_or("-").to_string();
                let itype = i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
                InstanceInfo {
                    region: region.to_string(),
                    name: i
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some("Name"))
                        .and_then(|t| t.value())
                        .map(String::from),
                    state: state_name(i),
                    virtualization_type: i.virtualization_type().map(|v| match v.as_str() {
                        "paravirtual" => crate::model::Virtualization::Paravirtual,
                        _ => crate::model::Virtualization::Hvm,
                    }),
                    image_id: i.image_id().map(String::from),
                    kernel_id: i.kernel_id().map(String::from),
                    root_device_type: i.root_device_type().map(|t| t.as_str().to_string()),
                    root_device_name: i.root_device_name().map(String::from),
                    volumes: i
                        .block_device_mappings()
                        .iter()
                        .filter_map(|m| {
                            let ebs = m.ebs()?;
                            let vid = ebs.volume_id()?.to_string();
                            let (size, vtype) = volumes.get(&vid).cloned().unwrap_or((None, None));
                            Some(InstanceVolume {
                                device: m.device_name().unwrap_or_default().to_string(),
                                volume_id: vid,
                                size_gib: size,
                                volume_type: vtype,
                                delete_on_termination: ebs.delete_on_termination(),
                            })
                        })
                        .collect(),
                    instance_store: stores.get(&itype).copied().flatten(),
                    public_ip: i.public_ip_address().map(String::from),
                    elastic_ip: eip(&id),
                    subnet_id: i.subnet_id().map(String::from),
                    security_groups: i
                        .security_groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(String::from))
                        .collect(),
                    retired_family: crate::catalog::compat().is_pv_family(&itype),
                    successor_type: None,
                    successor_reasons: vec![],
                    instance_type: itype,
                    instance_id: id,
                }
            })
            .collect())
    }
}
