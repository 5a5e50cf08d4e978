//! `migrate --dry-run`: one plan per source, printed; nothing is created,
//! deleted or written.

use crate::cli::migrate::{helper_options, options, Method, MigrateArgs};
use crate::cli::Context;
use crate::error::{Error, Result};
use crate::migrate::{self, Source};
use crate::output::{self, Format};

/// What one dry run found: the plan from the disk read in place (local), or
/// EC2's answers to DryRun=true calls with it (AWS).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum DryRun {
    Preview(Box<migrate::Preview>),
    Aws(Box<crate::backend::aws::dryrun::Plan>),
}

/// `--dry-run`: one plan per source; nothing is created, deleted or written.
pub(super) async fn dry_run(ctx: &Context, a: &MigrateArgs, sources: &[Source]) -> Result<u8> {
    let region = ctx.one_region("migrate").await?;
    let mut plans = vec![];
    for source in sources {
        // The source read where it lies, when the backend can without making
        // anything (a local file; an AWS image's root snapshot).
        let preview = match ctx.backend.migration_host() {
            Some(host) => migrate::preview(host, &region, source, &options(a)).await,
            None => Ok(None),
        };
        let plan = match (ctx.backend.as_aws(), preview) {
            (Some(aws), inspection) => {
                let helper = (a.method == Method::Helper).then(|| helper_options(a));
                let mut plan =
                    crate::backend::aws::dryrun::plan(aws, &region, source, helper.as_ref())
                        .await?;
                match inspection {
                    Ok(p) => plan.inspection = p,
                    Err(e) => plan.inspection_error = Some(crate::error::chain(&e)),
                }
                if let (true, Source::Instance(id)) = (a.replace, source) {
                    plan.replacement = Some(replace_preview(ctx, &region, id, a).await?);
                }
                DryRun::Aws(Box::new(plan))
            }
            (None, Err(e)) => return Err(e),
            (None, Ok(Some(p))) => DryRun::Preview(Box::new(p)),
            (None, Ok(None)) => {
                return Err(Error::InvalidInput(format!(
                    "the {} backend cannot plan this migration",
                    ctx.backend.name()
                )))
            }
        };
        plans.push(plan);
    }
    let refused = plans.iter().any(|p| match p {
        DryRun::Preview(p) => p.refused.is_some(),
        DryRun::Aws(plan) => plan
            .inspection
            .as_ref()
            .is_some_and(|p| p.refused.is_some()),
    });
    match ctx.format() {
        Format::Json if plans.len() == 1 => output::emit(&output::json(&plans[0])),
        Format::Json => output::emit(&output::json(&plans)),
        Format::Table | Format::Text => {
            for plan in &plans {
                match plan {
                    DryRun::Preview(p) => print_preview(p),
                    DryRun::Aws(plan) => print_aws_plan(plan),
                }
            }
        }
    }
    Ok(if refused { 1 } else { 0 })
}

fn print_preview(p: &migrate::Preview) {
    output::emit(&format!(
        "dry run: migrate {} in {} (nothing is made)",
        p.source_image_id, p.region
    ));
    if let Some(why) = &p.refused {
        output::emit(&format!("would refuse: {why}"));
        return;
    }
    output::emit(&format!("steps: {}", p.steps.join(", ")));
    output::emit(&format!("would register: {} (hvm)", p.name));
    if let Some(l) = &p.layout {
        for part in &l.partitions {
            output::emit(&format!(
                "partition {}: sector {}, {} sectors, type {:#04x}",
                part.number, part.start_lba, part.sectors, part.kind
            ));
        }
        output::emit(&format!("disk: {} bytes", l.disk_size));
    }
    if let Some(b) = &p.boot {
        output::emit(&format!("boot: GRUB would read {} ({})", b.path, b.rule));
    }
    for c in &p.changes {
        output::emit(&format!(
            "would change: {} line {}: {:?} -> {:?}",
            c.file, c.line, c.before, c.after
        ));
    }
    for f in &p.findings {
        output::emit(&format!("finding: {f}"));
    }
    if let Some(n) = p.blocks_read {
        output::emit(&format!("inspected in place: {n} blocks of 512 KiB read"));
    }
    if let Some(t) = &p.transfer {
        output::emit(&format!(
            "would read {} blocks ({} bytes) and write {} blocks ({} bytes) with the EBS direct APIs, {} List calls: about ${:.4} (US East prices)",
            t.blocks_to_read, t.bytes_to_read, t.blocks_to_write, t.bytes_to_write, t.list_calls, t.usd
        ));
    }
}

/// The replacement `--replace` would launch for `instance`, and EC2's
/// DryRun answers (asked with the source's image: the new one does not exist yet).
async fn replace_preview(
    ctx: &Context,
    region: &str,
    instance: &str,
    a: &MigrateArgs,
) -> Result<migrate::cutover::ReplacePreview> {
    let co = crate::cli::replace::cut_over_of(ctx)?;
    let (_, image) = co.instance_of(region, instance).await?;
    let o = options(a).replace.unwrap_or_default();
    let (instance_type, reasons) = crate::cli::replace::replacement_type(
        ctx,
        co,
        region,
        instance,
        (image.as_deref(), None),
        &o,
    )
    .await?;
    co.preview(
        region,
        instance,
        &instance_type,
        reasons,
        !a.keep_source_running,
    )
    .await
}

fn print_replacement(r: &migrate::cutover::ReplacePreview) {
    output::emit(&format!(
        "would replace {} by a {} in {} (groups {}; key {}){}",
        r.source_instance_id,
        r.instance_type,
        r.subnet_id.as_deref().unwrap_or("-"),
        if r.security_groups.is_empty() {
            "-".into()
        } else {
            r.security_groups.join(", ")
        },
        r.key_name.as_deref().unwrap_or("-"),
        if r.stops_source {
            ", the source stopped first"
        } else {
            ", the source left running"
        }
    ));
    for why in &r.reasons {
        output::emit(&format!("  because: {why}"));
    }
    for v in &r.volumes {
        output::emit(&format!(
            "  would copy: {} {} ({} GiB {})",
            v.device,
            v.volume_id,
            v.size_gib,
            v.volume_type.as_deref().unwrap_or("-")
        ));
    }
    if let Some(ip) = &r.elastic_ip {
        output::emit(&format!("  would move: the Elastic IP {ip}"));
    }
    for c in &r.checks {
        output::emit(&format!("  {c}"));
    }
}

fn print_aws_plan(plan: &crate::backend::aws::dryrun::Plan) {
    output::emit(&format!(
        "dry run: migrate {} in {} with the {} method",
        plan.source_image_id, plan.region, plan.method
    ));
    output::emit(&format!("steps: {}", plan.steps.join(", ")));
    for r in &plan.resources {
        output::emit(&format!("would make: {r}"));
    }
    if !plan.checks.is_empty() {
        output::emit(&output::table(&plan.checks));
    }
    if let Some(s) = &plan.script {
        output::emit(&format!("the helper's device check (check mode):\n{s}"));
    }
    if let Some(r) = &plan.replacement {
        print_replacement(r);
    }
    match (&plan.inspection, &plan.inspection_error) {
        (Some(p), _) => print_preview(p),
        (None, Some(e)) => output::emit(&format!(
            "inspection: the root snapshot could not be read in place: {e}"
        )),
        (None, None) => output::emit(
            "inspection: an instance's root volume is read after its snapshot is made; not in a dry run",
        ),
    }
}
