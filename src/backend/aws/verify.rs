//! `migrate --verify` on AWS: launch the new image on a small HVM type, read
//! GetConsoleOutput until the kernel reaches userspace or a timeout, and
//! terminate the instance whatever happened.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{InstanceType, ResourceType};
use base64::Engine;

use crate::backend::aws::images::tag_spec;
use crate::backend::aws::AwsBackend;
use crate::error::Result;
use crate::migrate::MIGRATION_TAG;

/// What a verification boot saw.
#[derive(Debug, Clone)]
pub struct BootCheck {
    pub instance_id: String,
    pub instance_type: &'static str,
    pub reached: bool,
    pub seconds: f64,
    pub last_line: String,
}

impl AwsBackend {
    pub async fn verify_boot(
        &self,
        region: &str,
        image_id: &str,
        ena: bool,
        expect: &str,
        timeout: Duration,
        migration_id: &str,
    ) -> Result<BootCheck> {
        // Nitro types need ENA; without it, a Xen HVM type.
        let instance_type = if ena { "t3.micro" } else { "t2.micro" };
        let mut tags = BTreeMap::new();
        tags.insert(MIGRATION_TAG.to_string(), migration_id.to_string());
        tags.insert("Name".to_string(), format!("amitool verify {migration_id}"));
        let ec2 = self.ec2(region);
        let out = ec2
            .run_instances()
            .image_id(image_id)
            .instance_type(InstanceType::from(instance_type))
            .min_count(1)
            .max_count(1)
            .tag_specifications(tag_spec(ResourceType::Instance, &tags))
            .send()
            .await
            .map_err(|e| self.err("RunInstances", region, e))?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| crate::error::Error::missing("RunInstances", region, "instance id"))?
            .to_string();
        let watched = self.watch_console(region, &id, expect, timeout).await;
        let terminated = ec2.terminate_instances().instance_ids(&id).send().await;
        let (reached, seconds, last_line) = watched?;
        terminated.map_err(|e| self.err("TerminateInstances", region, e))?;
        Ok(BootCheck {
            instance_id: id,
            instance_type,
            reached,
            seconds,
            last_line,
        })
    }

    async fn watch_console(
        &self,
        region: &str,
        id: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<(bool, f64, String)> {
        let ec2 = self.ec2(region);
        let start = Instant::now();
        ec2.wait_until_instance_running()
            .instance_ids(id)
            .wait(timeout.max(Duration::from_secs(1)))
            .await
            .map_err(|e| {
                crate::backend::aws::transfer::transfer_err(
                    "wait for the verification instance",
                    region,
                    e,
                )
            })?;
        let mut last = String::new();
        loop {
            let out = ec2
                .get_console_output()
                .instance_id(id)
                .latest(true)
                .send()
                .await
                .map_err(|e| self.err("GetConsoleOutput", region, e))?;
            let text = out
                .output()
                .and_then(|o| base64::engine::general_purpose::STANDARD.decode(o).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&last)
                .to_string();
            if text.contains(expect) {
                return Ok((true, start.elapsed().as_secs_f64(), last));
            }
            if start.elapsed() >= timeout {
                return Ok((false, start.elapsed().as_secs_f64(), last));
            }
            tokio::time::sleep(Duration::from_secs(2).min(timeout)).await;
        }
    }
}

#[async_trait::async_trait]
impl crate::migrate::verify::BootCheck for AwsBackend {
    async fn boot(
        &self,
        region: &str,
        image_id: &str,
        expect: &str,
        timeout: Duration,
        migration_id: &str,
    ) -> Result<crate::migrate::verify::Booted> {
        let ena = self
            .describe_raw(region, image_id)
            .await?
            .ena_support()
            .unwrap_or(false);
        let _waiting = crate::progress::Waiting::new(
            &format!("{expect:?} on the console of a new instance of {image_id}"),
            timeout,
        );
        let check = self
            .verify_boot(region, image_id, ena, expect, timeout, migration_id)
            .await?;
        Ok(crate::migrate::verify::Booted {
            reached: check.reached,
            detail: if check.reached {
                format!(
                    "{} on {} printed {expect:?}; terminated",
                    check.instance_id, check.instance_type
                )
            } else {
                format!(
                    "{image_id} did not print {expect:?} on {}'s console within {:.0} s (last line: {:?}); the image stays registered",
                    check.instance_type, check.seconds, check.last_line
                )
            },
        })
    }
}
