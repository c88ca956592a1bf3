//! The end of a batch in the SQLite store: expiry and cancels end pending requests with
//! error lines; a batch with nothing left to run gets its output and error files.

use super::*;

impl Store {
    /// End what has to end: expired batches, cancels, batches with nothing left to run.
    /// Pending requests of expired or cancelled batches get error lines; finished batches
    /// get their output and error files.
    pub(super) fn settle(&self, lifetime: i64) -> Result<Vec<String>, String> {
        let ended = {
            let db = self.db();
            let t = now();
            let e = |e: rusqlite::Error| e.to_string();
            for (status, code) in [
                ("expired", "batch_expired"),
                ("cancelled", "batch_cancelled"),
            ] {
                let cond = if status == "expired" {
                    format!("status = 'in_progress' AND expires_at <= {t}")
                } else {
                    "status = 'cancelling'".to_string()
                };
                let line = |cid: &str| unrun_line(cid, code);
                let mut st = db
                    .prepare(&format!(
                        "SELECT r.batch_id, r.custom_id FROM requests r JOIN batches b ON b.id = r.batch_id WHERE b.{cond} AND r.state = 'pending'"
                    ))
                    .map_err(e)?;
                for (b, c) in pairs(&mut st).map_err(e)? {
                    db.execute(
                        "UPDATE requests SET state = 'failed', result = ?3 WHERE batch_id = ?1 AND custom_id = ?2 AND state = 'pending'",
                        params![b, c, line(&c)],
                    )
                    .map_err(e)?;
                }
                if status == "expired" {
                    db.execute(
                        &format!("UPDATE batches SET status = 'expiring' WHERE {cond}"),
                        [],
                    )
                    .map_err(e)?;
                }
            }
            // Batches with nothing pending or running are ready to finalize.
            let mut st = db
                .prepare(
                    "SELECT id, status FROM batches b WHERE status IN ('in_progress', 'cancelling', 'expiring')
                     AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = b.id AND r.state IN ('pending', 'running'))",
                )
                .map_err(e)?;
            pairs(&mut st).map_err(e)?
        };
        let mut done = Vec::new();
        for (id, status) in ended {
            self.finalize(&id, &status, lifetime)?;
            done.push(id);
        }
        Ok(done)
    }

    /// Write the output and error files of a batch whose requests have all ended.
    pub(super) fn finalize(&self, id: &str, status: &str, lifetime: i64) -> Result<(), String> {
        let e = |e: rusqlite::Error| e.to_string();
        let consumer: Option<String> = self
            .db()
            .query_row("SELECT consumer FROM batches WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(e)?;
        self.db()
            .execute(
                "UPDATE batches SET finalizing_at = ?2 WHERE id = ?1",
                params![id, now()],
            )
            .map_err(e)?;
        let mut files = [(true, None::<String>), (false, None)];
        for (ok, file_id) in files.iter_mut() {
            let fid = new_id("file-");
            let path = self.file_path(&fid);
            let mut out = std::io::BufWriter::new(
                crate::owner_only::file_options()
                    .open(&path)
                    .map_err(|e| e.to_string())?,
            );
            let mut bytes = 0u64;
            {
                use std::io::Write;
                let db = self.db();
                let mut st = db
                    .prepare("SELECT result FROM requests WHERE batch_id = ?1 AND state = ?2 ORDER BY line")
                    .map_err(e)?;
                let rows = st
                    .query_map(params![id, if *ok { "done" } else { "failed" }], |r| {
                        r.get::<_, String>(0)
                    })
                    .map_err(e)?;
                for line in rows {
                    let line = line.map_err(e)?;
                    out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                    out.write_all(b"\n").map_err(|e| e.to_string())?;
                    bytes += line.len() as u64 + 1;
                }
                out.flush().map_err(|e| e.to_string())?;
            }
            if bytes == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let name = if *ok {
                "batch_output.jsonl"
            } else {
                "batch_errors.jsonl"
            };
            self.insert_file(
                consumer.as_deref(),
                &FileRow::batch_output(fid.clone(), id, name, bytes, lifetime),
            )
            .map_err(e)?;
            *file_id = Some(fid);
        }
        let (final_status, stamp) = match status {
            "cancelling" => ("cancelled", "cancelled_at"),
            "expiring" => ("expired", "expired_at"),
            _ => ("completed", "completed_at"),
        };
        self.db()
            .execute(
                &format!("UPDATE batches SET status = ?2, {stamp} = ?3, output_file_id = ?4, error_file_id = ?5 WHERE id = ?1"),
                params![id, final_status, now(), files[0].1, files[1].1],
            )
            .map_err(e)?;
        Ok(())
    }
}
