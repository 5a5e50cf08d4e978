//! A host that lives in memory, for the pipeline's failure matrix: images,
//! snapshots (their bytes) and instances in maps, no network, no QEMU, no
//! files but the journal and work directories. Any of its calls can be made
//! to fail once ([`FakeHost::fail`]); what exists afterwards is in its state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::image::source::{Bytes, Disk};
use crate::migrate::{HvmRegistration, Journal, MigrationHost, Source, SourceDisk, MIGRATION_TAG};
use crate::model::{Image, Virtualization};

pub const REGION: &str = "us-east-1";
pub const SOURCE_IMAGE: &str = "ami-0000000000000000a";
pub const SOURCE_INSTANCE: &str = "i-0000000000000000b";
/// The fake's record of what volume a snapshot was taken of.
const LINEAGE: &str = "fake:lineage";

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub bytes: Arc<Vec<u8>>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub image: Image,
    pub snapshot_id: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub images: BTreeMap<String, Registered>,
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Instance id to its state and its root volume's bytes.
    pub instances: BTreeMap<String, (String, Arc<Vec<u8>>)>,
    next: u64,
    /// Calls so far, by name.
    pub calls: HashMap<&'static str, usize>,
    /// Fail the `n`-th call (counting from 1) of this name, once.
    pub fail: Option<(&'static str, usize)>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{:017x}", self.next)
    }
}

/// The fake host: shared state (one world that several runs act on, as
/// several processes act on one AWS account) and this run's directories.
#[derive(Clone)]
pub struct FakeHost {
    pub state: Arc<Mutex<State>>,
    pub dir: PathBuf,
}

/// A small PV disk in Amazon Linux's style (a whole-disk ext4 filesystem,
/// menu.lst with root (hd0), a kernel and an initrd), made once by mke2fs.
pub fn pv_disk() -> Arc<Vec<u8>> {
    static DISK: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    DISK.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("root");
        let kver = "6.1.0-1-amd64";
        for d in ["boot/grub", "etc"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(
            root.join("boot/grub/menu.lst"),
            format!("default=0\ntimeout=0\ntitle Amazon Linux ({kver})\nroot (hd0)\nkernel /boot/vmlinuz-{kver} root=LABEL=/ console=hvc0\ninitrd /boot/initramfs-{kver}.img\n"),
        )
        .expect("menu.lst");
        std::fs::write(root.join(format!("boot/vmlinuz-{kver}")), vec![0x4b; 64 * 1024]).expect("kernel");
        std::fs::write(root.join(format!("boot/initramfs-{kver}.img")), vec![0x49; 16 * 1024]).expect("initrd");
        std::fs::write(root.join("etc/fstab"), "LABEL=/ / ext4 defaults 1 1\n").expect("fstab");
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(8 << 20))
            .expect("disk file");
        let ok = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "/", "-U", "0a3f1f32-5f2b-4c6e-9a54-1d0c0a00fa4e", "-d"])
            .arg(&root)
            .arg(&img)
            .env("E2FSPROGS_FAKE_TIME", "1500000000")
            .status()
            .expect("mke2fs (e2fsprogs) runs");
        assert!(ok.success(), "mke2fs failed");
        Arc::new(std::fs::read(&img).expect("read the disk"))
    })
    .clone()
}

impl FakeHost {
    /// A world with one PV image and one running instance launched from it.
    pub fn new(dir: &Path) -> Self {
        let mut s = State::default();
        let disk = pv_disk();
        s.snapshots.insert(
            "snap-0000000000000000c".into(),
            Snapshot {
                bytes: disk.clone(),
                tags: BTreeMap::new(),
            },
        );
        s.images.insert(
            SOURCE_IMAGE.into(),
            Registered {
                image: Image {
                    region: REGION.into(),
                    image_id: SOURCE_IMAGE.into(),
                    name: Some("pv-source".into()),
                    virtualization_type: Some(Virtualization::Paravirtual),
                    architecture: Some("x86_64".into()),
                    kernel_id: Some("aki-919dcaf8".into()),
                    root_device_type: Some("ebs".into()),
                    ..Default::default()
                },
                snapshot_id: "snap-0000000000000000c".into(),
                tags: BTreeMap::new(),
            },
        );
        s.instances
            .insert(SOURCE_INSTANCE.into(), ("running".into(), disk));
        FakeHost {
            state: Arc::new(Mutex::new(s)),
            dir: dir.to_path_buf(),
        }
    }

