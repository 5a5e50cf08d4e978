//! The cut-over as the capability the CLI reaches (`Backend::cut_over`).

use crate::backend::aws::AwsBackend;
use crate::error::Result;
use crate::migrate::cutover::{ReplacePreview, Replacement, Rollback};
use crate::migrate::{Journal, Recorder};

#[async_trait::async_trait]
impl crate::migrate::cutover::CutOver for AwsBackend {
    async fn instance_of(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<(String, Option<String>)> {
        let inst = self.describe_instance(region, instance_id).await?;
        Ok((
            inst.instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            inst.image_id().map(String::from),
        ))
    }

    async fn cut_over(
        &self,
        journal: &mut Journal,
        image_id: &str,
        rec: &mut Recorder,
    ) -> Result<Replacement> {
        self.run_cut_over(journal, image_id, rec).await
    }

    async fn sync_data_volumes(&self, journal: &mut Journal, rec: &mut Recorder) -> Result<()> {
        self.run_sync_data(journal, rec).await
    }

    async fn roll_back(&self, journal: &mut Journal) -> Result<Rollback> {
        self.run_roll_back(journal).await
    }

    async fn preview(
        &self,
        region: &str,
        instance_id: &str,
        instance_type: &str,
        reasons: Vec<String>,
        stops_source: bool,
    ) -> Result<ReplacePreview> {
        let facts = self.source_facts(region, instance_id).await?;
        let image = facts
            .instance
            .image_id()
            .ok_or_else(|| {
                crate::error::Error::missing(
                    "DescribeInstances",
                    region,
                    &format!("image id of {instance_id}"),
                )
            })?
            .to_string();
        let checks = self
            .replace_dry_run(region, &facts, &image, instance_type)
            .await;
        Ok(ReplacePreview {
            source_instance_id: instance_id.to_string(),
            instance_type: instance_type.to_string(),
            reasons,
            subnet_id: facts.instance.subnet_id().map(String::from),
            security_groups: facts
                .instance
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(String::from))
                .collect(),
            key_name: facts.instance.key_name().map(String::from),
            volumes: facts.volumes.clone(),
            elastic_ip: facts.elastic_ip.clone(),
            stops_source,
            checks,
        })
    }
}
