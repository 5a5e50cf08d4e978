//! The local Xen host end to end: import the PV fixtures built from Debian
//! packages, migrate them, and boot the results under QEMU to both markers;
//! the broken fixtures must be refused with a clear reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use std::time::Duration;

use amitool::image::boot::{qemu_boot, DiskBus};
use serde_json::Value;

use crate::common;
use crate::day2;
use common::sha256;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_amitool")
}

/// The fixture directory, built on first use by tests/fixtures/build-images.sh.
fn fixtures() -> &'static (PathBuf, Value) {
    static F: OnceLock<(PathBuf, Value)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = common::fixtures_dir();
        let manifest = dir.join("manifest.json");
        if !manifest.is_file() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-images.sh");
            let st = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .status()
                .expect("run build-images.sh");
            assert!(
                st.success(),
                "tests/fixtures/build-images.sh {} failed",
                dir.display()
            );
        }
        let m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        (dir, m)
    })
}

fn fixture_list() -> Vec<Value> {
    fixtures().1["images"].as_array().unwrap().clone()
}

struct Host {
    state: tempfile::TempDir,
    region: &'static str,
}

impl Host {
    fn new() -> Self {
        Host {
            state: tempfile::tempdir().unwrap(),
            region: "us-east-1",
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args([
                "--backend",
                "local",
                "--no-progress",
                "--region",
                self.region,
                "--state-dir",
            ])
            .arg(self.state.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.run(&a);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Import a fixture as a PV AMI with the PV-GRUB kernel of its layout.
    fn import(&self, fx: &Value) -> String {
        let arch = fx["architecture"].as_str().unwrap_or("x86_64");
        let kernel = kernel_for(self.region, fx["layout"].as_str().unwrap_or("hd0"), arch);
        let file = fixtures().0.join(fx["file"].as_str().unwrap());
        let img = self.json(&[
            "import",
            file.to_str().unwrap(),
            "--virtualization",
            "pv",
            "--kernel",
            &kernel,
            "--arch",
            arch,
        ]);
        img["image_id"].as_str().unwrap().to_string()
    }
}

/// The PV-GRUB kernel of `flavor` for `arch` in `region`, from the built-in table.
fn kernel_for(region: &str, flavor: &str, arch: &str) -> String {
    let t: Value = serde_json::from_str(include_str!("../../data/kernels.json")).unwrap();
    let want = format!("pv-grub-{flavor}_");
    t["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["region"] == region)
        .filter(|k| {
            k["name"].as_str().unwrap().starts_with(&want)
                && k["name"].as_str().unwrap().contains(arch)
        })
        .map(|k| k["kernel_id"].as_str().unwrap().to_string())
        .next()
        .unwrap_or_else(|| panic!("no {flavor} kernel in {region}"))
}

/// One test per fixture that boots, so the harness spreads the QEMU boots
/// over its threads (TCG runs a guest on one core); a test checks that
/// the list is the manifest's.
macro_rules! good_fixtures {
    ($($test:ident: $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                good_fixture_migrates_boots_and_survives($name);
            }
        )*

        #[test]
        fn every_good_fixture_has_its_test() {
            let mut tested = vec![$($name),*];
            tested.sort_unstable();
            let mut good: Vec<String> = fixture_list()
                .iter()
                .filter(|f| f["expected"] == "boots")
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect();
            good.sort();
            assert_eq!(tested, good);
        }
    };
}

good_fixtures! {
    good_fixture_menulst_root_hd0: "menulst-root-hd0",
    good_fixture_menulst_noroot: "menulst-noroot",
    good_fixture_multi_default1: "multi-default1",
    good_fixture_grubconf_symlink: "grubconf-symlink",
    good_fixture_ext3_uuid: "ext3-uuid",
    good_fixture_bootstrapvz_hd00_sector63: "bootstrapvz-hd00-sector63",
    good_fixture_no_ena: "no-ena",
    good_fixture_no_nvme_initramfs: "no-nvme-initramfs",
    good_fixture_ubuntu_grub2_hybrid: "ubuntu-grub2-hybrid",
    good_fixture_suse_xen_and_default: "suse-xen-and-default",
    good_fixture_el6_separate_boot: "el6-separate-boot",
    good_fixture_amigen6_lvm: "amigen6-lvm",
    good_fixture_amazon_linux_i386: "amazon-linux-i386",
    good_fixture_ubuntu_default_saved: "ubuntu-default-saved",
    good_fixture_el6_resume_swap: "el6-resume-swap",
    good_fixture_amazon_linux_2018_stale_menulst: "amazon-linux-2018-stale-menulst",
}

/// Fixtures that vary a builder's style another fixture boots on both
/// buses (a hand-made menu.lst with or without `root`, a second entry as
/// default, ext3 found by UUID): their boot proves the reading, not the
/// bus, so they boot once on NVMe and, after their update, on IDE.
const VARIANTS: [&str; 4] = [
    "menulst-root-hd0",
    "menulst-noroot",
    "multi-default1",
    "ext3-uuid",
];

/// Import, inspect, migrate, boot; then day 2: the guest's own tool
/// updates its kernel in the instance's volume and the instance reboots.
fn good_fixture_migrates_boots_and_survives(name: &str) {
    let host = Host::new();
    let variant = VARIANTS.contains(&name);
    {
        let fx = fixture(name);
        let file = fixtures().0.join(fx["file"].as_str().unwrap());
        let before = sha256(&file);
        let ami = host.import(&fx);
        // inspect names the entry PV-GRUB boots (`default saved` included).
        let insp = host.json(&["inspect", &ami]);
        if let Some(title) = fx["default_title"].as_str() {
            assert_eq!(insp["default_title"], title, "{name}: {insp}");
        }
        assert_eq!(insp["kernel"], fx["kernel"], "{name}");

        // Launch the PV image on a PV type first: it boots as PV-GRUB would see it
        // (m1.small for a 32-bit image: m3 runs 64-bit PV guests only).
        let pv_type = if fx["architecture"] == "i386" {
            "m1.small"
        } else {
            "m3.medium"
        };
        let pv = host.run(&["launch", &ami, "--instance-type", pv_type]);
        assert!(
            pv.status.success(),
            "{name}: PV launch: {}",
            String::from_utf8_lossy(&pv.stdout)
        );

        let m = host.json(&["migrate", "--ami", &ami]);
        assert_eq!(m["source_image_id"], ami.as_str());
        let steps: Vec<&str> = m["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "snapshot",
                "inspect",
                "plan",
                "boot-config",
                "build",
                "upload",
                "register",
                "verify",
                "cleanup"
            ],
            "{name}"
        );
        let hvm = m["image_id"].as_str().unwrap().to_string();

        // The source image is untouched, byte for byte.
        let exported = host.state.path().join(format!("{name}.src.raw"));
        let ex = host.run(&["export", &ami, exported.to_str().unwrap()]);
        assert!(
            ex.status.success(),
            "{}",
            String::from_utf8_lossy(&ex.stderr)
        );
        assert_eq!(
            sha256(&exported),
            before,
            "{name}: the source image changed"
        );
        assert_eq!(sha256(&file), before, "{name}: the fixture file changed");

        let listed = host.json(&["list", "--virtualization", "hvm"]);
        let img = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["image_id"] == hvm.as_str())
            .unwrap()
            .clone();
        assert_eq!(img["virtualization_type"], "hvm");
        assert_eq!(img["root_device_name"], "/dev/xvda");
        assert_eq!(img["kernel_id"], Value::Null);
        assert_eq!(
            img["ena_support"],
            fx["drivers"].as_array().unwrap().iter().any(|d| d == "ena")
        );

        // PV on t2.micro is refused, the HVM result is accepted, and it really boots.
        let refused = host.run(&["launch", &ami, "--instance-type", "t2.micro"]);
        assert_eq!(refused.status.code(), Some(1), "{name}");
        let marker = format!("AMITOOL-ROOT-OK {name}");
        let i386 = fx["architecture"] == "i386";
        let nitro = !i386
            && fx["nvme_initramfs"] == true
            && fx["drivers"].as_array().unwrap().iter().any(|d| d == "ena");
        // On IDE, as a Xen HVM type attaches the root volume; the instance's
        // volume is day 2's when the image is not for Nitro. (A variant for
        // Nitro boots on IDE on day 2.)
        let ide_volume = (!(nitro && variant)).then(|| {
            let (log, volume) = boot_instance(&host, &hvm, "t2.micro", &marker);
            assert!(
                log.contains("AMITOOL-INITRAMFS-OK"),
                "{name}: no initramfs marker\n{log}"
            );
            assert!(log.contains(&marker), "{name}\n{log}");
            volume
        });

        // 32-bit code runs on the older HVM types only (t2 up to medium, m1, m3,
        // c1, c3): compat says so, and a Nitro type is refused.
        if i386 {
            let list = host.json(&["compat", "--virtualization", "hvm", "--arch", "i386"]);
            let ok: Vec<&str> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["instance_type"].as_str().unwrap())
                .collect();
            assert!(ok.contains(&"t2.micro"), "{name}: {ok:?}");
            for t in ["m5.large", "t3.micro", "t2.large", "c5.large"] {
                assert!(!ok.contains(&t), "{name}: {t} runs no i386: {ok:?}");
                let out = host.run(&[
                    "compat",
                    "--ami",
                    &hvm,
                    "--instance-type",
                    t,
                    "--output",
                    "json",
                ]);
                assert_eq!(out.status.code(), Some(1), "{name} on {t}");
                let c: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(c["compatible"], false, "{name} on {t}: {c}");
                assert!(
                    c["reasons"][0].as_str().unwrap().contains("i386"),
                    "{name} on {t}: {c}"
                );
            }
        }
        // On NVMe, as a Nitro type attaches the root volume.
        let volume = if nitro {
            let (nvme, volume) = boot_instance(&host, &hvm, "m5.large", &marker);
            assert!(nvme.contains(&marker), "{name}: no NVMe boot\n{nvme}");
            volume
        } else {
            let r = host.run(&["launch", &hvm, "--instance-type", "m5.large"]);
            assert_eq!(
                r.status.code(),
                Some(1),
                "{name}: a Nitro type must be refused"
            );
            ide_volume.expect("booted on IDE")
        };

        // Day 2, on an instance of the HVM image: the guest's own tool
        // installs a new kernel and removes the old one in the instance's
        // root volume, then the instance reboots: on NVMe and on IDE when
        // the image is for Nitro (a type change either way; a variant on
        // IDE, having booted on NVMe), else on IDE.
        let style = fx["style"].as_str().unwrap();
        let old_kernel = fx["hvm_kernel"].as_str().or(fx["kernel"].as_str()).unwrap();
        let old_initrd = match fx["hvm_kernel"].as_str() {
            Some(k) => day2::initrd_name(style, k.rsplit_once("vmlinuz-").unwrap().1),
            None => fx["initrd"].as_str().unwrap().to_string(),
        };
        let uuid = fx["uuid"].as_str().unwrap();
        let new_kernel = day2::kernel_upgrade(
            &volume,
            style,
            uuid,
            old_kernel,
            &old_initrd,
            fx["root_offset"].as_u64(),
        );
        let buses: &[DiskBus] = if nitro && !variant {
            &[DiskBus::Nvme, DiskBus::Ide]
        } else {
            &[DiskBus::Ide]
        };
        for &bus in buses {
            let reboot = volume.with_extension(format!("day2-{bus:?}.serial.log"));
            let q = qemu_boot(&volume, &reboot, &marker, Duration::from_secs(240), bus).unwrap();
            let log = std::fs::read_to_string(&reboot).unwrap_or_default();
            assert!(
                q.reached,
                "{name}: no reboot after its kernel update on {bus:?}\n{log}"
            );
            assert!(
                log.contains(&format!("BOOT_IMAGE={new_kernel} ")),
                "{name}: day 2 did not boot {new_kernel} on {bus:?}\n{log}"
            );
            assert!(
                log.contains("console=ttyS0"),
                "{name}: no serial console\n{log}"
            );
            if name == "ubuntu-default-saved" && bus == buses[0] {
                saved_default_survives(&volume, &new_kernel, &log, &marker, bus);
            }
        }
    }
}

