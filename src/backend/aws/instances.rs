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
        let missing = || Error::InvalidInput(format!("no such instance {instance_id} in {region}"));
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
            .ok_or_else(|| Error::InvalidInput(format!("{instance_id} has no EBS root volume")))?;
        Ok((
            volume.to_string(),
            inst.image_id().unwrap_or_default().to_string(),
        ))
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
