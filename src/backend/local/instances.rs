//! The local host's instances as `amitool instances` lists them: what a
//! local instance has (its type, image, root volume); no network, so no
//! subnet, security group or address.

use crate::backend::local::store::{InstanceRecord, Kind};
use crate::backend::local::LocalBackend;
use crate::catalog;
use crate::error::Result;
use crate::model::{InstanceInfo, InstanceVolume, Virtualization};

impl LocalBackend {
    pub(crate) fn list_instances(
        &self,
        region: &str,
        state: Option<&str>,
        virt: Option<Virtualization>,
    ) -> Result<Vec<InstanceInfo>> {
        let mut out = vec![];
        for inst in self.store.all::<InstanceRecord>(region, Kind::Instance)? {
            if state.is_some_and(|s| s != inst.state) {
                continue;
            }
            let image = self.image_record(region, &inst.image_id).ok();
            let v = image.as_ref().and_then(|r| r.image.virtualization_type);
            if virt.is_some_and(|want| Some(want) != v) {
                continue;
            }
            let size = self
                .volume_path(region, &inst.root_volume_id)
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len().div_ceil(1 << 30) as i64);
            let root = image
                .as_ref()
                .and_then(|r| r.image.root_device_name.clone());
            let live = inst.state != "terminated";
            out.push(InstanceInfo {
                region: region.to_string(),
                instance_id: inst.instance_id.clone(),
                name: None,
                state: inst.state.clone(),
                virtualization_type: v,
                image_id: Some(inst.image_id.clone()),
                kernel_id: image.as_ref().and_then(|r| r.image.kernel_id.clone()),
                root_device_type: Some("ebs".into()),
                volumes: if live {
                    vec![InstanceVolume {
                        device: root.clone().unwrap_or_else(|| "/dev/xvda".into()),
                        volume_id: inst.root_volume_id.clone(),
                        size_gib: size,
                        volume_type: Some("standard".into()),
                        delete_on_termination: Some(true),
                    }]
                } else {
                    vec![]
                },
                root_device_name: root,
                instance_store: catalog::compat()
                    .instance_type(&inst.instance_type)
                    .map(|t| t.instance_store),
                public_ip: None,
                elastic_ip: None,
                subnet_id: None,
                security_groups: vec![],
                retired_family: catalog::compat().is_pv_family(&inst.instance_type),
                successor_type: None,
                successor_reasons: vec![],
                instance_type: inst.instance_type,
            });
        }
        Ok(out)
    }
}
