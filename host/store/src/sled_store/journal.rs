//! The journal itself: [`RunStore`] on sled's trees, every commit applied
//! whole under the commit lock, in an order of which every prefix is
//! harmless (and as one write-ahead log frame in durable mode).

use super::*;

impl SledStore {
    /// Applies a commit under the commit lock and logs its writes; durable
    /// mode's sync comes after, outside it (see [`SledStore::durable`]).
    /// Returns the ticket to wait on (durable mode).
    ///
    /// Every write to the store holds the commit lock, so the checks (the
    /// lease's fence, the idempotency key) read the trees directly, and
    /// nothing can change between the check and the writes. Durable mode
    /// then writes to sled's trees without a sled transaction: a sled 0.34
    /// transaction seals and writes its log buffer before and after
    /// (`pin_log`), a `pwrite` and a waiting `sync_file_range` each, two per
    /// commit on sled's threads, which the profile put at a fifth of a
    /// run's CPU. In durable mode atomicity comes from the write-ahead log
    /// instead: sled recovers a prefix of its writes, the frame's number
    /// goes in last, and open replays every frame past it (`wal.rs`).
    /// Batched mode, which may lose its last interval anyway, may also keep
    /// a harmless prefix of the last commit it kept.
    fn apply(&self, commit: Commit<'_>) -> Result<Option<u64>, StoreError> {
        // Encoded before the commit lock, which other commits wait for.
        let run = commit.run.map(|run| (run.id.clone(), encode(run)));
        let steps: Vec<(String, Vec<u8>)> = commit
            .steps
            .iter()
            .map(|step| (step_key(&step.run_id, step.index), encode(step)))
            .collect();
        let logs = commit.logs.map(|entry| {
            let record = AttemptLogs {
                attempt: entry.attempt,
                item: entry.item,
                logs: entry.logs.clone(),
            };
            (
                logs_key(entry.run_id, entry.index, entry.item, entry.attempt),
                encode(&record),
            )
        });
        let signal = commit
            .signal
            .map(|signal| (signal_key(&signal.run_id, &signal.step_id), encode(signal)));
        let idempotency = commit
            .idempotency
            .map(|(key, record)| (key.to_owned(), encode(record)));
        let cached = commit
            .cache
            .map(|(key, entry)| (key.to_owned(), encode(entry)));
        let fence = commit.fence;
        let audit_record = commit.audit.map(|record| (record.at_ms, encode(record)));
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        // First: a lost lease or a taken key refuses the whole commit.
        if let Some(fence) = fence {
            let current = self
                .leases
                .get(fence.run_id.as_bytes())
                .map_err(|error| self.database(error))?
                .and_then(|bytes| serde_json::from_slice::<Lease>(&bytes).ok());
            if !current
                .is_some_and(|lease| lease.holder == fence.holder && lease.token == fence.token)
            {
                return Err(StoreError::Fenced(fence.run_id.to_owned()));
            }
        }
        if let Some((key, _)) = &idempotency
            && self
                .idempotency
                .contains_key(key.as_bytes())
                .map_err(|error| self.database(error))?
        {
            return Err(StoreError::KeyTaken(key.clone()));
        }
        // A blob is written once: content-addressed, one already there is
        // the same bytes (and is not logged again).
        let mut blobs_new = Vec::with_capacity(commit.blobs.len());
        for &(digest, bytes) in &commit.blobs {
            if !self
                .blobs
                .contains_key(digest)
                .map_err(|error| self.database(error))?
                && !blobs_new.iter().any(|(known, _)| *known == digest)
            {
                blobs_new.push((digest, bytes));
            }
        }
        // The frame this commit becomes, recorded in sled with it: how far a
        // crash let sled's own files get (see `wal.rs`).
        let seq = self.wal.as_ref().map(|wal| wal.next_seq().to_be_bytes());
        // Keyed by time, then a uuid: oldest first, never two alike.
        let audit = audit_record.map(|(at_ms, value)| {
            let mut key = at_ms.to_be_bytes().to_vec();
            key.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
            (key, value)
        });
        // The writes, in an order of which every prefix is harmless, since
        // a crash may leave a prefix of an unacknowledged commit in sled:
        // blobs before the records naming them, steps before their run, the
        // run before the key that points at it, the frame's number last.
        let mut ops: Vec<(Tree, &[u8], &[u8])> = Vec::new();
        for (digest, bytes) in &blobs_new {
            ops.push((Tree::Blobs, digest.as_bytes(), bytes));
        }
        if let Some((key, value)) = &cached {
            ops.push((Tree::Cache, key.as_bytes(), value));
        }
        if let Some((key, value)) = &signal {
            ops.push((Tree::Signals, key.as_bytes(), value));
        }
        if let Some((key, value)) = &logs {
            ops.push((Tree::Logs, key.as_bytes(), value));
        }
        for (key, value) in &steps {
            ops.push((Tree::Steps, key.as_bytes(), value));
        }
        if let Some((key, value)) = &run {
            ops.push((Tree::Runs, key.as_bytes(), value));
        }
        if let Some((key, value)) = &idempotency {
            ops.push((Tree::Idempotency, key.as_bytes(), value));
        }
        if let Some((key, value)) = &audit {
            ops.push((Tree::Audit, key, value));
        }
        if let Some(seq) = &seq {
            ops.push((Tree::Meta, wal::APPLIED_KEY.as_bytes(), seq));
        }
        // No sled transaction, in either mode: a sled 0.34 transaction seals
        // and writes sled's log buffer out at every commit, each write with
        // a waiting `sync_file_range` (about 2 per commit, measured: a
        // batched step cost 0.44 ms with them, see docs/benchmarks.md). The
        // order above keeps every prefix harmless, and sled recovers a
        // prefix of its writes, so a crash leaves a commit whole, absent, or
        // cut to such a prefix; in durable mode the log then applies an
        // acknowledged one again whole (`wal.rs`).
        let logged = self.wal.is_some();
        let mut writes = Writes::default();
        for &(tree, key, value) in &ops {
            if let Err(error) = self.tree(tree).insert(key, value) {
                // What sled took is logged all the same, so that the log
                // still holds every write sled has, in order; the commit
                // is not acknowledged, and its prefix is harmless.
                self.log(&writes, false);
                return Err(self.database(error));
            }
            if logged {
                writes.put(tree.name(), key, value);
            }
        }
        Ok(self.log(&writes, true))
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::Runs => &self.runs,
            Tree::Steps => &self.steps,
            Tree::Blobs => &self.blobs,
            Tree::Logs => &self.logs,
            Tree::Signals => &self.signals,
            Tree::Idempotency => &self.idempotency,
            Tree::Cache => &self.cache,
            Tree::Audit => &self.audit,
            Tree::Meta => &self.meta,
        }
    }
}

