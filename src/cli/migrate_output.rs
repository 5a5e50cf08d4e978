//! How `migrate` shows what it did: a migration's steps and result, a
//! fleet's summary, one plan per source of a dry run, a cleanup, a rollback.

use crate::migrate::cutover::{ReplacePreview, Rollback};
use crate::migrate::dryrun::{DryRun, ProviderPlan};
use crate::migrate::{FleetItem, Migration, Outcome, Preview};
use crate::output::{self, cell, Format, Tabular};

impl Tabular for crate::migrate::Step {
    fn headers() -> Vec<&'static str> {
        vec!["STEP", "SECONDS", "DETAIL"]
    }

    fn wrapping_column() -> Option<usize> {
        Some(2)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.to_string(),
            format!("{:.2}", self.seconds),
            self.detail.clone(),
        ]
    }
}

impl Tabular for FleetItem {
    fn headers() -> Vec<&'static str> {
        vec![
            "SOURCE",
            "MIGRATION",
            "IMAGE",
            "VERIFIED",
            "REPLACEMENT",
            "TYPE",
            "EIP",
            "SOURCE STATE",
            "OUTCOME",
        ]
    }

    fn wrapping_column() -> Option<usize> {
        Some(8)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.source.clone(),
            cell(self.migration_id.as_deref()),
            cell(self.image_id.as_deref()),
            if self.verified { "yes" } else { "no" }.into(),
            cell(self.replacement.as_deref()),
            cell(self.instance_type.as_deref()),
            cell(self.elastic_ip.as_deref()),
            cell(self.source_state.as_deref()),
            match (&self.error, self.findings.len()) {
                (Some(e), _) => e.clone(),
                (None, 0) => "migrated".into(),
                (None, n) => format!("migrated; {n} finding(s): {}", self.findings.join("; ")),
            },
        ]
    }
}

pub fn render(format: Format, outcome: &Outcome) {
    match outcome {
        Outcome::Migrated(m) => migration(format, m),
        Outcome::Fleet { items, .. } => output::emit(&output::render(items, format)),
        Outcome::Planned(plans) => match format {
            Format::Json if plans.len() == 1 => output::emit(&output::json(&plans[0])),
            Format::Json => output::emit(&output::json(plans)),
            Format::Table | Format::Text => {
                for plan in plans {
                    match plan {
                        DryRun::Preview(p) => preview(p),
                        DryRun::Provider(plan) => provider_plan(plan),
                        DryRun::Warm(plan) => warm_plan(plan),
                    }
                }
            }
        },
        Outcome::CleanedUp {
            migration_id,
            removed,
        } => match format {
            Format::Json => output::emit(&output::json(
                &serde_json::json!({ "migration_id": migration_id, "removed": removed }),
            )),
            Format::Table | Format::Text => output::emit(&format!(
                "{migration_id}: removed {}",
                if removed.is_empty() {
                    "nothing".into()
                } else {
                    removed.join(", ")
                }
            )),
        },
        Outcome::RolledBack(done) => rollback(format, done),
    }
}

