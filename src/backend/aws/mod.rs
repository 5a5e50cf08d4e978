//! The AWS backend: EC2 through the SDK, against AWS or LocalStack.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, LocationType};

use crate::backend::{Backend, InstanceTypeQuery};
use crate::error::{Error, Result};
use crate::model::{Image, ImageFilter, InstanceType, Virtualization};

pub mod blocks;
pub mod budget;
pub mod client;
pub(crate) mod convert;
pub mod cutover;
pub mod dryrun;
pub mod error;
pub mod helper;
mod host;
pub mod images;
mod instances;
mod states;
pub mod stream;
pub mod transfer;
pub mod verify;

pub use client::ClientOptions;

pub struct AwsBackend {
    sdk: SdkConfig,
    clients: Mutex<HashMap<String, aws_sdk_ec2::Client>>,
}

pub(crate) fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

impl AwsBackend {
    pub async fn new(opts: &ClientOptions) -> Self {
        AwsBackend {
            sdk: client::load_sdk_config(opts).await,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut clients = self.clients.lock().expect("client cache poisoned");
        clients
            .entry(region.to_string())
            .or_insert_with(|| client::ec2_client(&self.sdk, region))
            .clone()
    }

    pub(crate) fn err<E, R>(
        &self,
        action: &'static str,
        region: &str,
        e: aws_sdk_ec2::error::SdkError<E, R>,
    ) -> Error
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        error::convert(action, region, self.sdk.endpoint_url(), e)
    }

    /// The region DescribeRegions is asked in.
    fn home_region(&self) -> String {
        self.default_region()
            .unwrap_or_else(|| "us-east-1".to_string())
    }