/// The trees a commit writes.
#[derive(Debug, Clone, Copy)]
enum Tree {
    Runs,
    Steps,
    Blobs,
    Logs,
    Signals,
    Idempotency,
    Cache,
    Audit,
    Meta,
}

impl Tree {
    /// Its name in sled and in the write-ahead log.
    fn name(self) -> &'static str {
        match self {
            Tree::Runs => "runs",
            Tree::Steps => "steps",
            Tree::Blobs => "blobs",
            Tree::Logs => "logs",
            Tree::Signals => "signals",
            Tree::Idempotency => "idempotency",
            Tree::Cache => "cache",
            Tree::Audit => "audit",
            Tree::Meta => "meta",
        }
    }
}

impl SledStore {
    /// A write outside a commit that must be durable before it returns (a
    /// webhook delivery, a trigger mark).
    fn put_durably(
        &self,
        name: &str,
        tree: &sled::Tree,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let ticket = {
            let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
            let _writing = WriteMark::new(&self.writing_since_ms);
            tree.insert(key, value)
                .map_err(|error| self.database(error))?;
            let mut writes = Writes::default();
            writes.put(name, key, value);
            self.log(&writes, true)
        };
        if let Some(ticket) = ticket {
            self.durable(ticket)?;
        }
        Ok(())
    }

    /// Writes a lease, with the commit lock held. Not synced on its own:
    /// the run's next commit covers it, and a lease lost in a crash lapses
    /// when the store is opened again.
    fn put_lease(&self, run_id: &str, lease: &Lease) -> Result<(), StoreError> {
        let value = encode(lease);
        self.leases
            .insert(run_id, value.as_slice())
            .map_err(|e| self.database(e))?;
        let mut writes = Writes::default();
        writes.put("leases", run_id.as_bytes(), &value);
        self.log(&writes, false);
        Ok(())
    }
}

impl RunStore for SledStore {
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError> {
        // Durable before the caller moves on: the next step must never start
        // on an output that a power cut could take back.
        if let Some(ticket) = self.apply(commit)? {
            self.durable(ticket)?;
        }
        Ok(())
    }