    /// Make the `n`-th call of `name` fail, once.
    pub fn fail(&self, name: &'static str, n: usize) {
        self.state.lock().expect("state").fail = Some((name, n));
    }

    /// Count a call; its injected failure, if this is the one.
    fn call(&self, name: &'static str) -> Result<()> {
        let mut s = self.state.lock().expect("state");
        let n = {
            let c = s.calls.entry(name).or_insert(0);
            *c += 1;
            *c
        };
        if s.fail == Some((name, n)) {
            s.fail = None;
            return Err(Error::Transfer {
                action: name,
                region: REGION.into(),
                message: format!("injected failure of call {n}"),
            });
        }
        Ok(())
    }

    /// A new snapshot of `bytes`; its id.
    fn keep(&self, bytes: Vec<u8>, tags: &BTreeMap<String, String>) -> String {
        let mut s = self.state.lock().expect("state");
        let id = s.id("snap");
        s.snapshots.insert(
            id.clone(),
            Snapshot {
                bytes: Arc::new(bytes),
                tags: tags.clone(),
            },
        );
        id
    }

    fn tagged(&self, mid: &str) -> (Vec<String>, Vec<String>) {
        let s = self.state.lock().expect("state");
        let tag =
            |t: &BTreeMap<String, String>| t.get(MIGRATION_TAG).map(String::as_str) == Some(mid);
        (
            s.snapshots
                .iter()
                .filter(|(_, v)| tag(&v.tags))
                .map(|(k, _)| k.clone())
                .collect(),
            s.images
                .iter()
                .filter(|(_, v)| tag(&v.tags))
                .map(|(k, _)| k.clone())
                .collect(),
        )
    }
}

fn disk_of(bytes: &Arc<Vec<u8>>, name: &'static str) -> Disk {
    Arc::new(Bytes(bytes.as_ref().clone(), name))
}

#[async_trait]
impl MigrationHost for FakeHost {
    async fn source_disk(
        &self,
        _region: &str,
        source: &Source,
        journal: &mut Journal,
    ) -> Result<SourceDisk> {
        self.call("source_disk")?;
        let image = self.state.lock().expect("state").images[SOURCE_IMAGE].clone();
        let bytes = match source {
            Source::Image(id) => {
                let s = self.state.lock().expect("state");
                let r = s
                    .images
                    .get(id)
                    .ok_or_else(|| Error::not_found("image", id, REGION))?;
                s.snapshots[&r.snapshot_id].bytes.clone()
            }
            Source::Instance(id) => match journal.temporary_snapshot.clone() {
                Some(snap) => self.state.lock().expect("state").snapshots[&snap]
                    .bytes
                    .clone(),
                None => {
                    let mut s = self.state.lock().expect("state");
                    let bytes = s
                        .instances
                        .get(id)
                        .ok_or_else(|| Error::not_found("instance", id, REGION))?
                        .1
                        .clone();
                    let snap = s.id("snap");
                    let mut tags = BTreeMap::new();
                    tags.insert(MIGRATION_TAG.to_string(), journal.migration_id.clone());
                    // A snapshot of the volume: its lineage is the instance.
                    tags.insert(LINEAGE.to_string(), id.clone());
                    s.snapshots.insert(
                        snap.clone(),
                        Snapshot {
                            bytes: bytes.clone(),
                            tags,
                        },
                    );
                    drop(s);
                    journal.temporary_snapshot = Some(snap);
                    journal.save()?;
                    bytes
                }
            },
        };
        Ok(SourceDisk {
            image: image.image,
            description: None,
            tags: BTreeMap::new(),
            disk: disk_of(&bytes, "the fake source"),
            snapshot_id: journal.temporary_snapshot.clone(),
            flavor: Some(crate::kernels::Flavor::Hd0),
            volume_type: None,
        })
    }

