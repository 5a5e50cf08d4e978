//! `amitool migrate`: a PV image or instance to a registered HVM image.

use clap::{Args, ValueEnum};

use crate::backend::aws::helper::HelperOptions;
use crate::cli::Context;
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::migrate::{self, Migration, MigrationHost, Options, Source};
use crate::output::{self, Format, Tabular};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// EBS direct APIs: no instance, no volume (AWS); files (local).
    Direct,
    /// A helper instance in the account, driven by SSM (AWS only).
    Helper,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The PV image(s) to migrate (never modified); several make a fleet.
    #[arg(long, value_name = "AMI", num_args = 1..)]
    pub ami: Vec<String>,
    /// The PV instance(s) whose root volume to migrate (never modified).
    #[arg(long, value_name = "INSTANCE", num_args = 1..)]
    pub instance: Vec<String>,
    /// A file of AMI and instance ids, one a line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<std::path::PathBuf>,
    /// Finish a migration that stopped, from its journal.
    #[arg(long, value_name = "MIGRATION_ID", conflicts_with_all = ["cleanup", "ami", "instance", "from_file"])]
    pub resume: Option<String>,
    /// Undo a --replace cut-over: stop the replacement (never terminate it),
    /// move the Elastic IP back, start the source. Safe to repeat.
    #[arg(long, value_name = "MIGRATION_ID", conflicts_with_all = ["cleanup", "ami", "instance", "from_file", "resume", "dry_run", "replace"])]
    pub rollback: Option<String>,
    /// --instance: after the image is registered (and with --verify booted),
    /// launch its replacement with the source's subnet, security groups,
    /// key, profile, tags, user data and data volumes, move its Elastic IP
    /// and stop the source (AWS).
    #[arg(long)]
    pub replace: bool,
    /// --replace: the replacement's instance type (default: the successor).
    #[arg(long, value_name = "TYPE", requires = "replace")]
    pub instance_type: Option<String>,
    /// --replace: choose the successor in this family (m5, c6i, r5, t3, ...).
    #[arg(long, value_name = "FAMILY", requires = "replace")]
    pub successor_family: Option<String>,
    /// --replace: leave the source running (its data volumes are then copied crash-consistent).
    #[arg(long, requires = "replace")]
    pub keep_source_running: bool,
    /// Remove what a migration made (but a registered image), from its journal.
    #[arg(long, value_name = "MIGRATION_ID")]
    pub cleanup: Option<String>,
    #[arg(long, value_enum, default_value_t = Method::Direct)]
    pub method: Method,
    /// The new image's name (default: the source's name + "-hvm").
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the intermediate snapshot of an instance's volume.
    #[arg(long)]
    pub keep_temp: bool,
    /// Also fix the guest in the HVM copy: fstab by UUID, a getty on ttyS0.
    #[arg(long)]
    pub fix_guest: bool,
    /// --instance: stop a running source for its root snapshot (consistent,
    /// not crash-consistent) and start it again right after.
    #[arg(long)]
    pub stop_source: bool,
    /// Print the plan, the resources it would make and the helper's script,
    /// and ask EC2 with DryRun=true; create nothing (AWS). Not with
    /// --resume or --cleanup, which act.
    #[arg(long, conflicts_with_all = ["resume", "cleanup"])]
    pub dry_run: bool,
    /// After registering, boot the new image (AWS: on t2/t3.micro, read the
    /// console; local: QEMU) until --verify-expect appears, then stop it.
    #[arg(long)]
    pub verify: bool,
    #[arg(long, default_value = "login:", value_name = "TEXT")]
    pub verify_expect: String,
    /// Seconds --verify waits.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub verify_timeout: u64,
    /// The new root volume's EBS type (default: the source's).
    #[arg(long, value_name = "TYPE", value_parser = ["standard", "gp2", "gp3"])]
    pub volume_type: Option<String>,
    /// --method helper: an existing instance with the SSM agent (never terminated).
    #[arg(long, value_name = "INSTANCE")]
    pub helper_instance: Option<String>,
    /// --method helper: the subnet to launch a helper in.
    #[arg(long, value_name = "SUBNET")]
    pub helper_subnet: Option<String>,
    /// --method helper: the instance profile that lets the helper talk to SSM.
    #[arg(long, value_name = "NAME")]
    pub helper_profile: Option<String>,
    /// --method helper: the helper's instance type.
    #[arg(long, default_value = "t3.micro")]
    pub helper_type: String,
}

impl Tabular for migrate::Step {
    fn headers() -> Vec<&'static str> {
        vec!["STEP", "SECONDS", "DETAIL"]
    }

    fn wrapping_column() -> Option<usize> {
        Some(2)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.into(),
            format!("{:.2}", self.seconds),
            self.detail.clone(),
        ]
    }
}

pub(super) fn host(ctx: &Context) -> Result<&dyn MigrationHost> {
    ctx.backend.migration_host().ok_or_else(|| {
        Error::InvalidInput(format!("the {} backend cannot migrate", ctx.backend.name()))
    })
}