    async fn describe_regions(&self, all: bool) -> Result<Vec<String>> {
        let home = self.home_region();
        let out = self
            .ec2(&home)
            .describe_regions()
            .all_regions(all)
            .send()
            .await
            .map_err(|e| self.err("DescribeRegions", &home, e))?;
        let mut names: Vec<String> = out
            .regions()
            .iter()
            .filter_map(|r| r.region_name().map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[async_trait]
impl Backend for AwsBackend {
    async fn terminate_instances(
        &self,
        region: &str,
        instance_ids: &[String],
    ) -> Result<Vec<super::Terminated>> {
        let out = self
            .ec2(region)
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
            .map_err(|e| {
                if error::code(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) {
                    return Error::not_found("instance among", instance_ids.join(", "), region);
                }
                self.err("TerminateInstances", region, e)
            })?;
        let name = |s: Option<&aws_sdk_ec2::types::InstanceState>| {
            s.and_then(|s| s.name())
                .map_or("unknown".to_string(), |n| n.as_str().to_string())
        };
        Ok(out
            .terminating_instances()
            .iter()
            .filter_map(|c| Some((c, c.instance_id()?)))
            .map(|(c, id)| super::Terminated {
                region: region.to_string(),
                instance_id: id.to_string(),
                previous_state: name(c.previous_state()),
                state: name(c.current_state()),
            })
            .collect())
    }

    async fn image_disk(&self, region: &str, image_id: &str) -> Result<super::ImageDisk> {
        let raw = self.describe_raw(region, image_id).await?;
        let image = convert::image(region, &raw);
        let (snapshot, _) = AwsBackend::root_snapshot(&raw)?;
        let flavor = self.flavor_of(region, image.kernel_id.as_deref()).await;
        let disk = blocks::SnapshotSource::open(self.ebs(region), region, &snapshot).await?;
        Ok(super::ImageDisk {
            image,
            disk: std::sync::Arc::new(disk),
            flavor,
        })
    }

    async fn boot_drivers(
        &self,
        region: &str,
        image_id: &str,
    ) -> Result<Option<crate::image::inspect::Drivers>> {
        let raw = self.describe_raw(region, image_id).await?;
        Ok(raw
            .tags()
            .iter()
            .find(|t| t.key() == Some(crate::image::inspect::DRIVERS_TAG))
            .and_then(|t| t.value())
            .map(crate::image::inspect::Drivers::from_tag))
    }

    fn name(&self) -> &'static str {
        "aws"
    }

    fn default_region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    async fn enabled_regions(&self) -> Result<Vec<String>> {
        self.describe_regions(false).await
    }

    async fn region_exists(&self, region: &str) -> Result<bool> {
        Ok(self
            .describe_regions(true)
            .await?
            .iter()
            .any(|r| r == region))
    }

    async fn describe_images(&self, region: &str, f: &ImageFilter) -> Result<Vec<Image>> {
        let mut req = self
            .ec2(region)
            .describe_images()
            .include_deprecated(true)
            .set_image_ids((!f.image_ids.is_empty()).then(|| f.image_ids.clone()))
            .set_owners(f.owner.clone().map(|o| vec![o]));
        if let Some(v) = f.virtualization {
            req = req.filters(filter("virtualization-type", v.as_str()));
        }
        let server_side = [
            ("architecture", &f.architecture),
            ("name", &f.name),
            ("image-type", &f.image_type),
            ("kernel-id", &f.kernel_id),
        ];
        for (name, value) in server_side {
            if let Some(v) = value {
                req = req.filters(filter(name, v.clone()));
            }
        }
        let mut pages = req.into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            let image = item.map_err(|e| {
                let code = error::code(&e).unwrap_or_default().to_string();
                if code.starts_with("InvalidAMIID") && f.image_ids.len() == 1 {
                    return Error::ImageNotFound {
                        image_id: f.image_ids[0].clone(),
                        region: region.to_string(),
                    };
                }
                self.err("DescribeImages", region, e)
            })?;
            let image = convert::image(region, &image);
            // The server applied these; checking again keeps both backends' semantics equal.
            if f.matches(&image) {
                out.push(image);
            }
        }
        Ok(out)
    }

    async fn describe_instance_types(
        &self,
        region: &str,
        q: &InstanceTypeQuery,
    ) -> Result<Vec<InstanceType>> {
        let mut req = self
            .ec2(region)
            .describe_instance_types()
            .set_instance_types(
                (!q.names.is_empty()).then(|| q.names.iter().map(|n| n.as_str().into()).collect()),
            );
        if let Some(v) = q.virtualization {
            req = req.filters(filter("supported-virtualization-type", v.as_str()));
        }
        if let Some(a) = &q.architecture {
            req = req.filters(filter("processor-info.supported-architecture", a.clone()));
        }
        let mut pages = req.into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            let info = item.map_err(|e| {
                let code = error::code(&e).unwrap_or_default().to_string();
                if code == "InvalidInstanceType" {
                    // EC2 names the first unknown type in its message.
                    let message = e
                        .as_service_error()
                        .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::message(s))
                        .unwrap_or_default()
                        .to_string();
                    let bad = q
                        .names
                        .iter()
                        .find(|n| message.contains(n.as_str()))
                        .or(q.names.first());
                    return Error::UnknownInstanceType {
                        instance_type: bad.cloned().unwrap_or_default(),
                        region: region.to_string(),
                    };
                }
                self.err("DescribeInstanceTypes", region, e)
            })?;
            out.push(convert::instance_type(&info));
        }
        if let Some(missing) = q
            .names
            .iter()
            .find(|n| !out.iter().any(|t| &t.instance_type == *n))
        {
            return Err(Error::UnknownInstanceType {
                instance_type: missing.clone(),
                region: region.to_string(),
            });
        }
        Ok(out)
    }

    fn migration_host(&self) -> Option<&dyn crate::migrate::MigrationHost> {
        Some(self)
    }

    fn boot_check(&self) -> Option<&dyn crate::migrate::verify::BootCheck> {
        Some(self)
    }

    fn dry_run(&self) -> Option<&dyn crate::migrate::dryrun::ProviderDryRun> {
        Some(self)
    }

    fn cut_over(&self) -> Option<&dyn crate::migrate::cutover::CutOver> {
        Some(self)
    }

    fn fleet_engine(&self) -> Option<&dyn crate::fleet::FleetEngine> {
        Some(self)
    }

    async fn import_image(
        &self,
        region: &str,
        req: &crate::backend::ImportRequest,
    ) -> Result<Image> {
        self.import(region, req).await
    }

    async fn export_image(
        &self,
        region: &str,
        image_id: &str,
        out: &std::path::Path,
    ) -> Result<u64> {
        self.export(region, image_id, out).await
    }

    async fn describe_instances(
        &self,
        region: &str,
        state: Option<&str>,
        virt: Option<Virtualization>,
    ) -> Result<Vec<crate::model::InstanceInfo>> {
        self.list_instances(region, state, virt).await
    }

    async fn offered_instance_types(&self, region: &str) -> Result<BTreeSet<String>> {
        let mut pages = self
            .ec2(region)
            .describe_instance_type_offerings()
            .location_type(LocationType::Region)
            .filters(filter("location", region))
            .into_paginator()
            .items()
            .send();
        let mut out = BTreeSet::new();
        while let Some(item) = pages.next().await {
            let offering =
                item.map_err(|e| self.err("DescribeInstanceTypeOfferings", region, e))?;
            if let Some(t) = offering.instance_type() {
                out.insert(t.as_str().to_string());
            }
        }
        Ok(out)
    }
}

impl Virtualization {
    pub(crate) fn from_sdk(v: &aws_sdk_ec2::types::VirtualizationType) -> Option<Self> {
        Virtualization::parse(v.as_str())
    }
}