    async fn source_in_place(&self, _region: &str, source: &Source) -> Result<Option<SourceDisk>> {
        let Source::Image(id) = source else {
            return Ok(None);
        };
        let s = self.state.lock().expect("state");
        let r = s
            .images
            .get(id)
            .ok_or_else(|| Error::not_found("image", id, REGION))?;
        Ok(Some(SourceDisk {
            image: r.image.clone(),
            description: None,
            tags: BTreeMap::new(),
            disk: disk_of(&s.snapshots[&r.snapshot_id].bytes, "the fake source"),
            snapshot_id: None,
            flavor: Some(crate::kernels::Flavor::Hd0),
            volume_type: None,
        }))
    }

    async fn instance_state(&self, _region: &str, instance_id: &str) -> Result<String> {
        self.call("instance_state")?;
        let s = self.state.lock().expect("state");
        Ok(s.instances
            .get(instance_id)
            .ok_or_else(|| Error::not_found("instance", instance_id, REGION))?
            .0
            .clone())
    }

    async fn stop_instance(&self, _region: &str, instance_id: &str) -> Result<()> {
        self.call("stop_instance")?;
        let mut s = self.state.lock().expect("state");
        s.instances.get_mut(instance_id).expect("instance").0 = "stopped".into();
        Ok(())
    }

    async fn start_instance(&self, _region: &str, instance_id: &str) -> Result<()> {
        self.call("start_instance")?;
        let mut s = self.state.lock().expect("state");
        s.instances.get_mut(instance_id).expect("instance").0 = "running".into();
        Ok(())
    }

    async fn image_named(&self, _region: &str, name: &str) -> Result<Option<String>> {
        self.call("image_named")?;
        let s = self.state.lock().expect("state");
        Ok(s.images
            .iter()
            .find(|(_, r)| r.image.name.as_deref() == Some(name))
            .map(|(k, _)| k.clone()))
    }

    async fn store_disk(
        &self,
        _region: &str,
        path: &Path,
        tags: &BTreeMap<String, String>,
        _journal: &mut Journal,
    ) -> Result<String> {
        self.call("store_disk")?;
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        Ok(self.keep(bytes, tags))
    }

    async fn changed_blocks(&self, _region: &str, first: &str, second: &str) -> Result<Vec<u64>> {
        self.call("changed_blocks")?;
        let s = self.state.lock().expect("state");
        let get = |id: &str| {
            s.snapshots
                .get(id)
                .cloned()
                .ok_or_else(|| Error::not_found("snapshot", id, REGION))
        };
        let (a, b) = (get(first)?, get(second)?);
        if a.tags.get(LINEAGE) != b.tags.get(LINEAGE) || !a.tags.contains_key(LINEAGE) {
            return Err(Error::Transfer {
                action: "changed_blocks",
                region: REGION.into(),
                message: format!("{first} and {second} are not of one volume"),
            });
        }
        let block = crate::image::BLOCK as usize;
        let len = a.bytes.len().max(b.bytes.len());
        let at = |v: &[u8], i: usize| -> Vec<u8> {
            let mut out = vec![0u8; block];
            let (start, end) = ((i * block).min(v.len()), ((i + 1) * block).min(v.len()));
            out[..end - start].copy_from_slice(&v[start..end]);
            out
        };
        Ok((0..len.div_ceil(block))
            .filter(|&i| at(&a.bytes, i) != at(&b.bytes, i))
            .map(|i| i as u64)
            .collect())
    }

