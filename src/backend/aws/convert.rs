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
    }
}
