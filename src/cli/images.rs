//! `import`, `export`, `inspect` and `launch`: the image commands. `import`
//! and `export` run on both backends (EBS direct APIs on AWS); `inspect` and
//! `launch` on the local Xen host.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::catalog;
use crate::cli::context::Context;
use crate::cli::list::{ArchArg, VirtArg};
use crate::compat::{self, Placement};
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::image::inspect;
use crate::model::Virtualization;
use crate::model::{ImportRequest, LaunchReport, LaunchRequest};
use crate::output::{self, cell, Format, Tabular};

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// A raw disk image (PV: a filesystem, or an MBR disk for hd00 kernels).
    pub file: PathBuf,
    #[arg(long, value_enum, ignore_case = true)]
    pub virtualization: VirtArg,
    /// The PV-GRUB kernel (aki-...) of the region; required for pv.
    #[arg(long, value_name = "AKI")]
    pub kernel: Option<String>,
    #[arg(long, value_enum, ignore_case = true, default_value = "x86_64")]
    pub arch: ArchArg,
    #[arg(long)]
    pub name: Option<String>,
    /// An hvm image whose kernel has the ENA driver and can mount an NVMe
    /// root: marked EnaSupport, so Nitro types run it.
    #[arg(long)]
    pub ena_support: bool,
}

pub async fn import(ctx: &Context, a: ImportArgs) -> Result<u8> {
    if a.ena_support && matches!(a.virtualization, VirtArg::Pv) {
        return Err(Error::InvalidInput(
            "--ena-support marks an hvm image; a paravirtual one runs on Xen PV types only".into(),
        ));
    }
    if let Some(k) = &a.kernel {
        ids::check_id(IdKind::Kernel, k)?;
    }
    let region = ctx.one_region("import").await?;
    let image = ctx
        .backend
        .import_image(
            &region,
            &ImportRequest {
                file: a.file,
                virtualization: a.virtualization.into(),
                kernel_id: a.kernel,
                architecture: a.arch.as_str().into(),
                name: a.name,
                ena_support: a.ena_support,
            },
        )
        .await?;
    match ctx.format() {
        Format::Json => output::emit(&output::json(&image)),
        f => output::emit(&output::rows(std::slice::from_ref(&image), f)),
    }
    Ok(0)
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    pub image_id: String,
    /// A new file (never overwritten).
    pub file: PathBuf,
}

pub async fn export(ctx: &Context, a: ExportArgs) -> Result<u8> {
    ids::check_id(IdKind::Image, &a.image_id)?;
    if a.file.exists() {
        return Err(Error::refused(
            a.file.display().to_string(),
            format!("{} exists; amitool does not overwrite", a.file.display()),
        ));
    }
    let region = ctx.one_region("export").await?;
    let copied = ctx
        .backend
        .export_image(&region, &a.image_id, &a.file)
        .await?;
    eprintln!(
        "amitool: wrote {} ({copied} bytes of data)",
        a.file.display()
    );
    Ok(0)
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    pub image_id: String,
}

impl Tabular for inspect::Inspection {
    fn headers() -> Vec<&'static str> {
        vec![
            "LAYOUT", "FS", "LABEL", "MENU", "KERNEL", "XEN-BLK", "ENA", "NVME", "HVM", "PROBLEMS",
        ]
    }

    fn wrapping_column() -> Option<usize> {
        Some(9)
    }

    fn row(&self) -> Vec<String> {
        let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
        let where_ = |m: &crate::image::guest::Mount| match (&m.logical_volume, m.partition) {
            (Some(lv), _) => format!("{} {lv}", m.point),
            (None, Some(p)) => format!("{} p{p}", m.point),
            (None, None) => m.point.clone(),
        };
        let layout = if self.mounts.len() > 1 || self.root_uuid.is_none() {
            format!(
                "{} ({})",
                self.layout.as_str(),
                self.mounts
                    .iter()
                    .map(where_)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            self.layout.as_str().into()
        };
        vec![
            layout,
            self.fs_type.as_str().into(),
            cell(self.label.as_deref()),
            cell(self.menu_lst.as_deref()),
            cell(self.kernel.as_deref()),
            yes(self.drivers.xen_blkfront),
            yes(self.drivers.ena),
            yes(self.drivers.nvme),
            self.boots_on
                .map_or("-", |b| match b {
                    inspect::BootsOn::Nitro => "nitro",
                    inspect::BootsOn::XenHvmOnly => "xen-hvm only",
                    inspect::BootsOn::Neither => "neither",
                })
                .into(),
            if self.problems.is_empty() && self.hvm_problems.is_empty() {
                "-".into()
            } else {
                self.problems
                    .iter()
                    .chain(&self.hvm_problems)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ]
    }
}

/// The preflight report of `inspect`.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub image_id: String,
    pub region: String,
    #[serde(flatten)]
    pub inspection: inspect::Inspection,
    /// The instance types the HVM result will run on.
    pub runs_on: Vec<String>,
    /// EBS blocks fetched to inspect a snapshot in place (AWS); `null` for a local file.
    pub blocks_read: Option<u64>,
}

