//! A running batch's requests in the SQLite store: claiming due ones (their bodies read
//! from the input file), writing each result once, retries, results and one request's
//! state.

use super::*;

impl Store {
    /// Claim up to `n` pending requests of running batches, oldest batch first, of the
    /// batches on `queue`: one model, or every model but some.
    pub(super) fn claim(&self, n: usize, queue: Queue<'_>) -> rusqlite::Result<Vec<Claimed>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let claimed: Vec<Claimed> = {
            // The running batches of the queue, oldest first (few rows).
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let filter = match queue {
                Queue::Model(m) => {
                    args.push(m.to_string().into());
                    "AND model = ?1".to_string()
                }
                Queue::AllBut(models) if !models.is_empty() => {
                    args.extend(models.iter().map(|m| m.clone().into()));
                    let marks: Vec<String> = (1..=models.len()).map(|i| format!("?{i}")).collect();
                    format!("AND (model IS NULL OR model NOT IN ({}))", marks.join(","))
                }
                Queue::AllBut(_) => String::new(),
            };
            let mut st = tx.prepare(&format!(
                "SELECT id, consumer, endpoint, model, input_file_id FROM batches
                 WHERE status = 'in_progress' {filter} ORDER BY created_at, id"
            ))?;
            type Running = (String, Option<String>, String, Option<String>, String);
            let batches = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<Running>>>()?;
            // Then each one's due requests in line order (index requests_due).
            let mut st = tx.prepare(
                "SELECT custom_id, body, attempts, start, len FROM requests INDEXED BY requests_due
                 WHERE batch_id = ?1 AND state = 'pending' AND not_before <= ?2
                 ORDER BY line LIMIT ?3",
            )?;
            let now = now_ms();
            let mut claimed = Vec::new();
            for (id, consumer, endpoint, model, input) in batches {
                if claimed.len() >= n {
                    break;
                }
                let left = (n - claimed.len()) as i64;
                let mut lines = space::LineReader::new(self.file_path(&input));
                let rows = st.query_map(params![id, now, left], |r| {
                    let at = match (r.get::<_, Option<i64>>(3)?, r.get::<_, Option<i64>>(4)?) {
                        (Some(start), Some(len)) => Some(crate::batch::backend::LineRef {
                            start: start as u64,
                            len: len as u64,
                        }),
                        _ => None,
                    };
                    Ok((
                        Claimed {
                            batch_id: id.clone(),
                            custom_id: r.get(0)?,
                            consumer: consumer.clone(),
                            endpoint: endpoint.clone(),
                            body: r.get(1)?,
                            attempts: r.get::<_, i64>(2)? as u32,
                            model: model.clone(),
                            entry: None,
                        },
                        at,
                    ))
                })?;
                for c in rows {
                    let (mut c, at) = c?;
                    if let Some(at) = at {
                        // An unreadable line runs as an empty body: an error line, not a stall.
                        c.body = lines.body(at).unwrap_or_default();
                    }
                    claimed.push(c);
                }
            }
            claimed
        };
        for c in &claimed {
            tx.execute(
                "UPDATE requests SET state = 'running', owner = ?3 WHERE batch_id = ?1 AND custom_id = ?2",
                params![c.batch_id, c.custom_id, self.me],
            )?;
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Write a request's result line once (`ok`: an output line, else an error line).
    pub(super) fn finish(
        &self,
        batch_id: &str,
        custom_id: &str,
        ok: bool,
        line: &Value,
        tokens: (u64, u64),
    ) -> rusqlite::Result<()> {
        let db = self.db();
        let n = db.execute(
            "UPDATE requests SET state = ?3, result = ?4, attempts = attempts + 1
             WHERE batch_id = ?1 AND custom_id = ?2 AND state IN ('pending', 'running')",
            params![
                batch_id,
                custom_id,
                if ok { "done" } else { "failed" },
                line.to_string()
            ],
        )?;
        if n > 0 {
            db.execute(
                "UPDATE batches SET input_tokens = input_tokens + ?2, output_tokens = output_tokens + ?3 WHERE id = ?1",
                params![batch_id, tokens.0 as i64, tokens.1 as i64],
            )?;
        }
        Ok(())
    }

    /// Put a request back for another try no earlier than `not_before_ms`.
    pub(super) fn retry(
        &self,
        batch_id: &str,
        custom_id: &str,
        not_before_ms: i64,
        counts: bool,
    ) -> rusqlite::Result<()> {
        self.db().execute(
            "UPDATE requests SET state = 'pending', not_before = ?3, attempts = attempts + ?4
             WHERE batch_id = ?1 AND custom_id = ?2 AND state = 'running'",
            params![batch_id, custom_id, not_before_ms, i64::from(counts)],
        )?;
        Ok(())
    }

    /// Whether `consumer` owns batch `id`.
    pub(super) fn owns(
        db: &Connection,
        consumer: Option<&str>,
        id: &str,
    ) -> rusqlite::Result<bool> {
        db.query_row(
            "SELECT 1 FROM batches WHERE id = ?1 AND consumer IS ?2",
            params![id, consumer],
            |_| Ok(()),
        )
        .optional()
        .map(|o| o.is_some())
    }

    /// Result lines of a batch (output and error lines), in input order, after input line
    /// `after_line`: (line, result). `None`: no such batch for this consumer.
    pub(super) fn results(
        &self,
        consumer: Option<&str>,
        id: &str,
        after_line: i64,
        limit: usize,
    ) -> rusqlite::Result<Option<Vec<(i64, String)>>> {
        let db = self.db();
        if !Self::owns(&db, consumer, id)? {
            return Ok(None);
        }
        let mut st = db.prepare(
            "SELECT line, result FROM requests WHERE batch_id = ?1 AND line > ?2 AND result IS NOT NULL ORDER BY line LIMIT ?3",
        )?;
        let rows = st.query_map(params![id, after_line, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<rusqlite::Result<_>>().map(Some)
    }

    /// One request of a batch: `{custom_id, status, attempts, result}`.
    pub(super) fn request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> rusqlite::Result<Option<Value>> {
        let db = self.db();
        if !Self::owns(&db, consumer, id)? {
            return Ok(None);
        }
        db.query_row(
            "SELECT state, attempts, result FROM requests WHERE batch_id = ?1 AND custom_id = ?2",
            params![id, custom_id],
            |r| {
                let state: String = r.get(0)?;
                let result: Option<String> = r.get(2)?;
                let result: Value = result
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null);
                let status = request_status(&state, &result);
                Ok(
                    json!({"object": "batch.request", "custom_id": custom_id, "status": status,
                          "attempts": r.get::<_, i64>(1)?, "result": result}),
                )
            },
        )
        .optional()
    }

    /// Cancel one request that has not run yet: `Ok(false)` when it is running or ended.
    pub(super) fn cancel_request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> rusqlite::Result<Option<bool>> {
        let db = self.db();
        if !Self::owns(&db, consumer, id)? {
            return Ok(None);
        }
        let line = unrun_line(custom_id, "batch_cancelled");
        let n = db.execute(
            "UPDATE requests SET state = 'failed', result = ?3 WHERE batch_id = ?1 AND custom_id = ?2 AND state = 'pending'",
            params![id, custom_id, line],
        )?;
        Ok(Some(n > 0))
    }

    /// Requests waiting to run, over every batch (a gauge).
    pub(super) fn pending(&self) -> rusqlite::Result<i64> {
        self.db().query_row(
            "SELECT COUNT(*) FROM requests WHERE state IN ('pending', 'running')",
            [],
            |r| r.get(0),
        )
    }
}