fn migration(format: Format, m: &Migration) {
    match format {
        Format::Json => output::emit(&output::json(m)),
        f => {
            output::emit(&output::rows(&m.steps, f));
            for finding in &m.findings {
                output::emit(&output::labelled(f, "finding", finding));
            }
            if let Some(sync) = &m.sync {
                let src = m
                    .source_instance_id
                    .as_deref()
                    .unwrap_or(&m.source_image_id);
                match f {
                    Format::Text => output::emit(&format!(
                        "synced\t{src}\t{}\t{}\t{}\t{}",
                        sync.generation, sync.disk_snapshot, m.region, m.migration_id
                    )),
                    _ => output::emit(&format!(
                        "{src}: sync {} made {} ({} blocks written{}); it runs on. Catch up: `{}`; finish: `{}`",
                        sync.generation,
                        sync.disk_snapshot,
                        sync.blocks_written,
                        sync.changed_blocks
                            .map(|n| format!(", {n} of the root's blocks changed since the sync before"))
                            .unwrap_or_default(),
                        sync.sync,
                        sync.cut_over
                    )),
                }
                return;
            }
            match f {
                Format::Text => output::emit(&format!(
                    "migrated\t{}\t{}\t{}\t{}",
                    m.source_image_id, m.image_id, m.region, m.migration_id
                )),
                _ => output::emit(&format!(
                    "{} → {} ({}, {})",
                    m.source_image_id, m.image_id, m.region, m.migration_id
                )),
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
            if let Some(o) = &m.outage {
                let at = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
                match f {
                    Format::Text => output::emit(&format!(
                        "outage\t{:.1}\t{}\t{}\t{}\t{}\t{}",
                        o.seconds,
                        at(&m.source_stopped_at),
                        at(&m.replacement_running_at),
                        o.blocks_read,
                        o.blocks_written,
                        o.bytes_written
                    )),
                    _ => output::emit(&format!(
                        "outage {:.1} s: the source stopped at {}, its replacement ran at {}; {} of the root's blocks changed since the last sync, {} blocks read, {} written ({} bytes)",
                        o.seconds,
                        at(&m.source_stopped_at),
                        at(&m.replacement_running_at),
                        o.changed_blocks,
                        o.blocks_read,
                        o.blocks_written,
                        o.bytes_written
                    )),
                }
            }
        }
    }
}

fn rollback(format: Format, done: &Rollback) {
    match format {
        Format::Json => output::emit(&output::json(done)),
        f => {
            for s in &done.steps {
                output::emit(&output::labelled(f, "done", s));
            }
            output::emit(&format!(
                "{}: {} {} (the source), {} {} (the replacement){}",
                done.migration_id,
                done.source_instance_id,
                done.source_state,
                done.replacement_instance_id,
                done.replacement_state,
                done.elastic_ip
                    .as_ref()
                    .map(|ip| format!(", {ip} on {}", done.elastic_ip_on.as_deref().unwrap_or("-")))
                    .unwrap_or_default()
            ));
        }
    }
}

fn steps_line(steps: &[crate::migrate::StepName]) -> String {
    format!(
        "steps: {}",
        steps
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn preview(p: &Preview) {
    output::emit(&format!(
        "dry run: migrate {} in {} (nothing is made)",
        p.source_image_id, p.region
    ));
    if let Some(why) = &p.refused {
        output::emit(&format!("would refuse: {why}"));
        return;
    }
    output::emit(&steps_line(&p.steps));
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

fn replacement(r: &ReplacePreview) {
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

fn provider_plan(plan: &ProviderPlan) {
    output::emit(&format!(
        "dry run: migrate {} in {} with the {} method",
        plan.source_image_id, plan.region, plan.method
    ));
    output::emit(&steps_line(&plan.steps));
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
        replacement(r);
    }
    match (&plan.inspection, &plan.inspection_error) {
        (Some(p), _) => preview(p),
        (None, Some(e)) => output::emit(&format!(
            "inspection: the root snapshot could not be read in place: {e}"
        )),
        (None, None) => output::emit(
            "inspection: an instance's root volume is read after its snapshot is made; not in a dry run",
        ),
    }
}

/// `--sync`/`--cut-over --dry-run` as text.
fn warm_plan(p: &crate::migrate::dryrun::WarmPlan) {
    let steps: Vec<&str> = p.steps.iter().map(|s| s.as_str()).collect();
    output::emit(&format!(
        "{} of {} ({}, {}) would: {}\nestimate: {} blocks ({} bytes) read and written, ${:.4}; {}",
        p.action,
        p.migration_id,
        p.source_instance_id,
        p.region,
        steps.join(", "),
        p.estimated_blocks,
        p.estimated_bytes,
        p.estimated_usd,
        p.note
    ));
}