/// The types an HVM image with these drivers runs on, from the table.
pub fn runs_on(arch: &str, d: &inspect::Drivers) -> Vec<String> {
    let hvm = crate::model::Image {
        virtualization_type: Some(Virtualization::Hvm),
        architecture: Some(arch.into()),
        ena_support: Some(d.ena),
        ..Default::default()
    };
    let all = catalog::compat().instance_types.iter().map(|t| &t.info);
    compat::accepting(all, Virtualization::Hvm, Some(arch))
        .into_iter()
        .filter(|t| compat::reasons(&hvm, t, &Placement::default()).is_empty())
        .filter(|t| t.hypervisor.as_deref() != Some("xen") || d.xen_blkfront)
        .filter(|t| t.nvme_support != "required" || d.nvme)
        .map(|t| t.instance_type)
        .collect()
}

pub async fn inspect_image(ctx: &Context, a: InspectArgs) -> Result<u8> {
    ids::check_id(IdKind::Image, &a.image_id)?;
    let region = ctx.one_region("inspect").await?;
    // The disk is read where it lies: the local file, or the EBS snapshot
    // block by block (on a blocking thread: each read waits for EBS).
    let d = ctx.backend.image_disk(&region, &a.image_id).await?;
    let (disk, flavor) = (d.disk.clone(), d.flavor);
    let insp = tokio::task::spawn_blocking(move || inspect::inspect_in(&disk, flavor))
        .await
        .map_err(|source| Error::Panicked { source })?
        .map_err(|source| Error::Guest {
            id: a.image_id.clone(),
            source,
        })?;
    let arch = d
        .image
        .architecture
        .clone()
        .unwrap_or_else(|| "x86_64".into());
    let report = InspectReport {
        image_id: a.image_id,
        region,
        runs_on: runs_on(&arch, &insp.drivers),
        blocks_read: d.disk.blocks_read(),
        inspection: insp,
    };
    match ctx.format() {
        Format::Json => output::emit(&output::json(&report)),
        f => {
            let line =
                |label: &str, value: String| output::emit(&output::labelled(f, label, &value));
            output::emit(&output::rows(std::slice::from_ref(&report.inspection), f));
            if let Some(b) = &report.inspection.boot {
                line(
                    "boot",
                    format!(
                        "GRUB will read {} ({}) because {}",
                        b.config.path,
                        match b.config.kind {
                            crate::image::bootcfg::ConfigKind::Legacy => "legacy_configfile",
                            crate::image::bootcfg::ConfigKind::Grub2 => "configfile",
                        },
                        b.config.rule
                    ),
                );
            }
            for c in &report.inspection.boot_changes {
                line(
                    "change",
                    format!(
                        "{} line {}: {:?} -> {:?}",
                        c.file, c.line, c.before, c.after
                    ),
                );
            }
            for f in &report.inspection.findings {
                line("finding", f.clone());
            }
            line("runs on (as HVM)", report.runs_on.join(", "));
            if let Some(n) = report.blocks_read {
                line("read in place", format!("{n} blocks of 512 KiB"));
            }
        }
    }
    Ok(u8::from(
        !report.inspection.problems.is_empty() || !report.inspection.hvm_problems.is_empty(),
    ))
}

#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    pub image_id: String,
    #[arg(long)]
    pub instance_type: String,
    /// Really boot an HVM image under qemu-system-x86_64.
    #[arg(long)]
    pub qemu: bool,
    /// With --qemu: the text on the serial console that means success.
    #[arg(long, default_value = "login:")]
    pub expect: String,
    /// With --qemu: seconds to wait.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

impl Tabular for LaunchReport {
    fn headers() -> Vec<&'static str> {
        vec!["INSTANCE", "IMAGE", "TYPE", "BOOTS", "REASONS"]
    }

    fn wrapping_column() -> Option<usize> {
        Some(4)
    }

    fn row(&self) -> Vec<String> {
        vec![
            cell(self.instance_id.as_deref()),
            self.image_id.clone(),
            self.instance_type.clone(),
            if self.boots { "yes" } else { "no" }.into(),
            if self.reasons.is_empty() {
                "-".into()
            } else {
                self.reasons.join("\n")
            },
        ]
    }
}

pub async fn launch(ctx: &Context, a: LaunchArgs) -> Result<u8> {
    let host = ctx.backend.launcher().ok_or_else(|| {
        Error::Unsupported(format!(
            "`amitool launch` runs on --backend local only: the {} backend starts no instances to check a boot",
            ctx.backend.name()
        ))
    })?;
    ids::check_id(IdKind::Image, &a.image_id)?;
    ids::check_instance_type(&a.instance_type)?;
    let region = ctx.one_region("launch").await?;
    let report = host
        .launch(
            &region,
            &LaunchRequest {
                image_id: a.image_id.clone(),
                instance_type: a.instance_type.clone(),
                qemu: a
                    .qemu
                    .then(|| (a.expect.clone(), Duration::from_secs(a.timeout))),
            },
        )
        .await?;
    output::emit(&output::render_one(&report, ctx.format()));
    Ok(u8::from(!report.boots))
}

#[derive(Debug, Clone, Args)]
pub struct TerminateArgs {
    /// The instances to end (i-...).
    #[arg(required = true)]
    pub instance_ids: Vec<String>,
}

/// `terminate`: end instances, each one's state before and after.
pub async fn terminate(ctx: &Context, a: TerminateArgs) -> Result<u8> {
    for id in &a.instance_ids {
        ids::check_id(IdKind::Instance, id)?;
    }
    let region = ctx.one_region("terminate").await?;
    let ended = ctx
        .backend
        .terminate_instances(&region, &a.instance_ids)
        .await?;
    output::emit(&output::render(&ended, ctx.format()));
    Ok(0)
}
