//! The successor rule's inputs, asked of a backend: the types a region
//! offers, the source type's facts, what the image needs of its next type;
//! and the replacement type `migrate --replace` launches.

use crate::backend::{Backend, InstanceTypeQuery};
use crate::catalog;
use crate::error::{Error, Result};
use crate::model::{ImageFilter, InstanceInfo, InstanceType};

use super::Needs;

/// A family name as EC2 writes them: letters, digits, and `-` (u-6tb1).
pub fn check_family(f: &str) -> Result<()> {
    let ok = !f.is_empty()
        && f.len() <= 16
        && f.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "--successor-family {:?}: expected an instance family such as m5 or c6i",
            f.chars().take(40).collect::<String>()
        )))
    }
}

/// The types a region offers, as candidates for a successor.
pub async fn candidates(
    backend: &dyn Backend,
    region: &str,
    offline: bool,
) -> Result<Vec<InstanceType>> {
    if offline {
        let t = catalog::compat();
        let known = t.region(region);
        return Ok(t
            .instance_types
            .iter()
            .map(|c| c.info.clone())
            .filter(|i| known.is_none_or(|r| r.offers(&i.instance_type) != Some(false)))
            .collect());
    }
    let offered = backend.offered_instance_types(region).await?;
    let all = backend
        .describe_instance_types(region, &InstanceTypeQuery::default())
        .await?;
    Ok(all
        .into_iter()
        .filter(|t| offered.contains(&t.instance_type))
        .collect())
}

/// The source type's facts: EC2's, else the built-in table's (hs1 is no longer described).
pub async fn source_type(
    backend: &dyn Backend,
    region: &str,
    name: &str,
    offline: bool,
) -> Option<InstanceType> {
    if !offline {
        let q = InstanceTypeQuery {
            names: vec![name.to_string()],
            ..Default::default()
        };
        if let Ok(Some(t)) = backend
            .describe_instance_types(region, &q)
            .await
            .map(|v| v.into_iter().next())
        {
            return Some(t);
        }
    }
    catalog::compat().instance_type(name).cloned()
}

/// What the instance's image needs of a successor: its architecture, and
/// the drivers amitool recorded when it migrated that image (else unknown).
pub async fn needs_of(backend: &dyn Backend, region: &str, image_id: Option<&str>) -> Needs {
    let mut needs = Needs {
        architecture: "x86_64".into(),
        ..Default::default()
    };
    let Some(id) = image_id else { return needs };
    let filter = ImageFilter {
        image_ids: vec![id.to_string()],
        ..Default::default()
    };
    if let Ok(Some(img)) = backend
        .describe_images(region, &filter)
        .await
        .map(|v| v.into_iter().next())
    {
        if let Some(a) = img.architecture {
            needs.architecture = a;
        }
    }
    if let Ok(Some(d)) = backend.boot_drivers(region, id).await {
        needs.ena = Some(d.ena);
        needs.nvme = Some(d.nvme);
    }
    needs
}

/// Fill in each instance's successor (and why) from the region's types.
pub async fn add_successors(
    backend: &dyn Backend,
    region: &str,
    found: &mut [InstanceInfo],
    family: Option<&str>,
    offline: bool,
) -> Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    let offered = candidates(backend, region, offline).await?;
    for i in found.iter_mut() {
        let Some(src) = source_type(backend, region, &i.instance_type, offline).await else {
            i.successor_reasons = vec![format!("{} is not described here", i.instance_type)];
            continue;
        };
        let needs = needs_of(backend, region, i.image_id.as_deref()).await;
        match super::successor(&src, &needs, &offered, family) {
            Ok((t, why)) => {
                i.successor_type = Some(t);
                i.successor_reasons = why;
            }
            Err(why) => i.successor_reasons = vec![why],
        }
    }
    Ok(())
}

/// The replacement's type, and why: `--instance-type`, or the successor of
/// the source's type for `image` (the new image, with the drivers the
/// inspection found; or, in a dry run, the source's own image), with the
/// fstab lines on instance-store volumes the successor lacks.
pub async fn replacement_type(
    backend: &dyn Backend,
    co: &dyn crate::migrate::cutover::CutOver,
    region: &str,
    instance_id: &str,
    (image, drivers): (Option<&str>, Option<(bool, bool)>),
    o: &crate::migrate::cutover::ReplaceOptions,
) -> Result<(String, Vec<String>)> {
    if let Some(t) = &o.instance_type {
        return Ok((t.clone(), vec![format!("{t}: asked with --instance-type")]));
    }
    let (itype, _) = co.instance_of(region, instance_id).await?;
    let src = source_type(backend, region, &itype, false)
        .await
        .ok_or_else(|| Error::NoSuccessor {
            reason: format!("{itype} is described nowhere"),
        })?;
    let mut needs = needs_of(backend, region, image).await;
    if let Some((ena, nvme)) = drivers {
        needs.ena = Some(ena);
        needs.nvme = Some(nvme);
    }
    let offered = candidates(backend, region, false).await?;
    let (t, mut why) = super::successor(&src, &needs, &offered, o.successor_family.as_deref())
        .map_err(|reason| Error::NoSuccessor { reason })?;
    let kept = offered
        .iter()
        .find(|x| x.instance_type == t)
        .map_or(0, |x| x.instance_store);
    if let (true, Some(image)) = (src.instance_store > kept, image) {
        let lines = lost_mounts(backend, region, image, src.instance_store).await;
        if !lines.is_empty() {
            why.push(format!(
                "fstab entries on instance-store volumes {t} lacks: {}",
                lines.join("; ")
            ));
        }
    }
    Ok((t, why))
}

/// The new image's fstab lines that mount the source type's instance-store
/// volumes (read where the image's snapshot lies); none when unreadable.
async fn lost_mounts(
    backend: &dyn Backend,
    region: &str,
    image_id: &str,
    count: u32,
) -> Vec<String> {
    let Ok(disk) = backend.image_disk(region, image_id).await else {
        return vec![];
    };
    crate::interrupt::blocking(move || {
        let d = crate::image::guest::discover_in(&disk.disk, None).ok()?;
        let g = crate::image::guest::Guest::open_in(&disk.disk, &d.mounts).ok()?;
        let fstab = g.read_text("/etc/fstab")?;
        Some(super::instance_store_mounts(&fstab, count))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}