    async fn store_view_over(
        &self,
        _region: &str,
        view: Arc<crate::image::overlay::HvmView>,
        parent: &str,
        blocks: Vec<u64>,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats)> {
        self.call("store_view_over")?;
        let mut bytes = self
            .state
            .lock()
            .expect("state")
            .snapshots
            .get(parent)
            .ok_or_else(|| Error::not_found("snapshot", parent, REGION))?
            .bytes
            .as_ref()
            .clone();
        use crate::image::source::BlockSource;
        bytes.resize(view.len() as usize, 0);
        let block = crate::image::BLOCK;
        let mut stats = crate::image::overlay::TransferStats::default();
        for b in blocks {
            let data = view
                .block(b)
                .map_err(|e| Error::io("read", view.name(), e))?;
            let start = (b * block) as usize;
            let end = (start + block as usize).min(bytes.len());
            bytes[start..end].copy_from_slice(&data[..end - start]);
            stats.blocks_read += 1;
            stats.blocks_written += 1;
            stats.bytes_read += block;
            stats.bytes_written += block;
        }
        let id = self.keep(bytes, tags);
        journal.transfer = Some(stats);
        journal.save()?;
        Ok((id, stats))
    }

    async fn registered_by(&self, _region: &str, migration_id: &str) -> Result<Option<String>> {
        self.call("registered_by")?;
        Ok(self.tagged(migration_id).1.into_iter().next())
    }

    async fn register_hvm(
        &self,
        _region: &str,
        reg: &HvmRegistration,
        migration_id: &str,
    ) -> Result<Image> {
        self.call("register_hvm")?;
        if let Some(id) = self.tagged(migration_id).1.into_iter().next() {
            return Ok(self.state.lock().expect("state").images[&id].image.clone());
        }
        let mut s = self.state.lock().expect("state");
        let id = s.id("ami");
        let image = Image {
            region: REGION.into(),
            image_id: id.clone(),
            name: Some(reg.name.clone()),
            virtualization_type: Some(Virtualization::Hvm),
            architecture: Some(reg.architecture.clone()),
            root_device_name: Some("/dev/xvda".into()),
            ena_support: Some(reg.ena_support),
            ..Default::default()
        };
        s.images.insert(
            id,
            Registered {
                image: image.clone(),
                snapshot_id: reg.snapshot_id.clone(),
                tags: reg.tags.clone(),
            },
        );
        Ok(image)
    }

    async fn verify_registered(
        &self,
        _region: &str,
        _image_id: &str,
        _reg: &HvmRegistration,
    ) -> Result<Vec<String>> {
        self.call("verify_registered")?;
        Ok(vec![])
    }

    async fn delete_snapshot(&self, _region: &str, snapshot_id: &str) -> Result<()> {
        self.call("delete_snapshot")?;
        self.state
            .lock()
            .expect("state")
            .snapshots
            .remove(snapshot_id);
        Ok(())
    }

    async fn tagged_snapshots(&self, _region: &str, migration_id: &str) -> Result<Vec<String>> {
        self.call("tagged_snapshots")?;
        Ok(self.tagged(migration_id).0)
    }

    async fn cleanup(&self, journal: &Journal) -> Result<Vec<String>> {
        self.call("cleanup")?;
        let (snaps, images) = self.tagged(&journal.migration_id);
        let mut s = self.state.lock().expect("state");
        let keep: Vec<String> = images
            .iter()
            .map(|i| s.images[i].snapshot_id.clone())
            .collect();
        let mut removed = vec![];
        for snap in snaps.into_iter().filter(|x| !keep.contains(x)) {
            s.snapshots.remove(&snap);
            removed.push(snap);
        }
        Ok(removed)
    }

    fn work_dir(&self, migration_id: &str) -> PathBuf {
        self.dir.join("work").join(migration_id)
    }

    fn host_name(&self) -> &'static str {
        "fake"
    }

    fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }
}