fn print(ctx: &Context, m: &Migration) {
    match ctx.format() {
        Format::Json => output::emit(&output::json(m)),
        f => {
            output::emit(&output::rows(&m.steps, f));
            for finding in &m.findings {
                output::emit(&output::labelled(f, "finding", finding));
            }
            let result = format!(
                "{} → {} ({}, {})",
                m.source_image_id, m.image_id, m.region, m.migration_id
            );
            match f {
                Format::Text => output::emit(&format!(
                    "migrated\t{}\t{}\t{}\t{}",
                    m.source_image_id, m.image_id, m.region, m.migration_id
                )),
                _ => output::emit(&result),
            }
            if let (Some(r), Some(src)) = (&m.replacement, &m.source_instance_id) {
                match f {
                    Format::Text => output::emit(&format!(
                        "replaced\t{src}\t{}\t{}\t{}\t{}",
                        r.instance_id,
                        r.instance_type,
                        r.elastic_ip.as_deref().unwrap_or("-"),
                        r.source_state
                    )),
                    _ => output::emit(&format!(
                        "{src} ({}) replaced by {} ({}){}; roll back with `amitool migrate --rollback {}`",
                        r.source_state,
                        r.instance_id,
                        r.instance_type,
                        r.elastic_ip
                            .as_ref()
                            .map(|ip| format!(", Elastic IP {ip} moved"))
                            .unwrap_or_default(),
                        m.migration_id
                    )),
                }
            }
        }
    }
}

/// `--method helper` runs on the AWS backend only; its ids checked.
fn check_helper(ctx: &Context, a: &MigrateArgs) -> Result<()> {
    if a.method != Method::Helper {
        return Ok(());
    }
    if ctx.backend.migration_host().is_none() || ctx.backend.name() != "aws" {
        return Err(Error::InvalidInput(
            "--method helper runs on the AWS backend; the local host converts files directly"
                .into(),
        ));
    }
    if let Some(i) = &a.helper_instance {
        ids::check_id(IdKind::Instance, i)?;
    }
    ids::check_instance_type(&a.helper_type)
}

/// `--verify`: boot the result and wait for userspace; a step, or an error.
async fn verify(ctx: &Context, a: &MigrateArgs, m: &mut Migration) -> Result<()> {
    let started = std::time::Instant::now();
    let timeout = std::time::Duration::from_secs(a.verify_timeout);
    let detail = if let Some(aws) = ctx.backend.as_aws() {
        let ena = aws
            .describe_raw(&m.region, &m.image_id)
            .await?
            .ena_support()
            .unwrap_or(false);
        let _waiting = crate::progress::Waiting::new(
            &format!(
                "{:?} on the console of a new instance of {}",
                a.verify_expect, m.image_id
            ),
            timeout,
        );
        let check = aws
            .verify_boot(
                &m.region,
                &m.image_id,
                ena,
                &a.verify_expect,
                timeout,
                &m.migration_id,
            )
            .await?;
        if !check.reached {
            print(ctx, m);
            return Err(crate::backend::aws::verify::not_reached(
                &m.region,
                &m.image_id,
                &a.verify_expect,
                &check,
            ));
        }
        format!(
            "{} on {} printed {:?}; terminated",
            check.instance_id, check.instance_type, a.verify_expect
        )
    } else {
        let local = crate::cli::images::local(ctx, "migrate --verify")?;
        let (_, disk) = local.root_disk(&m.region, &m.image_id)?;
        let log = local
            .store
            .root
            .join(format!("{}-verify.serial.log", m.migration_id));
        // On NVMe, as a Nitro type would attach it, when the image can mount an NVMe root.
        let bus = match local.image_record(&m.region, &m.image_id)?.drivers {
            Some(d) if d.nvme => crate::image::boot::DiskBus::Nvme,
            _ => crate::image::boot::DiskBus::Ide,
        };
        let waiting = crate::progress::Waiting::new(
            &format!(
                "{:?} on the serial console of {} under QEMU",
                a.verify_expect, m.image_id
            ),
            timeout,
        );
        let q = crate::image::boot::qemu_boot(&disk, &log, &a.verify_expect, timeout, bus)
            .map_err(|e| Error::io("run qemu-system-x86_64 on", &disk, e))?;
        drop(waiting);
        if !q.reached {
            print(ctx, m);
            return Err(Error::Transfer {
                action: "verify the new image",
                region: m.region.clone(),
                message: format!(
                "{} did not print {:?} under QEMU within {} s (serial log: {}); the image stays registered",
                m.image_id, a.verify_expect, a.verify_timeout, log.display()
            ),
            });
        }
        format!(
            "QEMU printed {:?} after {:.1} s (serial log: {})",
            a.verify_expect,
            q.seconds,
            log.display()
        )
    };
    m.steps.push(migrate::Step {
        name: "verify-boot",
        seconds: started.elapsed().as_secs_f64(),
        detail,
    });
    Ok(())
}

pub(super) fn helper_options(a: &MigrateArgs) -> HelperOptions {
    HelperOptions {
        instance: a.helper_instance.clone(),
        subnet: a.helper_subnet.clone(),
        profile: a.helper_profile.clone(),
        instance_type: a.helper_type.clone(),
    }
}

