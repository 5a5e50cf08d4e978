//! One trait for what amitool asks of a cloud, two real implementations: AWS
//! (the SDK, or LocalStack through an endpoint URL) and the local model of a
//! Xen host (files in a state directory). Commands are written once against it.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{Image, ImageFilter, InstanceType, Virtualization};
pub use crate::model::{ImportRequest, InstanceTypeQuery, LaunchReport, LaunchRequest};

pub mod aws;
pub mod local;

/// An image and its root disk, readable in place.
pub struct ImageDisk {
    pub image: Image,
    pub disk: crate::image::source::Disk,
    pub flavor: Option<crate::kernels::Flavor>,
}

/// One instance `terminate` ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Terminated {
    pub region: String,
    pub instance_id: String,
    pub previous_state: String,
    pub state: String,
}

impl crate::output::Tabular for Terminated {
    fn headers() -> Vec<&'static str> {
        vec!["REGION", "INSTANCE", "WAS", "NOW"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.region.clone(),
            self.instance_id.clone(),
            self.previous_state.clone(),
            self.state.clone(),
        ]
    }
}

/// A host that starts instances the way its hypervisor would and says
/// whether they boot (the local Xen host: `launch`).
#[async_trait]
pub trait Launcher: Send + Sync {
    async fn launch(&self, region: &str, req: &LaunchRequest) -> Result<LaunchReport>;
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// `aws` or `local`, for messages.
    fn name(&self) -> &'static str;

    /// The region used when the command line names none.
    fn default_region(&self) -> Option<String>;

    /// The regions enabled for the account (`--all-regions`).
    async fn enabled_regions(&self) -> Result<Vec<String>>;

    /// Whether `region` exists at all, for names the built-in table does not know.
    async fn region_exists(&self, region: &str) -> Result<bool>;

    /// Images of one region matching `filter`, in no particular order.
    async fn describe_images(&self, region: &str, filter: &ImageFilter) -> Result<Vec<Image>>;

    /// Instance types as the region describes them.
    async fn describe_instance_types(
        &self,
        region: &str,
        query: &InstanceTypeQuery,
    ) -> Result<Vec<InstanceType>>;

    /// The names of the instance types offered in the region.
    async fn offered_instance_types(&self, region: &str) -> Result<BTreeSet<String>>;

    /// Register a raw disk image as an AMI (snapshot + RegisterImage).
    async fn import_image(&self, region: &str, req: &ImportRequest) -> Result<Image>;

    /// Write an image's root disk to a new sparse file; the bytes of data written.
    async fn export_image(
        &self,
        region: &str,
        image_id: &str,
        out: &std::path::Path,
    ) -> Result<u64>;

    /// What the image's default kernel can mount its root with at boot, when
    /// known: amitool records it on every image it migrates (the local
    /// host's record, the `amitool:boot-drivers` tag on AWS).
    async fn boot_drivers(
        &self,
        _region: &str,
        _image_id: &str,
    ) -> Result<Option<crate::image::inspect::Drivers>> {
        Ok(None)
    }

    /// An image's root disk read where it lies (the local file; the EBS
    /// snapshot block by block, nothing downloaded), with the PV-GRUB layout
    /// its kernel reads it as, when the kernel says.
    async fn image_disk(&self, region: &str, image_id: &str) -> Result<ImageDisk>;

    /// The instances of one region whose state is `state` (any when `None`)
    /// and virtualization `virt`, with their volumes, Elastic IP and the
    /// instance-store count of their type; successors are the caller's.
    async fn describe_instances(
        &self,
        region: &str,
        state: Option<&str>,
        virt: Option<Virtualization>,
    ) -> Result<Vec<crate::model::InstanceInfo>>;

    /// Terminate instances (EC2's TerminateInstances; the local host removes
    /// their root volumes, as DeleteOnTermination does): each one's state before and after.
    async fn terminate_instances(
        &self,
        region: &str,
        instance_ids: &[String],
    ) -> Result<Vec<Terminated>>;

    /// `launch`: start an instance the way the hypervisor would (the local host).
    fn launcher(&self) -> Option<&dyn Launcher> {
        None
    }

    /// `migrate --verify`: boot a registered image and read its console.
    fn boot_check(&self) -> Option<&dyn crate::migrate::verify::BootCheck> {
        None
    }

    /// `migrate --dry-run`: the provider's answers to calls it would make (AWS's DryRun=true).
    fn dry_run(&self) -> Option<&dyn crate::migrate::dryrun::ProviderDryRun> {
        None
    }

    /// The cut-over to a replacement instance (`migrate --replace`), where
    /// the backend can move an instance's network identity.
    fn cut_over(&self) -> Option<&dyn crate::migrate::cutover::CutOver> {
        None
    }

    /// The backend's side of the migration pipeline.
    fn migration_host(&self) -> Option<&dyn crate::migrate::MigrationHost> {
        None
    }

    /// The engine that runs fleets beyond this process (`fleet start`,
    /// `worker`): Step Functions on AWS.
    fn fleet_engine(&self) -> Option<&dyn crate::fleet::FleetEngine> {
        None
    }
}
