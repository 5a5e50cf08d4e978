//! `migrate --rollback`: the cut-over undone, each step checked first.

use aws_sdk_ec2::client::Waiters;

use super::WAIT;
use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::migrate::cutover::Rollback;
use crate::migrate::Journal;

impl AwsBackend {
    /// `--rollback`: the replacement stopped (never terminated), the Elastic
    /// IP back on the source, the source started. Each step checks first,
    /// so a second rollback changes nothing.
    pub(super) async fn run_roll_back(&self, journal: &mut Journal) -> Result<Rollback> {
        let region = journal.region.clone();
        let source = journal.source_id.clone();
        let mid = journal.migration_id.clone();
        let mut r = journal.replace.clone().ok_or_else(|| {
            Error::refused(
                &mid,
                format!("{mid} did not replace an instance (no --replace)"),
            )
        })?;
        let replacement = r.replacement.clone().ok_or_else(|| {
            Error::refused(
                &mid,
                format!("{mid} launched no replacement: nothing to roll back"),
            )
        })?;
        let mut steps = vec![];
        let state = self.instance_state(&region, &replacement).await?;
        if state != "stopped" && state != "terminated" {
            self.stop_and_wait(&region, &replacement).await?;
            steps.push(format!("stopped the replacement {replacement}"));
        }
        // Moved data volumes go back to the source, at their devices.
        for n in 0..r.volumes.len() {
            if !r.volumes[n].moved {
                continue;
            }
            let v = r.volumes[n].clone();
            self.move_volume(&region, &v, &replacement, &source).await?;
            r.volumes[n].moved = false;
            journal.replace = Some(r.clone());
            journal.save()?;
            steps.push(format!(
                "moved {} back to {source} at {}",
                v.volume_id, v.device
            ));
        }
        if let (Some(a), true) = (r.allocation_id.clone(), r.eip_moved) {
            self.move_address(&region, &a, &source).await?;
            r.eip_moved = false;
            journal.replace = Some(r.clone());
            journal.save()?;
            steps.push(format!(
                "moved {} back to {source}",
                r.elastic_ip.as_deref().unwrap_or(&a)
            ));
        }
        let src_state = self.instance_state(&region, &source).await?;
        if src_state == "stopped" {
            self.start_and_wait(&region, &source).await?;
            steps.push(format!("started the source {source}"));
        } else if src_state == "stopping" {
            self.ec2(&region)
                .wait_until_instance_stopped()
                .instance_ids(&source)
                .wait(WAIT)
                .await
                .map_err(|e| transfer_err("wait for the source to stop", &region, e))?;
            self.start_and_wait(&region, &source).await?;
            steps.push(format!("started the source {source}"));
        }
        r.rolled_back = true;
        journal.replace = Some(r.clone());
        journal.save()?;
        let on = match &r.allocation_id {
            Some(_) => self
                .source_facts(&region, &source)
                .await
                .ok()
                .and_then(|f| f.elastic_ip.map(|_| source.clone())),
            None => None,
        };
        Ok(Rollback {
            migration_id: mid,
            source_state: self.instance_state(&region, &source).await?,
            replacement_state: self.instance_state(&region, &replacement).await?,
            source_instance_id: source,
            replacement_instance_id: replacement,
            elastic_ip: r.elastic_ip.clone(),
            elastic_ip_on: on,
            steps,
        })
    }
}