pub(super) fn options(a: &MigrateArgs) -> Options {
    Options {
        name: a.name.clone(),
        keep_temp: a.keep_temp,
        fix_guest: a.fix_guest,
        volume_type: a.volume_type.clone(),
        method: match a.method {
            Method::Direct => "direct",
            Method::Helper => "helper",
        }
        .into(),
        helper: helper_options(a),
        stop_source: a.stop_source,
        replace: a.replace.then(|| crate::migrate::cutover::ReplaceOptions {
            instance_type: a.instance_type.clone(),
            successor_family: a.successor_family.clone(),
            keep_source_running: a.keep_source_running,
        }),
    }
}

pub async fn run(ctx: &Context, a: MigrateArgs) -> Result<u8> {
    // Flags that make no sense together, refused before anything is asked.
    if a.method != Method::Helper {
        let given = [
            ("--helper-instance", a.helper_instance.is_some()),
            ("--helper-subnet", a.helper_subnet.is_some()),
            ("--helper-profile", a.helper_profile.is_some()),
            ("--helper-type", a.helper_type != "t3.micro"),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(Error::InvalidInput(format!("{flag} needs --method helper")));
        }
    }
    if !a.dry_run {
        // Ctrl-C stops the migrations, which clean up and keep their journals.
        crate::interrupt::install();
    }
    if let Some(id) = &a.rollback {
        return super::replace::rollback(ctx, id).await;
    }
    super::replace::check(ctx, &a)?;
    let host = host(ctx)?;
    if let Some(id) = &a.cleanup {
        let removed = migrate::cleanup(host, id).await?;
        match ctx.format() {
            Format::Json => output::emit(&output::json(
                &serde_json::json!({ "migration_id": id, "removed": removed }),
            )),
            Format::Table | Format::Text => output::emit(&format!(
                "{id}: removed {}",
                if removed.is_empty() {
                    "nothing".into()
                } else {
                    removed.join(", ")
                }
            )),
        }
        return Ok(0);
    }
    if let Some(id) = &a.resume {
        let mut m = migrate::resume(host, id, &options(&a)).await?;
        if a.verify {
            verify(ctx, &a, &mut m).await?;
        }
        super::replace::cut_over(ctx, &mut m).await?;
        print(ctx, &m);
        return Ok(0);
    }
    let mut sources = sources(&a)?;
    if a.dry_run {
        return super::dryrun::dry_run(ctx, &a, &sources).await;
    }
    if sources.len() > 1 {
        return super::fleet::fleet(ctx, &a, sources).await;
    }
    let m = migrate_one(ctx, &a, sources.remove(0)).await?;
    print(ctx, &m);
    Ok(0)
}

/// The sources named by --ami, --instance and --from-file, checked.
fn sources(a: &MigrateArgs) -> Result<Vec<Source>> {
    let mut out = vec![];
    for ami in &a.ami {
        ids::check_id(IdKind::Image, ami)?;
        out.push(Source::Image(ami.clone()));
    }
    for i in &a.instance {
        ids::check_id(IdKind::Instance, i)?;
        out.push(Source::Instance(i.clone()));
    }
    if let Some(path) = &a.from_file {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        for (n, line) in text.lines().enumerate() {
            let id = line.split('#').next().unwrap_or_default().trim();
            if id.is_empty() {
                continue;
            }
            let bad =
                |e: Error| Error::InvalidInput(format!("{} line {}: {e}", path.display(), n + 1));
            if id.starts_with("ami-") {
                ids::check_id(IdKind::Image, id).map_err(bad)?;
                out.push(Source::Image(id.to_string()));
            } else {
                ids::check_id(IdKind::Instance, id).map_err(bad)?;
                out.push(Source::Instance(id.to_string()));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidInput(
            "migrate needs --ami, --instance, --from-file, --resume ID or --cleanup ID".into(),
        ));
    }
    Ok(out)
}

/// One migration, by the chosen method, verified when asked.
async fn migrate_one(ctx: &Context, a: &MigrateArgs, source: Source) -> Result<Migration> {
    migrate_item(ctx, a, source).await.1
}

/// One migration and its id (known once its journal exists, also when it fails).
pub(super) async fn migrate_item(
    ctx: &Context,
    a: &MigrateArgs,
    source: Source,
) -> (Option<String>, Result<Migration>) {
    let begun = async {
        check_helper(ctx, a)?;
        let region = ctx.one_region("migrate").await?;
        let host = host(ctx)?;
        Ok::<_, Error>((host, migrate::begin(host, &region, &source, &options(a))?))
    }
    .await;
    let (host, journal) = match begun {
        Ok(b) => b,
        Err(e) => return (None, Err(e)),
    };
    let mid = journal.migration_id.clone();
    let result = async {
        let mut m = migrate::go_on(host, journal, &options(a)).await?;
        if a.verify {
            verify(ctx, a, &mut m).await?;
        }
        super::replace::cut_over(ctx, &mut m).await?;
        Ok(m)
    }
    .await;
    (Some(mid), result)
}
