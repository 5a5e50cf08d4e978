//! SDK shapes to amitool's model.

use aws_sdk_ec2::types::{Image as SdkImage, InstanceTypeInfo};

use crate::model::{Image, InstanceType, Virtualization};

pub fn image(region: &str, i: &SdkImage) -> Image {
    Image {
        region: region.to_string(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        name: i.name().map(String::from),
        virtualization_type: i.virtualization_type().and_then(Virtualization::from_sdk),
        architecture: i.architecture().map(|a| a.as_str().to_string()),
        image_type: i.image_type().map(|t| t.as_str().to_string()),
        kernel_id: i.kernel_id().map(String::from),
        root_device_type: i.root_device_type().map(|t| t.as_str().to_string()),
        root_device_name: i.root_device_name().map(String::from),
        ena_support: i.ena_support(),
        sriov_net_support: i.sriov_net_support().map(String::from),
        boot_mode: i.boot_mode().map(|m| m.as_str().to_string()),
        creation_date: i.creation_date().map(String::from),
        state: i.state().map(|s| s.as_str().to_string()),
        owner_id: i.owner_id().map(String::from),
    }
}

pub fn instance_type(t: &InstanceTypeInfo) -> InstanceType {
    InstanceType {
        instance_type: t
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        supported_virtualization_types: t
            .supported_virtualization_types()
            .iter()
            .filter_map(Virtualization::from_sdk)
            .collect(),
        supported_architectures: t
            .processor_info()
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        hypervisor: t.hypervisor().map(|h| h.as_str().to_string()),
        ena_support: t
            .network_info()
            .and_then(|n| n.ena_support())
            .map(|e| e.as_str().to_string())
            .unwrap_or_else(|| "unsupported".into()),
        nvme_support: t
            .ebs_info()
            .and_then(|e| e.nvme_support())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| "unsupported".into()),
        boot_modes: t
            .supported_boot_modes()
            .iter()
            .map(|m| m.as_str().to_string())
            .collect(),
        current_generation: t.current_generation().unwrap_or(false),
        vcpus: t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(0),
        memory_mib: t.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0),
        instance_store: t
            .instance_storage_info()
            .map(|s| {
                s.disks()
                    .iter()
                    .filter_map(|d| d.count())
                    .sum::<i32>()
                    .max(0) as u32
            })
            .unwrap_or(0),
    }
}

/// The image amitool may migrate, or why not: a Marketplace image (its
/// product codes), then what [`crate::migrate::check_source`] refuses
/// (not paravirtual, instance-store).
pub fn migratable(region: &str, raw: &SdkImage) -> crate::error::Result<Image> {
    let image = image(region, raw);
    let codes: Vec<&str> = raw
        .product_codes()
        .iter()
        .filter_map(|p| p.product_code_id())
        .collect();
    if !raw.product_codes().is_empty() {
        return Err(crate::error::Error::refused(
            &image.image_id,
            format!(
                "{} carries Marketplace product codes ({}): its software may not be copied into a new image",
                image.image_id,
                codes.join(", ")
            ),
        ));
    }
    crate::migrate::check_source(&image)?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{
        DeviceType, Image as SdkImage, ProductCode, ProductCodeValues, VirtualizationType,
    };

    fn pv() -> aws_sdk_ec2::types::builders::ImageBuilder {
        SdkImage::builder()
            .image_id("ami-0123456789abcdef0")
            .virtualization_type(VirtualizationType::Paravirtual)
            .root_device_type(DeviceType::Ebs)
    }

    #[test]
    fn marketplace_hvm_and_instance_store_images_are_refused() {
        assert!(super::migratable("us-east-1", &pv().build()).is_ok());
        let market = pv()
            .product_codes(
                ProductCode::builder()
                    .product_code_id("aw0evgkw8e5c1q413zgy5pjce")
                    .product_code_type(ProductCodeValues::Marketplace)
                    .build(),
            )
            .build();
        let e = super::migratable("us-east-1", &market)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ami-0123456789abcdef0 carries Marketplace product codes (aw0evgkw8e5c1q413zgy5pjce)"),
            "{e}"
        );
        let hvm = pv().virtualization_type(VirtualizationType::Hvm).build();
        assert!(super::migratable("us-east-1", &hvm)
            .unwrap_err()
            .to_string()
            .contains("already hvm"));
        let store = pv().root_device_type(DeviceType::InstanceStore).build();
        assert!(super::migratable("us-east-1", &store)
            .unwrap_err()
            .to_string()
            .contains("instance-store"));
    }
}
