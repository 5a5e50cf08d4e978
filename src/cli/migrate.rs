//! `amitool migrate`: a PV image or instance to a registered HVM image.

use clap::Args;

use crate::cli::context::Context;
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::migrate::cutover::ReplaceOptions;
use crate::migrate::{Action, HelperOptions, Method, Options, Request, Runner, Source, Verify};

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
    /// --replace: detach the data volumes from the stopped source and attach
    /// them to the replacement instead of copying them (same zone; --rollback
    /// moves them back).
    #[arg(long, requires = "replace", conflicts_with = "keep_source_running")]
    pub move_data_volumes: bool,
    /// --instance --replace: copy the root and data volumes while the source
    /// runs and stop there (phase 1); run it again, or --sync, to catch up;
    /// --cut-over finishes with an outage of only the blocks changed since (AWS).
    #[arg(long, requires = "replace")]
    pub warm: bool,
    /// Catch a --warm migration up with its running source: only the blocks
    /// changed since its last sync move.
    #[arg(long, value_name = "MIGRATION_ID", conflicts_with_all = ["cleanup", "ami", "instance", "from_file", "resume", "rollback", "replace"])]
    pub sync: Option<String>,
    /// Finish a --warm migration: stop the source, move the blocks changed
    /// since the last sync, register, launch the replacement, move the Elastic IP.
    #[arg(long, value_name = "MIGRATION_ID", conflicts_with_all = ["cleanup", "ami", "instance", "from_file", "resume", "rollback", "replace", "sync"])]
    pub cut_over: Option<String>,
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

/// The request the flags make, every usage error refused before anything is asked.
fn request(a: &MigrateArgs, region: String) -> Result<Request> {
    // Flags that make no sense together.
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
    } else {
        if let Some(i) = &a.helper_instance {
            ids::check_id(IdKind::Instance, i)?;
        }
        ids::check_instance_type(&a.helper_type)?;
    }
    if a.replace {
        if !a.ami.is_empty() {
            return Err(Error::InvalidInput(
                "--replace replaces instances: give --instance (or instance ids in --from-file), not --ami"
                    .into(),
            ));
        }
        if let Some(t) = &a.instance_type {
            ids::check_instance_type(t)?;
        }
        if let Some(f) = &a.successor_family {
            crate::successor::check_family(f)?;
        }
    }
    if a.warm && (!a.ami.is_empty() || a.instance.is_empty() && a.from_file.is_none()) {
        return Err(Error::InvalidInput(
            "--warm copies running instances: give --instance (or instance ids in --from-file)"
                .into(),
        ));
    }
    if a.warm && a.method != Method::Direct {
        return Err(Error::InvalidInput(
            "--warm writes each sync over the last one through the EBS direct APIs: it runs with --method direct".into(),
        ));
    }
    if let Some(id) = a.sync.as_ref().or(a.cut_over.as_ref()) {
        crate::migrate::journal::check_migration_id(id)?;
    }
    let action = match (&a.rollback, &a.cleanup, &a.resume) {
        _ if a.sync.is_some() => Action::Sync(a.sync.clone().expect("checked")),
        _ if a.cut_over.is_some() => Action::CutOver(a.cut_over.clone().expect("checked")),
        (Some(id), _, _) => Action::Rollback(id.clone()),
        (None, Some(id), _) => Action::Cleanup(id.clone()),
        (None, None, Some(id)) => Action::Resume(id.clone()),
        (None, None, None) => {
            let sources = sources(a)?;
            if sources.len() > 1 && a.name.is_some() {
                return Err(Error::InvalidInput(
                    "--name names one image; a fleet keeps each source's name + \"-hvm\"".into(),
                ));
            }
            Action::Migrate(sources)
        }
    };
    Ok(Request {
        action,
        region,
        options: Options {
            name: a.name.clone(),
            keep_temp: a.keep_temp,
            fix_guest: a.fix_guest,
            volume_type: a.volume_type.clone(),
            method: a.method,
            helper: HelperOptions {
                instance: a.helper_instance.clone(),
                subnet: a.helper_subnet.clone(),
                profile: a.helper_profile.clone(),
                instance_type: a.helper_type.clone(),
            },
            stop_source: a.stop_source,
            warm: a.warm,
            replace: a.replace.then(|| ReplaceOptions {
                instance_type: a.instance_type.clone(),
                successor_family: a.successor_family.clone(),
                keep_source_running: a.keep_source_running,
                move_data_volumes: a.move_data_volumes,
            }),
        },
        verify: a.verify.then(|| Verify {
            expect: a.verify_expect.clone(),
            timeout: std::time::Duration::from_secs(a.verify_timeout),
        }),
        dry_run: a.dry_run,
        migration_id: None,
    })
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
            out.push(Source::parse(id).map_err(bad)?);
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidInput(
            "migrate needs --ami, --instance, --from-file, --resume ID or --cleanup ID".into(),
        ));
    }
    Ok(out)
}

pub async fn run(ctx: &Context, a: MigrateArgs) -> Result<u8> {
    // A resume, cleanup or rollback runs in its journal's region.
    let region = match (&a.rollback, &a.cleanup, &a.resume) {
        (None, None, None) if a.sync.is_none() && a.cut_over.is_none() => {
            ctx.one_region("migrate").await?
        }
        _ => ctx
            .regions()
            .await
            .ok()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default(),
    };
    let req = request(&a, region)?;
    match Runner::new(ctx.backend.as_ref()).run(&req).await {
        Ok(outcome) => {
            super::migrate_output::render(ctx.format(), &outcome);
            Ok(outcome.exit_code())
        }
        Err(Error::NotBooted { migration, message }) => {
            // The image is registered: say so, then why it did not boot.
            super::migrate_output::render(
                ctx.format(),
                &crate::migrate::Outcome::Migrated(migration.clone()),
            );
            Err(Error::NotBooted { migration, message })
        }
        Err(e) => Err(e),
    }
}
