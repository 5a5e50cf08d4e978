//! The warm migration's flows (`--warm`, `--sync`, `--cut-over`): a sync
//! of a journal that synced before, the data volumes' snapshots after it,
//! the cut-over's outage, the rollback before a replacement, the dry run.

use super::*;

impl Runner<'_> {
    /// The unfinished warm migration of `instance`, if one is.
    pub(super) fn warm_journal_of(&self, instance: &str) -> Option<String> {
        let dir = self.host().ok()?.journal_dir();
        migrate::journal::list(&dir)
            .into_iter()
            .filter(|s| s.source == instance)
            .filter(|s| !matches!(s.state, JournalState::Done | JournalState::Cleaned))
            .find(|s| {
                Journal::load(&dir, &s.migration_id)
                    .is_ok_and(|j| j.warm.as_ref().is_some_and(|w| !w.cutting_over))
            })
            .map(|s| s.migration_id)
    }

    /// `--sync` (or `--warm` again) and `--cut-over`: the next sync of a
    /// warm migration, the last one when `cutting_over`; an unfinished one
    /// goes on where it stopped.
    pub(super) async fn sync(
        &self,
        req: &Request,
        id: &str,
        cutting_over: bool,
    ) -> Result<Migration> {
        migrate::journal::check_migration_id(id)?;
        let host = self.host()?;
        let mut journal = Journal::load(&host.journal_dir(), id)?;
        let Some(w) = journal.warm.clone() else {
            return Err(Error::refused(
                id,
                format!("{id} is not a warm migration: --sync and --cut-over follow migrate --instance I --replace --warm"),
            ));
        };
        if journal.backend != host.host_name() {
            return Err(Error::refused(
                id,
                format!("{id} ran on the {} backend; go on there", journal.backend),
            ));
        }
        match journal.state {
            JournalState::Done => {
                return Err(Error::refused(
                    id,
                    format!(
                        "{id} is cut over already: {}",
                        journal.image_id.as_deref().unwrap_or("its image")
                    ),
                ))
            }
            JournalState::Cleaned => {
                return Err(Error::refused(
                    id,
                    format!("{id} was cleaned up or rolled back; start a new migration"),
                ))
            }
            JournalState::Synced => migrate::warm::next_generation(&mut journal, cutting_over)?,
            // A cut-over that stopped goes on; so does a sync, unless the
            // cut-over is asked (its sync is taken again, after the stop).
            _ if w.cutting_over || !cutting_over => {}
            _ if w.synced.is_none() => {
                return Err(Error::refused(
                    id,
                    format!("{id}'s first sync did not finish: --resume {id} first"),
                ))
            }
            _ => {
                journal.state = JournalState::Synced;
                migrate::warm::next_generation(&mut journal, true)?
            }
        }
        let opts = Options {
            warm: true,
            method: journal.method,
            ..req.options.clone()
        };
        let mut m = migrate::go_on(host, journal, &opts).await?;
        self.after(req, &mut m).await?;
        Ok(m)
    }

    /// A warm sync's data volumes, snapshotted while the source runs.
    pub(super) async fn sync_data(&self, m: &mut Migration) -> Result<()> {
        let co = self.cut_over()?;
        let host = self.host()?;
        let mut journal = Journal::load(&host.journal_dir(), &m.migration_id)?;
        let mut rec = Recorder::new();
        co.sync_data_volumes(&mut journal, &mut rec).await?;
        m.steps.extend(std::mem::take(&mut rec.steps));
        journal.steps = m.steps.iter().map(|s| s.name).collect();
        journal.save()?;
        m.sync = migrate::warm::report(&journal);
        Ok(())
    }

    /// A warm cut-over that ended: when the source stopped and the
    /// replacement ran, what the final sync moved; the syncs' snapshots go.
    pub(super) async fn outage(&self, m: &mut Migration) -> Result<()> {
        let host = self.host()?;
        let mut journal = Journal::load(&host.journal_dir(), &m.migration_id)?;
        let Some(mut w) = journal.warm.clone().filter(|w| w.cutting_over) else {
            return Ok(());
        };
        if w.outage.is_none() {
            let t = journal.transfer.unwrap_or_default();
            let ran = migrate::warm::now();
            w.running_at = Some(ran);
            w.outage = Some(migrate::warm::Outage {
                seconds: w.stopped_at.map_or(0.0, |s| (ran - s).max(0.0)),
                blocks_read: t.blocks_read,
                blocks_written: t.blocks_written,
                bytes_written: t.bytes_written,
                changed_blocks: w.changed_now.unwrap_or(0),
                edited_blocks: w.edited_blocks(),
            });
            journal.warm = Some(w.clone());
            journal.save()?;
        }
        // The syncs' snapshots served their purpose once the replacement runs.
        let synced = w.synced.take();
        let mut removed = migrate::warm::forget(host, &journal, synced, None).await;
        for s in std::mem::take(&mut w.data)
            .into_iter()
            .map(|d| d.snapshot_id)
        {
            if host.delete_snapshot(&journal.region, &s).await.is_ok() {
                removed.push(format!("the data volume's sync snapshot {s}"));
            }
        }
        journal.warm = Some(w.clone());
        journal.save()?;
        if !removed.is_empty() {
            m.findings.push(format!("removed {}", removed.join(", ")));
        }
        m.source_stopped_at = w.stopped_at.map(migrate::warm::rfc3339);
        m.replacement_running_at = w.running_at.map(migrate::warm::rfc3339);
        m.outage = w.outage;
        Ok(())
    }

    /// `--sync` / `--cut-over` with `--dry-run`: the steps it would take and
    /// what the last sync moved (what changed since is known only from a
    /// snapshot, which a dry run does not take).
    pub(super) async fn warm_plan(&self, req: &Request, id: &str) -> Result<DryRun> {
        migrate::journal::check_migration_id(id)?;
        let host = self.host()?;
        let journal = Journal::load(&host.journal_dir(), id)?;
        let w = journal
            .warm
            .clone()
            .ok_or_else(|| Error::refused(id, format!("{id} is not a warm migration (--warm)")))?;
        let cutting_over = matches!(req.action, Action::CutOver(_));
        let running = host
            .instance_state(&journal.region, &journal.source_id)
            .await
            .is_ok_and(|s| s == "running");
        let replace = journal.replace.clone().unwrap_or_default();
        // The replacement it would launch, and EC2's DryRun answers.
        let replacement = if cutting_over {
            let here = Request {
                region: journal.region.clone(),
                ..req.clone()
            };
            Some(
                self.replace_preview(&here, &journal.source_id, &replace.options)
                    .await?,
            )
        } else {
            None
        };
        let steps = StepPlan {
            method: journal.method,
            fix_guest: journal.fix_guest,
            restarts_source: false,
            verify_boot: req.verify.is_some(),
            replace: cutting_over.then_some(ReplaceSteps {
                stops_source: running,
                elastic_ip: replacement.as_ref().is_some_and(|p| p.elastic_ip.is_some()),
                moves_data: replace.options.move_data_volumes,
            }),
            warm: Some(if cutting_over {
                migrate::WarmStage::CutOver {
                    stops_source: running,
                }
            } else {
                migrate::WarmStage::Sync
            }),
        };
        let mut plan = migrate::dryrun::WarmPlan::new(&journal, &w, &steps, cutting_over);
        plan.replacement = replacement;
        Ok(DryRun::Warm(Box::new(plan)))
    }
    /// `--rollback` of a warm migration before its replacement: what its
    /// syncs made goes (a registered image stays), and a source its
    /// cut-over stopped runs again.
    pub(super) async fn roll_back_syncs(&self, journal: Journal) -> Result<Rollback> {
        let host = self.host()?;
        let id = journal.migration_id.as_str();
        let mut steps = vec![];
        // Only a source amitool stopped (the cut-over records that it did).
        let stopped = journal.replace.as_ref().is_some_and(|r| r.stopped_source);
        if stopped
            && host
                .instance_state(&journal.region, &journal.source_id)
                .await?
                != "running"
        {
            host.start_instance(&journal.region, &journal.source_id)
                .await?;
            steps.push(format!("started the source {}", journal.source_id));
        }
        let mut removed = migrate::cleanup(host, id).await?;
        let mut journal = Journal::load(&host.journal_dir(), id)?;
        let w = journal.warm.get_or_insert_with(Default::default);
        w.synced = None;
        w.data.clear();
        if let Some(r) = journal.replace.as_mut() {
            r.stopped_source = false;
            r.rolled_back = true;
        }
        journal.save()?;
        steps.append(&mut removed);
        Ok(Rollback {
            migration_id: id.to_string(),
            source_state: host
                .instance_state(&journal.region, &journal.source_id)
                .await?,
            source_instance_id: journal.source_id.clone(),
            replacement_instance_id: String::new(),
            replacement_state: String::new(),
            elastic_ip: None,
            elastic_ip_on: None,
            steps,
        })
    }
}