    fn commit_pending(&self, commit: Commit<'_>) -> Result<Option<u64>, StoreError> {
        self.apply(commit)
    }

    fn poll_durable(
        &self,
        ticket: u64,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), StoreError>> {
        self.group.poll(ticket, cx, || self.sync_to_disk())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self
            .runs
            .get(run_id)
            .map_err(|error| self.database(error))?
        {
            Some(bytes) => decode(run_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        self.steps
            .scan_prefix(format!("{run_id}/"))
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.runs
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn audit_log(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn append_event(&self, run_id: &str, event: &serde_json::Value) -> Result<u64, StoreError> {
        // sled's ids increase across restarts, so a reconnecting client's
        // last seen id still orders against new events.
        let seq = self
            .db
            .generate_id()
            .map_err(|error| self.database(error))?;
        let record = EventRecord {
            seq,
            run_id: run_id.into(),
            event: event.clone(),
        };
        let key = format!("{run_id}/{seq:020}");
        let value = encode(&record);
        // Under the commit lock like every write, so that the log holds
        // writes in the order sled applied them.
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.events
            .insert(key.as_bytes(), value.as_slice())
            .map_err(|error| self.database(error))?;
        if self.wal.is_some() {
            let mut writes = Writes::default();
            writes.put("events", key.as_bytes(), &value);
            self.log(&writes, false);
        }
        Ok(seq)
    }

    fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let key = format!("{}/{}", delivery.run_id, delivery.id);
        self.put_durably(
            "webhooks",
            &self.webhooks,
            key.as_bytes(),
            &encode(delivery),
        )
    }

    fn trigger_mark(&self, key: &str) -> Result<Option<TriggerMark>, StoreError> {
        match self
            .triggers
            .get(key)
            .map_err(|error| self.database(error))?
        {
            Some(value) => decode(key.as_bytes(), &value).map(Some),
            None => Ok(None),
        }
    }

    fn put_trigger_mark(&self, key: &str, mark: &TriggerMark) -> Result<(), StoreError> {
        self.put_durably("triggers", &self.triggers, key.as_bytes(), &encode(mark))
    }

    fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let mut deliveries: Vec<Delivery> = self
            .webhooks
            .scan_prefix(format!("{run_id}/"))
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect::<Result<_, _>>()?;
        deliveries.sort_by_key(|delivery| delivery.created_at_ms);
        Ok(deliveries)
    }

    fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.webhooks.iter() {
            let (key, value) = entry.map_err(|error| self.database(error))?;
            let delivery: Delivery = decode(&key, &value)?;
            if delivery.state == "pending" {
                pending.push(delivery);
            }
        }
        Ok(pending)
    }

    fn events(&self, run_id: &str, after: Option<u64>) -> Result<Vec<EventRecord>, StoreError> {
        let start = match after {
            Some(seq) => format!("{run_id}/{:020}", seq.saturating_add(1)),
            None => format!("{run_id}/"),
        };
        let end = format!("{run_id}0"); // '0' follows '/'
        self.events
            .range(start..end)
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn runs_page(
        &self,
        before: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&RunRecord) -> bool,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let entries = match before {
            Some(id) => self.runs.range(..id.as_bytes().to_vec()),
            None => self.runs.iter(),
        };
        let mut page = Vec::new();
        for entry in entries.rev() {
            if page.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|error| self.database(error))?;
            let run: RunRecord = decode(&key, &value)?;
            if keep(&run) {
                page.push(run);
            }
        }
        Ok(page)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .blobs
            .get(digest)
            .map_err(|error| self.database(error))?
            .map(|bytes| bytes.to_vec()))
    }

    fn acquire_lease(&self, run_id: &str, holder: &str, ttl_ms: u64) -> Result<Lease, StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        let now = crate::clock::now_ms();
        let current: Option<Lease> = match self.leases.get(run_id).map_err(|e| self.database(e))? {
            Some(bytes) => Some(decode(run_id.as_bytes(), &bytes)?),
            None => None,
        };
        if let Some(current) = &current
            && current.holder != holder
            && current.expires_at_ms > now
        {
            return Err(StoreError::LeaseHeld {
                run_id: run_id.to_owned(),
                holder: current.holder.clone(),
                until_ms: current.expires_at_ms,
            });
        }
        // A lease that lapsed without being released (leases written
        // before `renewed_at_ms` was kept say nothing either way).
        let abandoned = current
            .as_ref()
            .filter(|current| {
                !current.released && current.renewed_at_ms > 0 && current.expires_at_ms <= now
            })
            .map(|current| Abandoned {
                holder: current.holder.clone(),
                heard_at_ms: current.renewed_at_ms,
            });
        let lease = Lease {
            holder: holder.to_owned(),
            token: current.map_or(1, |current| current.token + 1),
            expires_at_ms: now + ttl_ms,
            renewed_at_ms: now,
            released: false,
            abandoned: None,
        };
        self.put_lease(run_id, &lease)?;
        Ok(Lease { abandoned, ..lease })
    }

    fn renew_lease(&self, run_id: &str, lease: &Lease, ttl_ms: u64) -> Result<Lease, StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current: Option<Lease> = match self.leases.get(run_id).map_err(|e| self.database(e))? {
            Some(bytes) => Some(decode(run_id.as_bytes(), &bytes)?),
            None => None,
        };
        if current
            .as_ref()
            .is_none_or(|current| current.holder != lease.holder || current.token != lease.token)
        {
            return Err(StoreError::Fenced(run_id.to_owned()));
        }
        let now = crate::clock::now_ms();
        let renewed = Lease {
            expires_at_ms: now + ttl_ms,
            renewed_at_ms: now,
            ..lease.clone()
        };
        self.put_lease(run_id, &renewed)?;
        Ok(renewed)
    }

    fn release_lease(&self, run_id: &str, lease: &Lease) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = self.leases.get(run_id).map_err(|e| self.database(e))? {
            let current: Lease = decode(run_id.as_bytes(), &bytes)?;
            if current.holder == lease.holder && current.token == lease.token {
                let released = Lease {
                    expires_at_ms: 0,
                    released: true,
                    ..current
                };
                self.put_lease(run_id, &released)?;
            }
        }
        Ok(())
    }

    fn lease(&self, run_id: &str) -> Result<Option<Lease>, StoreError> {
        match self.leases.get(run_id).map_err(|e| self.database(e))? {
            Some(bytes) => decode(run_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn has_blob(&self, digest: &str) -> Result<bool, StoreError> {
        self.blobs
            .contains_key(digest)
            .map_err(|error| self.database(error))
    }

    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self
            .idempotency
            .get(key)
            .map_err(|error| self.database(error))?
        {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn cached(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        match self.cache.get(key).map_err(|error| self.database(error))? {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn signal(&self, run_id: &str, step_id: &str) -> Result<Option<Signal>, StoreError> {
        let key = signal_key(run_id, step_id);
        match self
            .signals
            .get(&key)
            .map_err(|error| self.database(error))?
        {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn collect_inbox(&self) -> Result<Vec<Signal>, StoreError> {
        let inbox = inbox_dir(&self.path);
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            return Ok(Vec::new());
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        // UUIDv7 names: oldest first, so the first signal sent wins.
        files.sort();
        let mut collected = Vec::new();
        for path in files {
            let Ok(bytes) = crate::files::read(&path, crate::files::Kind::Input) else {
                continue;
            };
            match serde_json::from_slice::<Signal>(&bytes) {
                Ok(signal) if self.run(&signal.run_id)?.is_none() => {
                    tracing::warn!(target: "plait::store::sled_store", run = %signal.run_id, step = %signal.step_id, "a signal for a run this store does not hold was dropped");
                }
                Ok(signal) => {
                    if self.signal(&signal.run_id, &signal.step_id)?.is_none() {
                        self.commit(Commit {
                            signal: Some(&signal),
                            audit: Some(&signal.audit()),
                            ..Commit::default()
                        })?;
                        collected.push(signal);
                    } else {
                        tracing::warn!(target: "plait::store::sled_store", run = %signal.run_id, step = %signal.step_id, "a second signal for one step was ignored");
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "plait::store::sled_store", file = %path.display(), %error, "an unreadable signal file was dropped");
                }
            }
            // Only after the commit: a crash before it leaves the file to
            // collect again.
            let _ = std::fs::remove_file(&path);
        }
        Ok(collected)
    }

    fn logs(&self, run_id: &str, step_index: u32) -> Result<Vec<AttemptLogs>, StoreError> {
        self.logs
            .scan_prefix(format!("{}/", step_key(run_id, step_index)))
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }
}
