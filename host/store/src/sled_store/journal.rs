//! The journal itself: [`RunStore`] on sled's trees, every commit one
//! transaction.

use super::*;

impl SledStore {
    /// Applies a commit's transaction under the commit lock and logs its
    /// writes; durable mode's sync comes after, outside it (see
    /// [`SledStore::durable`]). Returns the ticket to wait on (durable mode).
    fn apply(&self, commit: Commit<'_>) -> Result<Option<u64>, StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        // Encode outside the transaction closure, which sled may re-run.
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
        let audit = commit.audit.map(|record| {
            let mut key = record.at_ms.to_be_bytes().to_vec();
            key.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
            (key, encode(record))
        });
        let result: Result<(), TransactionError<Abort>> = (
            &self.runs,
            &self.steps,
            &self.blobs,
            &self.logs,
            &self.signals,
            &self.idempotency,
            &self.cache,
            &self.leases,
            &self.audit,
            &self.meta,
        )
            .transaction(
                |(
                    runs,
                    steps_tree,
                    blobs,
                    logs_tree,
                    signals,
                    keys,
                    cache,
                    leases,
                    audit_tree,
                    meta,
                )| {
                    // First: a lost lease or a taken key aborts the whole
                    // commit.
                    if let Some(fence) = fence {
                        let current = leases
                            .get(fence.run_id.as_bytes())?
                            .and_then(|bytes| serde_json::from_slice::<Lease>(&bytes).ok());
                        if !current.is_some_and(|lease| {
                            lease.holder == fence.holder && lease.token == fence.token
                        }) {
                            return Err(ConflictableTransactionError::Abort(Abort::Fenced));
                        }
                    }
                    if let Some((key, value)) = &idempotency {
                        if keys.get(key.as_bytes())?.is_some() {
                            return Err(ConflictableTransactionError::Abort(Abort::KeyTaken));
                        }
                        keys.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &cached {
                        cache.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &signal {
                        signals.insert(key.as_bytes(), value.as_slice())?;
                    }
                    for (digest, bytes) in &blobs_new {
                        blobs.insert(*digest, *bytes)?;
                    }
                    for (key, value) in &steps {
                        steps_tree.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &logs {
                        logs_tree.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &run {
                        runs.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &audit {
                        audit_tree.insert(key.as_slice(), value.as_slice())?;
                    }
                    if let Some(seq) = &seq {
                        meta.insert(wal::APPLIED_KEY, seq)?;
                    }
                    Ok::<(), ConflictableTransactionError<Abort>>(())
                },
            );
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(error)) => return Err(self.database(error)),
            Err(TransactionError::Abort(Abort::KeyTaken)) => {
                let key = commit.idempotency.map(|(key, _)| key).unwrap_or_default();
                return Err(StoreError::KeyTaken(key.to_owned()));
            }
            Err(TransactionError::Abort(Abort::Fenced)) => {
                let run_id = fence.map(|fence| fence.run_id).unwrap_or_default();
                return Err(StoreError::Fenced(run_id.to_owned()));
            }
        }
        if self.wal.is_none() {
            return Ok(None);
        }
        // The same writes, in the transaction's order, as one frame.
        let mut writes = Writes::default();
        if let Some((key, value)) = &idempotency {
            writes.put("idempotency", key.as_bytes(), value);
        }
        if let Some((key, value)) = &cached {
            writes.put("cache", key.as_bytes(), value);
        }
        if let Some((key, value)) = &signal {
            writes.put("signals", key.as_bytes(), value);
        }
        for (digest, bytes) in &blobs_new {
            writes.put("blobs", digest.as_bytes(), bytes);
        }
        for (key, value) in &steps {
            writes.put("steps", key.as_bytes(), value);
        }
        if let Some((key, value)) = &logs {
            writes.put("logs", key.as_bytes(), value);
        }
        if let Some((key, value)) = &run {
            writes.put("runs", key.as_bytes(), value);
        }
        if let Some((key, value)) = &audit {
            writes.put("audit", key, value);
        }
        if let Some(seq) = &seq {
            writes.put("meta", wal::APPLIED_KEY.as_bytes(), seq);
        }
        Ok(self.log(&writes, true))
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
