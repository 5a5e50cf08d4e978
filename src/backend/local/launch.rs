//! The local Xen host starts instances: the checks Xen makes before it
//! starts a guest (the type accepts the image; PV-GRUB or the BIOS and GRUB
//! find what they read), and with QEMU a real boot of an HVM disk on the
//! bus its type gives it. Also the host's `--verify`: a QEMU boot of the
//! new image.

use std::time::Duration;

use crate::backend::local::LocalBackend;
use crate::backend::{LaunchReport, LaunchRequest};
use crate::catalog;
use crate::compat::{self, Placement};
use crate::error::{Error, Result};
use crate::image::boot;
use crate::kernels::KernelName;

impl LocalBackend {
    /// What Xen checks before it starts a guest of `image` on `itype`.
    fn static_problems(&self, region: &str, image_id: &str, itype: &str) -> Result<Vec<String>> {
        let (rec, path) = self.root_disk(region, image_id)?;
        let info = catalog::compat()
            .instance_type(itype)
            .cloned()
            .ok_or_else(|| Error::UnknownInstanceType {
                instance_type: itype.into(),
                region: region.into(),
            })?;
        let placement = Placement {
            region_has_pv: compat::region_has_pv(region),
            offered_in_region: catalog::compat()
                .region(region)
                .and_then(|r| r.offers(itype)),
        };
        let reasons = compat::reasons(&rec.image, &info, &placement);
        if !reasons.is_empty() {
            return Ok(reasons);
        }
        if rec.image.is_paravirtual() {
            let Some(k) = rec.image.kernel_id.as_deref() else {
                return Ok(vec!["a paravirtual image without a kernel (AKI)".into()]);
            };
            let Some(kernel) = LocalBackend::kernels(region)
                .into_iter()
                .find(|i| i.image_id == k)
            else {
                return Ok(vec![format!("kernel {k} does not exist in {region}")]);
            };
            if kernel.architecture != rec.image.architecture {
                return Ok(vec![format!(
                    "kernel {k} is not {}",
                    rec.image.architecture.as_deref().unwrap_or("-")
                )]);
            }
            let Some(flavor) = kernel
                .name
                .as_deref()
                .and_then(KernelName::parse)
                .and_then(|n| n.flavor)
            else {
                return Ok(vec![format!("kernel {k} is not a PV-GRUB kernel")]);
            };
            return Ok(boot::pv_problems(&path, flavor));
        }
        if let Some(d) = &rec.drivers {
            let r = compat::driver_reasons(&info, d);
            if !r.is_empty() {
                return Ok(r);
            }
        }
        Ok(boot::hvm_problems(&path, rec.grub_cfg.as_deref()))
    }
}

#[async_trait::async_trait]
impl crate::backend::Launcher for LocalBackend {
    async fn launch(&self, region: &str, req: &LaunchRequest) -> Result<LaunchReport> {
        let reasons = self.static_problems(region, &req.image_id, &req.instance_type)?;
        let mut report = LaunchReport {
            instance_id: None,
            image_id: req.image_id.clone(),
            instance_type: req.instance_type.clone(),
            region: region.to_string(),
            boots: reasons.is_empty(),
            reasons,
            qemu: None,
        };
        if !report.boots {
            return Ok(report);
        }
        let (mut inst, volume) = self.create_instance(region, &req.image_id, &req.instance_type)?;
        report.instance_id = Some(inst.instance_id.clone());
        if let Some((expect, timeout)) = &req.qemu {
            let rec = self.image_record(region, &req.image_id)?;
            if rec.image.is_paravirtual() {
                return Err(Error::refused(
                    &req.image_id,
                    format!(
                        "{} is paravirtual: --qemu boots HVM images; QEMU cannot run PV-GRUB",
                        req.image_id
                    ),
                ));
            }
            let log = volume.with_extension("serial.log");
            let bus = catalog::compat()
                .instance_type(&req.instance_type)
                .map_or(boot::DiskBus::Ide, boot::DiskBus::for_type);
            let waiting = crate::progress::Waiting::new(
                &format!(
                    "{expect:?} on the serial console of {} under QEMU",
                    req.image_id
                ),
                *timeout,
            );
            let q = boot::qemu_boot(&volume, &log, expect, *timeout, bus)
                .map_err(|e| Error::io("run qemu-system-x86_64 on", &volume, e))?;
            drop(waiting);
            if !q.reached {
                report.boots = false;
                report.reasons.push(format!(
                    "QEMU: {:?} did not appear on the serial console within {} s (log: {})",
                    q.expect,
                    timeout.as_secs(),
                    q.serial_log.display()
                ));
            }
            report.qemu = Some(q);
        }
        let state = if report.boots { "running" } else { "stopped" };
        self.set_instance_state(region, &mut inst, state)?;
        Ok(report)
    }
}

#[async_trait::async_trait]
impl crate::migrate::verify::BootCheck for LocalBackend {
    async fn boot(
        &self,
        region: &str,
        image_id: &str,
        expect: &str,
        timeout: Duration,
        migration_id: &str,
    ) -> Result<crate::migrate::verify::Booted> {
        let (rec, disk) = self.root_disk(region, image_id)?;
        let log = self
            .store
            .root
            .join(format!("{migration_id}-verify.serial.log"));
        // On NVMe, as a Nitro type would attach it, when the image can mount an NVMe root.
        let bus = match rec.drivers {
            Some(d) if d.nvme => boot::DiskBus::Nvme,
            _ => boot::DiskBus::Ide,
        };
        let waiting = crate::progress::Waiting::new(
            &format!("{expect:?} on the serial console of {image_id} under QEMU"),
            timeout,
        );
        let q = crate::interrupt::blocking({
            let (disk, log, expect) = (disk.clone(), log.clone(), expect.to_string());
            move || boot::qemu_boot(&disk, &log, &expect, timeout, bus)
        })
        .await?
        .map_err(|e| Error::io("run qemu-system-x86_64 on", &disk, e))?;
        drop(waiting);
        Ok(crate::migrate::verify::Booted {
            reached: q.reached,
            detail: if q.reached {
                format!(
                    "QEMU printed {expect:?} after {:.1} s (serial log: {})",
                    q.seconds,
                    log.display()
                )
            } else {
                format!(
                    "{image_id} did not print {expect:?} under QEMU within {} s (serial log: {}); the image stays registered",
                    timeout.as_secs(),
                    log.display()
                )
            },
        })
    }
}