/// A `default saved` guest after its kernel update: /boot/grub/default still
/// says 1, now the new kernel's recovery entry; then the guest's own
/// grub-set-default 0 (Debian grub-legacy's script, which grub-legacy-ec2
/// wraps), and the next boot is entry 0.
fn saved_default_survives(volume: &Path, new_kernel: &str, log: &str, marker: &str, bus: DiskBus) {
    assert!(
        log.contains("amitool: /boot/grub/default selects entry 1") && log.contains(" single"),
        "entry 1 after the update is the recovery entry\n{log}"
    );
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("grub-set-default");
    std::fs::write(
        &tool,
        day2::cat(volume, "/usr/sbin/grub-set-default-legacy-ec2")
            .expect("the guest's grub-set-default"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
    let out = Command::new("bash")
        .arg(&tool)
        .arg(format!("--root-directory={}", dir.path().display()))
        .arg("0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("boot/grub/default")).unwrap();
    assert_eq!(
        written,
        amitool::image::menulst::grub_set_default_text(0),
        "the tool's format"
    );
    day2::write(&day2::target(volume), "/boot/grub/default", &written);
    let again = volume.with_extension("day2-default0.serial.log");
    let q = qemu_boot(volume, &again, marker, Duration::from_secs(240), bus).unwrap();
    let log = std::fs::read_to_string(&again).unwrap_or_default();
    assert!(q.reached, "no boot after grub-set-default 0\n{log}");
    assert!(
        log.contains("amitool: /boot/grub/default selects entry 0")
            && log.contains(&format!("BOOT_IMAGE={new_kernel} "))
            && !log.contains(" single"),
        "grub-set-default 0 must boot entry 0\n{log}"
    );
}

/// The fixtures' initramfs waits for a `resume=` device for ever, as dracut
/// 004 (EL6, Amazon Linux 1) and systemd from v245 do: a PV name left on the
/// kernel line stops the boot; the UUID amitool writes does not.
#[test]
fn a_resume_device_by_a_xen_name_stops_the_boot_and_by_uuid_it_does_not() {
    let (dir, manifest) = fixtures();
    let fx = fixture("el6-resume-swap");
    let kernel = dir.join(manifest["kernel"].as_str().unwrap());
    let initrd = dir.join(manifest["initrd"].as_str().unwrap());
    let disk = dir.join(fx["file"].as_str().unwrap());
    let root = fx["uuid"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let boot = |resume: &str, wait: u64| {
        let log = work
            .path()
            .join(format!("{}.log", resume.replace('/', "_")));
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "pc",
                "-m",
                "512",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!("root=UUID={root} ro resume={resume} console=ttyS0"))
            .arg("-drive")
            .arg(format!(
                "if=none,id=d,file={},format=raw,snapshot=on",
                disk.display()
            ))
            .args(["-device", "nvme,drive=d,serial=amitoolroot"])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(wait) && child.try_wait().unwrap().is_none() {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("AMITOOL-ROOT-OK")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let took = std::time::Instant::now();
    let by_uuid = boot("UUID=0a3f1f32-5f2b-4c6e-9a54-1d0c0a0000f2", 120);
    let took = took.elapsed().as_secs();
    assert!(
        by_uuid.contains(
            "AMITOOL-RESUME-OK UUID=0a3f1f32-5f2b-4c6e-9a54-1d0c0a0000f2 is /dev/nvme0n1p2"
        ) && by_uuid.contains("AMITOOL-ROOT-OK el6-resume-swap"),
        "{by_uuid}"
    );
    // As long again as the boot by UUID took, and 10 s more: still waiting.
    let by_name = boot("/dev/xvde2", took + 10);
    assert!(
        by_name.contains("AMITOOL-RESUME-WAIT /dev/xvde2") && !by_name.contains("AMITOOL-ROOT-OK"),
        "{by_name}"
    );
}

/// Launch `image` on `itype` and boot it under QEMU until `marker`: its
/// serial log and the instance's root volume.
fn boot_instance(host: &Host, image: &str, itype: &str, marker: &str) -> (String, PathBuf) {
    let out = host.run(&[
        "launch",
        image,
        "--instance-type",
        itype,
        "--qemu",
        "--expect",
        marker,
        "--timeout",
        "240",
        "--output",
        "json",
    ]);
    let boot: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "launch {image} on {itype}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let serial = PathBuf::from(boot["qemu"]["serial_log"].as_str().unwrap_or_default());
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    assert_eq!(boot["boots"], true, "{image} on {itype}: {boot}\n{log}");
    let name = serial.file_name().unwrap().to_str().unwrap();
    let volume = serial.with_file_name(name.replace(".serial.log", ".raw"));
    (log, volume)
}

/// Boot `image` on `itype` under QEMU until `marker`; its serial log.
fn boot_log(host: &Host, image: &str, itype: &str, marker: &str) -> String {
    boot_instance(host, image, itype, marker).0
}

#[test]
fn broken_fixtures_are_refused_with_a_reason() {
    let host = Host::new();
    let broken: Vec<Value> = fixture_list()
        .into_iter()
        .filter(|f| f["expected"] == "refused")
        .collect();
    assert!(broken.len() >= 4, "too few broken fixtures");
    for fx in broken {
        let name = fx["name"].as_str().unwrap();
        // What is no disk image at all (random bytes, a truncated
        // filesystem) is refused at import, as the AWS backend refuses it.
        if [
            "not-a-filesystem",
            "truncated",
            "xfs-root-hd0",
            "btrfs-root-hd00",
        ]
        .contains(&name)
        {
            let file = fixtures().0.join(fx["file"].as_str().unwrap());
            let out = host.run(&[
                "import",
                file.to_str().unwrap(),
                "--virtualization",
                "pv",
                "--kernel",
                &kernel_for(host.region, "hd0", "x86_64"),
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
            let why = match name {
                "truncated" => {
                    "truncated: it spans 67108864 bytes but the image holds only 33554432"
                }
                "xfs-root-hd0" => {
                    "is XFS: amitool reads and edits ext2/3/4 filesystems only; convert"
                }
                "btrfs-root-hd00" => "at byte 1048576 of",
                _ => "no ext2/3/4 filesystem",
            };
            if name == "btrfs-root-hd00" {
                assert!(
                    err.contains("is Btrfs: amitool reads and edits ext2/3/4"),
                    "{err}"
                );
            }
            assert!(err.contains(why), "{name}: {err}");
            continue;
        }
        let ami = host.import(&fx);
        let out = host.run(&["migrate", "--ami", &ami]);
        let err = String::from_utf8_lossy(&out.stderr);
        // The guest cannot be converted: exit 1, its problem named.
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.starts_with("amitool: ") && err.trim_end().lines().count() == 1,
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        if fx["reason"].as_str().unwrap_or("").contains("PV-only") {
            // It boots as PV, as it did; only its HVM copy could not.
            assert!(
                err.contains("PV-only") && err.contains("vmlinuz-3.0.76-0.11-xen"),
                "{name}: {err}"
            );
            let pv = host.run(&["launch", &ami, "--instance-type", "m3.medium"]);
            assert!(pv.status.success(), "{name}");
            continue;
        }
        let launch = host.run(&[
            "launch",
            &ami,
            "--instance-type",
            "m3.medium",
            "--output",
            "json",
        ]);
        assert_eq!(launch.status.code(), Some(1), "{name}");
        let report: Value = serde_json::from_slice(&launch.stdout).unwrap();
        assert_eq!(report["boots"], false, "{name}");
        assert!(!report["reasons"].as_array().unwrap().is_empty(), "{name}");
        // Nothing was registered for a refused migration.
        let hvm = host.json(&["list", "--virtualization", "hvm"]);
        assert!(hvm.as_array().unwrap().is_empty(), "{name}: {hvm}");
    }
}

#[test]
fn migrating_an_instance_leaves_no_temporary_snapshot() {
    let host = Host::new();
    let fx = fixture_list()
        .into_iter()
        .find(|f| f["expected"] == "boots")
        .unwrap();
    let ami = host.import(&fx);
    let launch = host.json(&["launch", &ami, "--instance-type", "m1.small"]);
    let inst = launch["instance_id"].as_str().unwrap().to_string();
    let snaps = |h: &Host| {
        std::fs::read_dir(h.state.path().join("us-east-1/snapshots"))
            .unwrap()
            .count()
    };
    let before = snaps(&host);
    let m = host.json(&["migrate", "--instance", &inst]);
    assert_eq!(m["source_image_id"], ami.as_str());
    // The instance is reported and tagged as what was migrated.
    assert_eq!(m["source_instance_id"], inst.as_str());
    let hvm = m["image_id"].as_str().unwrap();
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(
            host.state
                .path()
                .join(format!("us-east-1/images/{hvm}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["tags"]["amitool:source-instance"],
        inst.as_str(),
        "{record}"
    );
    // One new snapshot: the HVM image's root; the instance's snapshot is gone.
    assert_eq!(
        snaps(&host),
        before + 2,
        "json and raw of exactly one new snapshot"
    );
    // It was running: the result says its snapshot is crash-consistent.
    assert!(
        m["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("was running")),
        "{m}"
    );
    let state = |h: &Host| -> String {
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(
                h.state
                    .path()
                    .join(format!("us-east-1/instances/{inst}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        rec["state"].as_str().unwrap().to_string()
    };
    assert_eq!(state(&host), "running");
    let warned = host.run(&["migrate", "--instance", &inst, "--name", "warned"]);
    let err = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{err}");
    assert!(
        err.contains(&format!("warning: {inst} is running")) && err.contains("--stop-source"),
        "{err}"
    );
    // --stop-source: stopped for the snapshot, started again, no warning.
    let stopped = host.run(&[
        "migrate",
        "--instance",
        &inst,
        "--name",
        "stopped-first",
        "--stop-source",
        "--output",
        "json",
    ]);
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(stopped.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let m: Value = serde_json::from_slice(&stopped.stdout).unwrap();
    let steps: Vec<&str> = m["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(&steps[..2], ["restart source", "snapshot"], "{m}");
    assert_eq!(state(&host), "running");
}

#[test]
fn local_list_kernels_and_compat_run_unchanged() {
    let host = Host::new();
    let kernels = host.json(&["kernels"]);
    assert!(kernels
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["name"] == "pv-grub-hd0_1.05-x86_64.gz"));
    let pv = host.json(&["compat", "--virtualization", "pv"]);
    assert!(pv
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["supported_virtualization_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "paravirtual")));
    let empty = host.json(&["list"]);
    assert!(empty
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["image_type"] == "kernel"));
}

#[test]
fn bad_input_is_a_one_line_error() {
    let host = Host::new();
    for (args, code) in [
        (
            vec![
                "import",
                "/nonexistent.img",
                "--virtualization",
                "pv",
                "--kernel",
                "aki-919dcaf8",
            ],
            2,
        ),
        (vec!["migrate", "--ami", "ami-zzz"], 2),
        (vec!["migrate", "--ami", "ami-0123456789abcdef0"], 2),
        (
            vec![
                "launch",
                "ami-0123456789abcdef0",
                "--instance-type",
                "m3.medium",
            ],
            2,
        ),
        (
            vec!["export", "ami-0123456789abcdef0", "/tmp/never-written.raw"],
            2,
        ),
    ] {
        let out = host.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    assert!(!Path::new("/tmp/never-written.raw").exists());
}

fn fixture(name: &str) -> Value {
    fixture_list()
        .into_iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// Export an image of `host` to a new file and return its bytes.
fn export_bytes(host: &Host, image_id: &str, tag: &str) -> Vec<u8> {
    let path = host.state.path().join(format!("{image_id}.{tag}.raw"));
    let out = host.run(&["export", image_id, path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

/// Every file of a filesystem, extracted with debugfs rdump.
fn extract(target: &str, dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("debugfs")
        .args(["-R", &format!("rdump / {}", dir.display()), target])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = format!("/{}", p.strip_prefix(dir).unwrap().display());
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

#[test]
fn the_copy_differs_from_the_source_only_in_the_listed_lines() {
    let host = Host::new();
    for name in [
        "menulst-noroot",
        "grubconf-symlink",
        "ubuntu-grub2-hybrid",
        "el6-separate-boot",
        "amigen6-lvm",
    ] {
        let fx = fixture(name);
        let ami = host.import(&fx);
        let m = host.json(&["migrate", "--ami", &ami]);
        let hvm = m["image_id"].as_str().unwrap().to_string();
        let changes = m["changes"].as_array().unwrap();
        assert!(!changes.is_empty(), "{name}");
        let src = fixtures().0.join(fx["file"].as_str().unwrap());
        let disk = host.state.path().join(format!("{name}.hvm.raw"));
        assert!(host
            .run(&["export", &hvm, disk.to_str().unwrap()])
            .status
            .success());
        let work = tempfile::tempdir().unwrap();
        // Every filesystem of the guest, its files under their guest paths:
        // a separate /boot (partition 1) and root (after it; in an LVM2
        // volume at the offset LVM's report gave the fixture).
        let guest_files = |disk: &Path, first: u64, tag: &str| {
            let at = |o: u64| format!("{}?offset={o}", disk.display());
            let mut files = extract(&at(first), &work.path().join(format!("{tag}-1")));
            if fx["separate_boot"] == true {
                files = files
                    .into_iter()
                    .map(|(p, b)| (format!("/boot{p}"), b))
                    .collect();
                let root = fx["root_offset"].as_u64().unwrap();
                files.extend(extract(&at(root), &work.path().join(format!("{tag}-2"))));
            }
            files
        };
        let first = fx["partition_start_sector"].as_u64().map_or(0, |s| s * 512);
        let before = guest_files(&src, first, "src");
        let after = guest_files(&disk, 1 << 20, "hvm");
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "{name}: the same files"
        );
        for (path, old) in &before {
            let new = &after[path];
            let listed: Vec<&Value> = changes
                .iter()
                .filter(|c| c["file"] == path.as_str())
                .collect();
            if listed.is_empty() {
                assert!(old == new, "{name}: {path} changed but is not listed");
                continue;
            }
            let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
            let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
            // Replay the listed changes on the old text: it gives the new one.
            let mut replay: Vec<String> = old.iter().map(|l| l.to_string()).collect();
            let mut inserted = 0;
            for c in &listed {
                let line = c["line"].as_u64().unwrap() as usize - 1 + inserted;
                if c["before"] == "" {
                    replay.insert(line, c["after"].as_str().unwrap().to_string());
                    inserted += 1;
                } else {
                    assert_eq!(
                        replay[line],
                        c["before"].as_str().unwrap(),
                        "{name}: {path}"
                    );
                    replay[line] = c["after"].as_str().unwrap().to_string();
                }
            }
            assert_eq!(replay, new, "{name}: {path}");
        }
        let disk = std::fs::read(&disk).unwrap();
        assert_eq!(&disk[510..512], &[0x55, 0xAA]);
    }
}

#[test]
fn fix_guest_rewrites_fstab_in_the_copy_and_still_boots() {
    let host = Host::new();
    let fx = fixture("menulst-noroot");
    let file = fixtures().0.join(fx["file"].as_str().unwrap());
    let before = sha256(&file);
    let ami = host.import(&fx);
    let m = host.json(&["migrate", "--ami", &ami, "--fix-guest"]);
    let uuid = fx["uuid"].as_str().unwrap();
    let findings: Vec<&str> = m["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // fstab's root line is part of the boot configuration now, fixed with or without --fix-guest.
    assert!(
        m["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["file"] == "/etc/fstab"
                && c["before"] == "/dev/sda1\t/\t ext3\tdefaults\t0 0"),
        "{findings:?} {}",
        m["changes"]
    );
    let hvm = m["image_id"].as_str().unwrap().to_string();
    let path = host.state.path().join("fixed.raw");
    assert!(host
        .run(&["export", &hvm, path.to_str().unwrap()])
        .status
        .success());
    let target = format!("{}?offset=1048576", path.display());
    let fstab = Command::new("debugfs")
        .args(["-R", "cat /etc/fstab", &target])
        .output()
        .unwrap();
    let fstab = String::from_utf8_lossy(&fstab.stdout);
    assert!(fstab.starts_with(&format!("UUID={uuid}\t/\t")), "{fstab}");
    let fsck = Command::new("e2fsck")
        .args(["-fn", &target])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(sha256(&file), before);
    let exported_src = export_bytes(&host, &ami, "src");
    assert_eq!(
        exported_src,
        std::fs::read(&file).unwrap(),
        "the source image changed"
    );
    let marker = "AMITOOL-ROOT-OK menulst-noroot";
    let boot = host.json(&[
        "launch",
        &hvm,
        "--instance-type",
        "t2.micro",
        "--qemu",
        "--expect",
        marker,
        "--timeout",
        "240",
    ]);
    assert_eq!(boot["boots"], true, "{boot}");
}

#[test]
fn migrate_verify_boots_the_result_under_qemu() {
    let host = Host::new();
    let ami = host.import(&fixture("grubconf-symlink"));
    let m = host.json(&[
        "migrate",
        "--ami",
        &ami,
        "--verify",
        "--verify-expect",
        "AMITOOL-ROOT-OK grubconf-symlink",
        "--verify-timeout",
        "240",
    ]);
    let last = m["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "verify-boot", "{m}");
    let failed = host.run(&[
        "migrate",
        "--ami",
        &ami,
        "--name",
        "grubconf-symlink-second",
        "--verify",
        "--verify-expect",
        "NEVER-PRINTED",
        // Only the timeout's end matters here, not how far the boot got.
        "--verify-timeout",
        "2",
    ]);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(err.contains("the image stays registered"), "{err}");
}

#[test]
fn a_fleet_migrates_concurrently_and_sums_up() {
    let host = Host::new();
    let good1 = host.import(&fixture("ext3-uuid"));
    let good2 = host.import(&fixture("no-ena"));
    let broken = host.import(&fixture("missing-kernel"));
    let list = host.state.path().join("fleet.txt");
    std::fs::write(
        &list,
        format!("# the fleet\n{good1}\n\n{broken}  # refused\n"),
    )
    .unwrap();
    let out = host.run(&[
        "migrate",
        "--ami",
        &good2,
        "--from-file",
        list.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        let ok = r["error"].is_null();
        assert_eq!(ok, r["source"] != broken.as_str(), "{r}");
        assert_eq!(r["image_id"].is_string(), ok, "{r}");
        // Every item, the refused one too, names its migration (its journal).
        let mid = r["migration_id"].as_str().unwrap_or_else(|| panic!("{r}"));
        assert!(mid.starts_with("mig-"), "{r}");
        assert_eq!(r["verified"], false, "{r}");
        assert!(r["findings"].is_array(), "{r}");
    }
    // no-ena's result says so among its findings.
    let no_ena = rows.iter().find(|r| r["source"] == good2.as_str()).unwrap();
    assert!(
        no_ena["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("EnaSupport not set")),
        "{no_ena}"
    );
    let hvm = host.json(&["list", "--virtualization", "hvm"]);
    assert_eq!(hvm.as_array().unwrap().len(), 2);

    // Without a terminal, each item says when it starts (its journal) and
    // ends, one line each; the items' steps do not interleave unnamed.
    let good3 = host.import(&fixture("multi-default1"));
    let named = Command::new(bin())
        .args(["--backend", "local", "--region", host.region, "--state-dir"])
        .arg(host.state.path())
        .args([
            "migrate", "--ami", &good3, "--ami", &broken, "--output", "json",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&named.stderr);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" started (journal: "))
            .count(),
        2,
        "{said}"
    );
    for n in ["[1/2] ", "[2/2] "] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("amitool: {n}"))),
            "{said}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("amitool: [") && l.contains(&format!("{broken}: failed: "))),
        "{said}"
    );
    // Each finished step is a line named by its item (the upload says its bytes).
    let steps: Vec<&&str> = lines.iter().filter(|l| l.contains(" done in ")).collect();
    assert!(
        steps
            .iter()
            .any(|l| l.starts_with(&format!("amitool: {good3}: upload done in "))),
        "{said}"
    );
    assert!(
        steps.iter().all(|l| [&good3, &broken]
            .iter()
            .any(|i| l.starts_with(&format!("amitool: {i}: ")))),
        "{said}"
    );

    std::fs::write(&list, "ami-0123456789abcdef0\nnot-an-id\n").unwrap();
    let bad = host.run(&["migrate", "--from-file", list.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

/// A separate /boot and an LVM2 root are found where the fixture builder put
/// them (for the LVM volume: where LVM's own report said rootVol's extents
/// are), and every partition is kept, in its slot, on the HVM copy.
#[test]
fn separate_boot_and_lvm_roots_are_found_and_every_partition_kept() {
    let host = Host::new();
    for name in ["el6-separate-boot", "amigen6-lvm"] {
        let fx = fixture(name);
        let ami = host.import(&fx);
        let insp = host.json(&["inspect", &ami]);
        let mounts = insp["mounts"].as_array().unwrap();
        let root = mounts.iter().find(|m| m["point"] == "/").unwrap();
        let boot = mounts.iter().find(|m| m["point"] == "/boot").unwrap();
        assert_eq!(root["offset"], fx["root_offset"], "{name}");
        assert_eq!(root["uuid"], fx["root_uuid"], "{name}");
        assert_eq!(boot["uuid"], fx["uuid"], "{name}");
        assert_eq!(boot["partition"], 1, "{name}");
        assert_eq!(
            insp["boot"]["config"]["grub_path"], "/grub/grub.conf",
            "{name}"
        );
        if name == "amigen6-lvm" {
            assert_eq!(root["logical_volume"], "VolGroup00/rootVol");
        }
        let m = host.json(&["migrate", "--ami", &ami]);
        let disk = export_bytes(&host, m["image_id"].as_str().unwrap(), "hvm");
        let src = std::fs::read(fixtures().0.join(fx["file"].as_str().unwrap())).unwrap();
        // Both partitions were at 1 MiB and after: they stay where they were,
        // byte for byte but for the listed edits' blocks; the table keeps types.
        assert_eq!(
            disk[446 + 16 + 4],
            src[446 + 16 + 4],
            "{name}: partition 2's type"
        );
        assert_eq!(
            &disk[446 + 8..446 + 16],
            &src[446 + 8..446 + 16],
            "{name}: partition 1"
        );
        assert_eq!(
            &disk[462 + 8..462 + 16],
            &src[462 + 8..462 + 16],
            "{name}: partition 2"
        );
        if name == "amigen6-lvm" {
            // The physical volume's label and metadata area are copied as they are.
            let p2 = 100352 * 512;
            assert_eq!(
                &disk[p2..p2 + (1 << 20)],
                &src[p2..p2 + (1 << 20)],
                "{name}: LVM metadata"
            );
        }
    }
}

/// Every file of the state directory with its size and modification time.
fn state_snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// `--dry-run` on the local backend reads the sources where they lie and
/// prints one plan per item; the state directory is not touched at all.
#[test]
fn a_dry_run_plans_every_item_and_touches_nothing() {
    let host = Host::new();
    let good = host.import(&fixture("amigen6-lvm"));
    let bad = host.import(&fixture("missing-kernel"));
    let before = state_snapshot(host.state.path());
    let one = host.json(&[
        "migrate",
        "--dry-run",
        "--ami",
        &good,
        "--name",
        "rehearsal",
    ]);
    assert_eq!(one["refused"], Value::Null, "{one}");
    assert_eq!(one["name"], "rehearsal");
    assert_eq!(one["boot"]["grub_path"], "/grub/grub.conf", "{one}");
    assert_eq!(one["layout"]["partitions"].as_array().unwrap().len(), 2);
    assert!(!one["changes"].as_array().unwrap().is_empty());
    let out = host.run(&[
        "migrate",
        "--dry-run",
        "--ami",
        &good,
        "--ami",
        &bad,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "one item would be refused");
    let plans: Value = serde_json::from_slice(&out.stdout).unwrap();
    let plans = plans.as_array().unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0]["source_image_id"], good.as_str());
    assert!(
        plans[1]["refused"]
            .as_str()
            .unwrap()
            .contains("vmlinuz-6.1.0-99-amd64"),
        "{}",
        plans[1]
    );
    let text = host.run(&["migrate", "--dry-run", "--ami", &good]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("would change: /boot/grub/grub.conf line 5"),
        "{text}"
    );
    assert_eq!(
        state_snapshot(host.state.path()),
        before,
        "a dry run wrote to the state directory"
    );
    let listed = host.json(&["list"]);
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["virtualization_type"] == "hvm"),
        "{listed}"
    );
}

/// The local backend refuses what EC2 refuses (and what nothing would boot),
/// so a rehearsal shows the real failures: tiny disks, an HVM disk without
/// an MBR, names EC2 would not take or already in use; a second migration of
/// the same image names the first result; --resume of a finished migration
/// makes nothing, and --cleanup leaves it able to report its image.
#[test]
fn rehearsals_refuse_what_ec2_refuses_and_reruns_make_nothing() {
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let kernel = kernel_for(host.region, "hd0", "x86_64");
    let file = fixtures().0.join("ext3-uuid.img");
    let import = |path: &Path, extra: &[&str]| {
        let mut a = vec!["import", path.to_str().unwrap()];
        a.extend(extra);
        host.run(&a)
    };
    let pv = ["--virtualization", "pv", "--kernel", kernel.as_str()];
    let refused = |out: Output, why: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{why}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(why), "{why}: {err}");
    };
    for (bytes, name) in [(0usize, "zero.img"), (1, "one.img")] {
        let p = dir.path().join(name);
        std::fs::write(&p, vec![0u8; bytes]).unwrap();
        refused(import(&p, &pv), &format!("is {bytes} bytes"));
    }
    refused(import(&file, &["--virtualization", "hvm"]), "no MBR");
    // A menu GRUB cannot read (a NUL byte: GRUB stops reading there; a
    // device name never closed) imports, as EC2 would, but is refused for
    // migration with the line named.
    let menu = {
        let out = Command::new("debugfs")
            .args(["-R", "cat /boot/grub/menu.lst"])
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(menu.contains("\t/boot/vmlinuz"), "{menu}");
    for (name, text, why) in [
        (
            "with-a-nul",
            menu.replacen("default", "def\0ault", 1),
            "a NUL byte, where GRUB stops reading",
        ),
        (
            "with-an-unclosed-device",
            menu.replace("\t/boot/vmlinuz", "\t(hd0,0/boot/vmlinuz"),
            "opens a device name it never closes",
        ),
    ] {
        let img = dir.path().join(format!("{name}.img"));
        std::fs::copy(&file, &img).unwrap();
        let local = dir.path().join(format!("{name}.lst"));
        std::fs::write(&local, &text).unwrap();
        let cmds = dir.path().join("cmds");
        std::fs::write(
            &cmds,
            format!(
                "cd /boot/grub\nrm menu.lst\nwrite {} menu.lst\n",
                local.display()
            ),
        )
        .unwrap();
        assert!(Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&img)
            .output()
            .unwrap()
            .status
            .success());
        let mut with = pv.to_vec();
        with.extend(["--name", name]);
        assert!(import(&img, &with).status.success());
        let id: String = host
            .json(&["list"])
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["image_id"]
            .as_str()
            .unwrap()
            .into();
        // The guest's own problem: it failed while running (exit 1), nothing made.
        for what in ["/boot/grub/menu.lst line ", why] {
            let out = host.run(&["migrate", "--ami", &id]);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(out.status.code(), Some(1), "{what}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(what), "{what}: {err}");
        }
    }
    let mut with = pv.to_vec();
    with.extend(["--name", "a\nb"]);
    refused(import(&file, &with), "holds '\\n'");
    let long = "x".repeat(129);
    let mut with = pv.to_vec();
    with.extend(["--name", &long]);
    refused(import(&file, &with), "is 129 characters");
    let mut with = pv.to_vec();
    with.extend(["--name", "dup"]);
    let first = import(&file, &with);
    assert!(first.status.success());
    refused(import(&file, &with), "already in use by ami-");
    let ami: String = host
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "dup")
        .unwrap()["image_id"]
        .as_str()
        .unwrap()
        .into();

    let m = host.json(&["migrate", "--ami", &ami]);
    let (mid, hvm) = (
        m["migration_id"].as_str().unwrap(),
        m["image_id"].as_str().unwrap(),
    );
    let snapshots = || {
        std::fs::read_dir(host.state.path().join("us-east-1/snapshots"))
            .unwrap()
            .count()
    };
    let before = snapshots();
    refused(
        host.run(&["migrate", "--ami", &ami]),
        &format!("was already migrated: {hvm} (dup-hvm); pass --name"),
    );
    let again = host.json(&["migrate", "--resume", mid]);
    assert_eq!(again["image_id"], hvm);
    assert!(again["findings"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("already finished: {hvm}")));
    assert_eq!(
        snapshots(),
        before,
        "a finished migration's --resume made a snapshot"
    );
    host.json(&["migrate", "--cleanup", mid]);
    assert_eq!(host.json(&["migrate", "--resume", mid])["image_id"], hvm);
    // Another copy is asked for by name; a name already used is refused before any data moves.
    let other = host.json(&["migrate", "--ami", &ami, "--name", "dup-second"]);
    assert_ne!(other["image_id"], hvm);
    let before = snapshots();
    refused(
        host.run(&["migrate", "--ami", &ami, "--name", "dup"]),
        "already in use by ami-",
    );
    assert_eq!(snapshots(), before, "a refused name made a snapshot");
}

/// On an 80-column terminal (a pty made by script(1)), tables fit: no line
/// is wider, `list` prints one row per image (the one region left out, long
/// names cut with … but still told apart), and no id is split or cut.
#[test]
fn tables_fit_an_80_column_terminal_without_splitting_ids() {
    let host = Host::new();
    let mut names = vec![];
    for (i, fx) in [
        "ext3-uuid",
        "no-ena",
        "missing-kernel",
        "no-menulst",
        "multi-default1",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("fleet-{i}-a-long-descriptive-image-name-from-the-builder-{fx}");
        let kernel = kernel_for(host.region, "hd0", "x86_64");
        let file = fixtures().0.join(format!("{fx}.img"));
        let img = host.json(&[
            "import",
            file.to_str().unwrap(),
            "--virtualization",
            "pv",
            "--kernel",
            &kernel,
            "--name",
            &name,
        ]);
        names.push((img["image_id"].as_str().unwrap().to_string(), name));
    }
    let in_pty = |args: &str| {
        let cmd = format!(
            "stty cols 80 rows 50; {} --backend local --no-progress --region us-east-1 --state-dir {} {args}",
            bin(),
            host.state.path().display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    let list = in_pty("list");
    for l in list.lines() {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}\n{list}",
            l.chars().count()
        );
    }
    // a header and one row per image: the 5 imported and the region's 6 AKIs
    assert_eq!(list.lines().count(), 1 + names.len() + 6, "{list}");
    assert!(
        !list.contains(host.region),
        "one region is left out:\n{list}"
    );
    for (i, (id, name)) in names.iter().enumerate() {
        let row = list
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} split or cut\n{list}"));
        assert!(
            row.contains('…') && !row.contains(name.as_str()),
            "{name} cut:\n{list}"
        );
        assert!(
            row.contains(&format!("fleet-{i}-")),
            "{name} told apart:\n{list}"
        );
    }
    let insp = in_pty(&format!("inspect {}", names[2].0));
    for l in insp.lines().filter(|l| {
        !l.starts_with("runs on")
            && !l.starts_with("change:")
            && !l.starts_with("finding:")
            && !l.starts_with("boot:")
    }) {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}\n{insp}",
            l.chars().count()
        );
    }
    assert!(insp.contains("/boot/vmlinuz-6.1.0-99-amd64"), "{insp}");
    // A pipe gets one record a line, never wrapped or cut.
    let piped = host.run(&["list"]);
    let piped = String::from_utf8_lossy(&piped.stdout);
    assert_eq!(piped.lines().count(), 1 + names.len() + 6, "{piped}");
    for (_, name) in &names {
        assert!(
            piped.contains(name.as_str()),
            "{name} whole in a pipe:\n{piped}"
        );
    }
}

/// `migrations` lists the journals; `migrations rm` removes a finished one
/// only.
#[test]
fn migrations_lists_journals_and_removes_only_finished_ones() {
    let host = Host::new();
    let good = host.import(&fixture("ext3-uuid"));
    let bad = host.import(&fixture("missing-kernel"));
    let m = host.json(&["migrate", "--ami", &good]);
    let _ = host.run(&["migrate", "--ami", &bad]);
    let list = host.json(&["migrations"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    let done = rows.iter().find(|r| r["state"] == "done").unwrap();
    let failed = rows.iter().find(|r| r["state"] == "failed").unwrap();
    assert_eq!(done["image_id"], m["image_id"]);
    assert_eq!(failed["source"], bad.as_str());
    let refused = host.run(&["migrations", "rm", failed["migration_id"].as_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    host.json(&["migrations", "rm", done["migration_id"].as_str().unwrap()]);
    assert_eq!(host.json(&["migrations"]).as_array().unwrap().len(), 1);
}

/// Without a terminal (cron, CI) and without --no-progress, a migration says
/// it started (its id and journal) and prints one plain line per step.
#[test]
fn a_log_gets_the_migration_id_first_and_a_line_per_step() {
    let host = Host::new();
    let ami = host.import(&fixture("ext3-uuid"));
    let out = Command::new(bin())
        .args(["--backend", "local", "--region", host.region, "--state-dir"])
        .arg(host.state.path())
        .args(["migrate", "--ami", &ami])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("amitool: migration mig-") && lines[0].contains("started (journal: "),
        "{err}"
    );
    for step in ["snapshot", "inspect", "build", "boot-config", "register"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("amitool: {step} done in "))),
            "{step}: {err}"
        );
    }
    // A QEMU boot says what it waits for, and for how long at most (here
    // too short for the boot: the saying is the point, good fixtures boot).
    let m: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("amitool: register done in "))
        .collect();
    let hvm = m[0]
        .split_whitespace()
        .find(|w| w.starts_with("ami-"))
        .unwrap_or_else(|| panic!("{err}"));
    let boot = Command::new(bin())
        .args(["--backend", "local", "--region", host.region, "--state-dir"])
        .arg(host.state.path())
        .args([
            "launch",
            hvm,
            "--instance-type",
            "t2.micro",
            "--qemu",
            "--expect",
            "AMITOOL-ROOT-OK ext3-uuid",
            "--timeout",
            "1",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&boot.stderr);
    assert_eq!(boot.status.code(), Some(1), "{said}");
    assert!(
        said.lines().any(|l| l
            == format!(
                "amitool: waiting for \"AMITOOL-ROOT-OK ext3-uuid\" on the serial console of {hvm} under QEMU (up to 1 s)"
            )),
        "{said}"
    );
}

/// The local host ends its instances as EC2 does: the state says
/// terminated, the root volume is gone, a second terminate changes nothing,
/// and a terminated instance cannot be migrated; an unknown id ends none.
#[test]
fn the_local_host_terminates_its_instances() {
    let host = Host::new();
    let fx = fixture_list()
        .into_iter()
        .find(|f| f["expected"] == "boots")
        .unwrap();
    let ami = host.import(&fx);
    let a = host.json(&["launch", &ami, "--instance-type", "m1.small"])["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = host.json(&["launch", &ami, "--instance-type", "m1.small"])["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let volumes = |h: &Host| {
        std::fs::read_dir(h.state.path().join("us-east-1/volumes"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    };
    assert_eq!(volumes(&host), 2);
    // `instances` lists both, PV, with a successor from the built-in table.
    let listed = host.json(&["instances", "--virtualization", "pv", "--offline"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for i in listed {
        assert_eq!(i["instance_type"], "m1.small", "{i}");
        assert_eq!(i["state"], "running", "{i}");
        assert_eq!(i["retired_family"], true, "{i}");
        assert_eq!(i["instance_store"], 1, "{i}");
        assert_eq!(i["successor_type"], "t3.small", "{i}");
        assert_eq!(i["volumes"].as_array().unwrap().len(), 1, "{i}");
    }
    assert!(host
        .json(&["instances", "--virtualization", "hvm"])
        .as_array()
        .unwrap()
        .is_empty());
    let bad = host.run(&["instances", "--successor-family", "M5;"]);
    assert_eq!(bad.status.code(), Some(2));
    let unknown = host.run(&["terminate", &a, "i-0123456789abcdef0"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(volumes(&host), 2, "an unknown id ends none");
    let ended = host.json(&["terminate", &a, &b]);
    let ended = ended.as_array().unwrap();
    assert_eq!(ended.len(), 2);
    for e in ended {
        assert_eq!(e["previous_state"], "running", "{e}");
        assert_eq!(e["state"], "terminated", "{e}");
    }
    assert_eq!(volumes(&host), 0, "the root volumes went with them");
    let stopped = host.json(&["instances", "--state", "running"]);
    assert!(stopped.as_array().unwrap().is_empty(), "{stopped}");
    let again = host.json(&["terminate", &a]);
    assert_eq!(again[0]["previous_state"], "terminated");
    let m = host.run(&["migrate", "--instance", &a]);
    let err = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(2), "{err}");
    assert!(err.contains("is terminated"), "{err}");
}

/// What a run killed mid-write leaves (kill -9 between a file's write and
/// its rename, or while it made a snapshot and the image over it) is
/// removed by the next run, before anything reads the state; what a live
/// run is writing stays.
#[test]
fn half_written_files_of_a_killed_run_are_swept() {
    let host = Host::new();
    let fx = fixture_list()
        .into_iter()
        .find(|f| f["expected"] == "boots")
        .unwrap();
    let kept = host.import(&fx);
    let region = host.state.path().join("us-east-1");
    let snaps = region.join("snapshots");
    let dead = 999_999_999u32; // above the kernel's pid_max: never alive
    let me = std::process::id();
    let image_over = |snap: &str| {
        format!(r#"{{"image_id":"ami-0000000000000000f","name":"x","root_snapshot_id":"{snap}"}}"#)
    };
    let left = [
        snaps.join(format!("snap-0000000000000000a.json.{dead}.tmp")),
        snaps.join(format!("snap-0000000000000000b.raw.{dead}.partial")),
        // A disk with neither record nor marker: a removal cut short.
        snaps.join("snap-0000000000000000c.raw"),
        // A dead import's snapshot and the image it registered over it.
        snaps.join(format!("snap-0000000000000000f.{dead}.pending")),
        snaps.join("snap-0000000000000000f.raw"),
        snaps.join("snap-0000000000000000f.json"),
        region.join("images/ami-0000000000000000f.json"),
    ];
    for p in &left {
        std::fs::write(p, b"half").unwrap();
    }
    std::fs::write(&left[6], image_over("snap-0000000000000000f")).unwrap();
    let live = [
        snaps.join(format!("snap-0000000000000000d.json.{me}.tmp")),
        // A live import's marker, its disk and the record still to come.
        snaps.join(format!("snap-0000000000000000e.{me}.pending")),
        snaps.join("snap-0000000000000000e.raw"),
    ];
    for p in &live {
        std::fs::write(p, b"being written").unwrap();
    }

    host.json(&["list"]);
    for p in &left {
        assert!(!p.exists(), "{} was left", p.display());
    }
    for p in &live {
        assert!(p.exists(), "a live writer's {} was removed", p.display());
    }
    assert_eq!(machines(&host), vec![kept]);
}

/// The ids of the machine images `list` shows (not the PV-GRUB kernels).
fn machines(host: &Host) -> Vec<String> {
    host.json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["image_type"] == "machine")
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect()
}

/// kill -9 in the middle of an import (its snapshot written, its image not
/// yet): the next run finds neither a snapshot nor an image of it, and a
/// new import of the same file under the same name works.
#[test]
fn an_import_killed_mid_way_leaves_nothing() {
    let host = Host::new();
    let fx = fixture("menulst-noroot");
    let file = fixtures().0.join(fx["file"].as_str().unwrap());
    let aki = kernel_for("us-east-1", "hd0", "x86_64");
    let mut child = Command::new(common::hooked_bin())
        .args([
            "--backend",
            "local",
            "--no-progress",
            "--region",
            "us-east-1",
            "--state-dir",
        ])
        .arg(host.state.path())
        .args([
            "import",
            file.to_str().unwrap(),
            "--virtualization",
            "pv",
            "--kernel",
            &aki,
        ])
        .env("AMITOOL_TEST_PAUSE_IN", "local-import-snapshot")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap())) {
        let line = line.unwrap();
        said.push_str(&line);
        if line.contains("paused in local-import-snapshot") {
            break;
        }
    }
    assert!(said.contains("paused in"), "{said}");
    let snaps = host.state.path().join("us-east-1/snapshots");
    assert_eq!(
        walk(&snaps).len(),
        3,
        "marker, disk and record: {:?}",
        walk(&snaps)
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(machines(&host), Vec::<String>::new());
    assert_eq!(walk(&snaps), Vec::<std::path::PathBuf>::new());
    let again = host.json(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        &aki,
    ]);
    assert!(
        again["image_id"].as_str().unwrap().starts_with("ami-"),
        "{again}"
    );
    // Its name is now taken: a third import is refused and leaves no snapshot.
    let third = host.run(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        &aki,
    ]);
    let err = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(2), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(walk(&snaps).len(), 2, "{:?}", walk(&snaps));
}

/// A full disk is named as such, nothing partial is left, and the state is
/// as before: an import into a state directory on a small tmpfs (root: mount).
#[test]
fn a_full_disk_is_named_and_leaves_nothing_partial() {
    let dir = Tmpfs::mount("4m");
    let fx = fixture("menulst-noroot");
    let file = fixtures().0.join(fx["file"].as_str().unwrap());
    let aki = kernel_for("us-east-1", "hd0", "x86_64");
    let out = Command::new(bin())
        .args([
            "--backend",
            "local",
            "--no-progress",
            "--region",
            "us-east-1",
            "--state-dir",
        ])
        .arg(dir.path())
        .args([
            "import",
            file.to_str().unwrap(),
            "--virtualization",
            "pv",
            "--kernel",
            &aki,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no space left on the filesystem of"), "{err}");
    assert!(err.contains("while writing"), "{err}");
    let files = walk(dir.path());
    assert!(
        files.iter().all(|p| {
            let n = p.to_string_lossy();
            !n.ends_with(".partial") && !n.ends_with(".tmp") && !n.ends_with(".raw")
        }),
        "{files:?}"
    );
}

/// A migration that fills the disk says so, names its journal's resume, leaves
/// no partial disk, and `--resume` finishes once there is room (a tmpfs
/// state directory, grown between the two runs; root: mount).
#[test]
fn a_migration_that_fills_the_disk_resumes_once_there_is_room() {
    let dir = Tmpfs::mount("20m");
    let local = |args: &[&str]| {
        Command::new(bin())
            .args([
                "--backend",
                "local",
                "--no-progress",
                "--region",
                "us-east-1",
                "--state-dir",
            ])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let fx = fixture("menulst-noroot");
    let file = fixtures().0.join(fx["file"].as_str().unwrap());
    let aki = kernel_for("us-east-1", "hd0", "x86_64");
    let img = local(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        &aki,
        "--output",
        "json",
    ]);
    assert!(
        img.status.success(),
        "{}",
        String::from_utf8_lossy(&img.stderr)
    );
    let ami: Value = serde_json::from_slice(&img.stdout).unwrap();
    let out = local(&["migrate", "--ami", ami["image_id"].as_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Stopped with what it made kept: --resume goes on (exit 3).
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no space left on the filesystem of"), "{err}");
    let mid = err
        .split_whitespace()
        .find(|w| w.starts_with("mig-"))
        .unwrap_or_else(|| panic!("{err}"))
        .trim_end_matches(|c: char| !c.is_ascii_hexdigit())
        .to_string();
    assert!(err.contains(&format!("--resume {mid}")), "{err}");
    let work = dir.path().join("work");
    let partial: Vec<_> = walk(&work)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("hvm"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
    let st = Command::new("mount")
        .args(["-o", "remount,size=96m"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let done = local(&["migrate", "--resume", &mid, "--output", "json"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let m: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert!(m["image_id"].as_str().unwrap().starts_with("ami-"), "{m}");
}

/// A tmpfs of `size` on a temporary directory (root: mount), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root, as the loop-device tests do"
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}

/// The real Debian guests (tests/fixtures/build-debian-guests.sh: debootstrap,
/// their own kernels, initramfs-tools, systemd), built on first use into
/// `AMITOOL_DEBIAN_GUESTS` (default beside the PV fixtures).
fn debian_guests() -> &'static (PathBuf, Value) {
    static G: OnceLock<(PathBuf, Value)> = OnceLock::new();
    G.get_or_init(|| {
        let dir = std::env::var_os("AMITOOL_DEBIAN_GUESTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| common::fixtures_dir().with_file_name("debian-guests"));
        let manifest = dir.join("debian-guests.json");
        if !manifest.is_file() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-debian-guests.sh");
            let st = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .status()
                .unwrap();
            assert!(
                st.success(),
                "{} {} failed",
                script.display(),
                dir.display()
            );
        }
        let m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        (dir, m)
    })
}

/// Real Debian 11 and 12 guests, each in its builder's style (a hand-made
/// whole-disk Debian 11 with a GRUB 2 grub.cfg update-grub maintains, and
/// bootstrap-vz's Debian 12 with its legacy 40_custom generator), migrated,
/// booted on NVMe and on IDE, then updated by their own dpkg and apt in a
/// chroot of the instance's disk (another kernel installed with its real
/// maintainer scripts, the old one purged), and booted again on both buses.
#[test]
fn a_real_debian_11_handmade_guest_boots_and_survives_its_own_kernel_update() {
    real_debian_guest("debian-11-handmade");
}

#[test]
fn a_real_debian_12_bootstrapvz_guest_boots_and_survives_its_own_kernel_update() {
    real_debian_guest("debian-12-bootstrapvz");
}

/// One guest of the manifest (which holds these two and no other).
fn real_debian_guest(name: &str) {
    let (dir, manifest) = debian_guests();
    let guests: Vec<&Value> = manifest.as_object().unwrap().values().collect();
    assert_eq!(guests.len(), 2, "{manifest}");
    let g = guests
        .into_iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no guest {name} in {manifest}"));
    real_guest(dir, g);
}

fn real_guest(dir: &Path, g: &Value) {
    let host = Host::new();
    let name = g["name"].as_str().unwrap();
    let marker = g["marker"].as_str().unwrap();
    let kernel = kernel_for(host.region, g["layout"].as_str().unwrap(), "x86_64");
    let file = dir.join(g["file"].as_str().unwrap());
    let ami = host.json(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        &kernel,
    ])["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = host.json(&["migrate", "--ami", &ami]);
    let hvm = m["image_id"].as_str().unwrap().to_string();
    // Its first boots: the guest's own kernel and initramfs-tools' initramfs,
    // on NVMe (the instance whose volume day 2 updates) and on IDE.
    let first = g["kernel"].as_str().unwrap();
    let (nvme, volume) = boot_instance(&host, &hvm, "m5.large", marker);
    let ide = boot_log(&host, &hvm, "t2.micro", marker);
    for (itype, log) in [("m5.large", nvme), ("t2.micro", ide)] {
        assert!(
            log.contains(&format!("BOOT_IMAGE={first}")) || log.contains("BOOT_IMAGE=/vmlinuz"),
            "{name} on {itype}\n{log}"
        );
        assert!(log.contains("console=ttyS0"), "{name} on {itype}\n{log}");
    }
    // Day 2 on that instance's volume, by the guest's own dpkg and apt.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/day2/debian-update.sh");
    let fetch = Command::new("bash")
        .arg(&script)
        .args(["--fetch", g["release"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        fetch.status.success(),
        "{}",
        String::from_utf8_lossy(&fetch.stderr)
    );
    let deb = PathBuf::from(
        String::from_utf8_lossy(&fetch.stdout)
            .lines()
            .last()
            .unwrap()
            .trim(),
    );
    let update = Command::new("bash")
        .arg(&script)
        .arg(&volume)
        .arg(deb.parent().unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&update.stderr);
    assert!(update.status.success(), "{name}: day 2\n{said}");
    let new = deb
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split('_')
        .next()
        .unwrap()
        .trim_start_matches("linux-image-")
        .to_string();
    for bus in [DiskBus::Nvme, DiskBus::Ide] {
        let log_path = volume.with_extension(format!("day2-{bus:?}.serial.log"));
        let q = qemu_boot(&volume, &log_path, marker, Duration::from_secs(300), bus).unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            q.reached,
            "{name}: no boot after its kernel update on {bus:?}\n{said}\n{log}"
        );
        assert!(
            log.contains(&format!("vmlinuz-{new}"))
                && !log.contains(&format!("BOOT_IMAGE={first} ")),
            "{name}: day 2 did not boot {new} on {bus:?}\n{log}"
        );
        assert!(log.contains("console=ttyS0"), "{name}: {bus:?}\n{log}");
    }
}
