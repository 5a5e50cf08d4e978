//! `amitool list`: images by virtualization type, region, owner, architecture, name.

use clap::{Args, ValueEnum};

use crate::cli::context::Context;
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::{Image, ImageFilter, Virtualization};
use crate::output::{cell, Tabular};
use crate::regions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VirtArg {
    /// Paravirtual (EC2's word `paravirtual` is taken too).
    #[value(alias = "paravirtual")]
    Pv,
    Hvm,
}

impl From<VirtArg> for Virtualization {
    fn from(v: VirtArg) -> Self {
        match v {
            VirtArg::Pv => Virtualization::Paravirtual,
            VirtArg::Hvm => Virtualization::Hvm,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    /// 64-bit x86 (`amd64` is taken too, as Debian names it).
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    I386,
    Arm64,
}

impl ArchArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchArg::X86_64 => "x86_64",
            ArchArg::I386 => "i386",
            ArchArg::Arm64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageTypeArg {
    Machine,
    Kernel,
    Ramdisk,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only paravirtual (pv) or hvm images.
    #[arg(long, value_enum, ignore_case = true)]
    pub virtualization: Option<VirtArg>,
    /// self, amazon, aws-marketplace, or a 12-digit account id.
    #[arg(long)]
    pub owner: Option<String>,
    #[arg(long, value_enum, ignore_case = true)]
    pub arch: Option<ArchArg>,
    /// A name pattern with * and ?.
    #[arg(long, value_name = "GLOB")]
    pub name: Option<String>,
    #[arg(long, value_enum)]
    pub image_type: Option<ImageTypeArg>,
    /// Only images that boot this kernel (aki-...).
    #[arg(long, value_name = "AKI")]
    pub kernel: Option<String>,
}

/// `self`, `amazon`, `aws-marketplace` or an account id.
pub fn check_owner(owner: &str) -> Result<()> {
    let account = owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit());
    if account || matches!(owner, "self" | "amazon" | "aws-marketplace") {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "--owner {owner:?}: expected self, amazon, aws-marketplace or a 12-digit account id"
        )))
    }
}

impl ListArgs {
    pub fn filter(&self) -> Result<ImageFilter> {
        if let Some(o) = &self.owner {
            check_owner(o)?;
        }
        if let Some(k) = &self.kernel {
            ids::check_id(IdKind::Kernel, k)?;
        }
        Ok(ImageFilter {
            image_ids: vec![],
            virtualization: self.virtualization.map(Into::into),
            owner: self.owner.clone(),
            architecture: self.arch.map(|a| a.as_str().to_string()),
            name: self.name.clone(),
            image_type: self.image_type.map(|t| {
                t.to_possible_value()
                    .expect("no skipped variants")
                    .get_name()
                    .to_string()
            }),
            kernel_id: self.kernel.clone(),
        })
    }
}

impl Tabular for Image {
    fn headers() -> Vec<&'static str> {
        vec![
            "REGION", "IMAGE", "NAME", "VIRT", "ARCH", "KERNEL", "CREATED",
        ]
    }

    fn elided_columns() -> Vec<usize> {
        vec![2]
    }

    fn optional_columns() -> Vec<usize> {
        vec![6, 4]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.region.clone(),
            self.image_id.clone(),
            cell(self.name.as_deref()),
            cell(self.virtualization_type.map(Virtualization::short)),
            cell(self.architecture.as_deref()),
            cell(self.kernel_id.as_deref()),
            cell(
                self.creation_date
                    .as_deref()
                    .map(|d| d.get(..10).unwrap_or(d)),
            ),
        ]
    }
}

/// Sorted by region, then creation date, then id.
pub fn sort_images(images: &mut [Image]) {
    images.sort_by(|a, b| {
        (&a.region, &a.creation_date, &a.image_id).cmp(&(&b.region, &b.creation_date, &b.image_id))
    });
}

pub async fn run(ctx: &Context, args: ListArgs) -> Result<u8> {
    let filter = args.filter()?;
    let regions = ctx.regions().await?;
    let bar = ctx.progress.bar(regions.len() as u64, "DescribeImages");
    let results = regions::for_each(&regions, &bar, |r| {
        let filter = filter.clone();
        async move { ctx.backend.describe_images(&r, &filter).await }
    })
    .await;
    let (found, failed) = regions::report_failures(results);
    let mut images: Vec<Image> = found.into_iter().flatten().collect();
    sort_images(&mut images);
    let code = regions::emit_partial(&images, ctx.format(), failed, regions.len());
    if failed == 0 {
        let pv = filter.virtualization == Some(crate::model::Virtualization::Paravirtual);
        regions::say_why_empty(images.is_empty(), &regions, pv, &|r| {
            format!("no image in {r} matches the filters")
        });
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert!(check_owner("self").is_ok());
        assert!(check_owner("amazon").is_ok());
        assert!(check_owner("123456789012").is_ok());
        assert!(check_owner("12345").is_err());
        assert!(check_owner("me").is_err());
    }

    #[test]
    fn filter_from_args() {
        let a = ListArgs {
            virtualization: Some(VirtArg::Pv),
            owner: Some("amazon".into()),
            arch: Some(ArchArg::I386),
            name: Some("pv-grub-*".into()),
            image_type: Some(ImageTypeArg::Kernel),
            kernel: None,
        };
        let f = a.filter().unwrap();
        assert_eq!(f.virtualization, Some(Virtualization::Paravirtual));
        assert_eq!(f.image_type.as_deref(), Some("kernel"));
        assert_eq!(f.architecture.as_deref(), Some("i386"));
        let bad = ListArgs {
            kernel: Some("aki-nothex!".into()),
            ..a
        };
        assert_eq!(bad.filter().unwrap_err().exit_code(), 2);
    }
}
