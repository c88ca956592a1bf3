//! The batch model both stores return: a [`Batch`] with a typed [`BatchStatus`], turned
//! into OpenAI's Batch object in one place ([`Batch::object`]), whichever store it came
//! from.

use serde_json::{json, Value};

/// A batch's status as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Validating,
    InProgress,
    Finalizing,
    Completed,
    Failed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    /// A stored status. The stores' internal `expiring` (pending requests being ended
    /// after the completion window) is still `in_progress` to clients, as OpenAI shows it
    /// until the batch is `expired`.
    pub fn parse(stored: &str) -> Option<BatchStatus> {
        Some(match stored {
            "validating" => BatchStatus::Validating,
            "in_progress" | "expiring" => BatchStatus::InProgress,
            "finalizing" => BatchStatus::Finalizing,
            "completed" => BatchStatus::Completed,
            "failed" => BatchStatus::Failed,
            "expired" => BatchStatus::Expired,
            "cancelling" => BatchStatus::Cancelling,
            "cancelled" => BatchStatus::Cancelled,
            _ => return None,
        })
    }

    /// A stored status as clients see it (unknown ones as they are).
    pub fn shown(stored: &str) -> String {
        match BatchStatus::parse(stored) {
            Some(s) => s.as_str().to_string(),
            None => stored.to_string(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Failed => "failed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }
}

/// A request's stored state: it moves `pending → running → done | failed` only forward
/// (a retry puts a running request back to pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Running,
    Done,
    Failed,
}

impl RequestState {
    pub fn parse(stored: &str) -> Option<RequestState> {
        Some(match stored {
            "pending" => RequestState::Pending,
            "running" => RequestState::Running,
            "done" => RequestState::Done,
            "failed" => RequestState::Failed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Running => "running",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
        }
    }

    /// The status the API shows: a failed request that a cancel or the completion window
    /// ended is `cancelled` / `expired`.
    pub fn shown(self, result: &Value) -> &'static str {
        match self {
            RequestState::Done => "completed",
            RequestState::Failed if result["error"]["code"] == "batch_cancelled" => "cancelled",
            RequestState::Failed if result["error"]["code"] == "batch_expired" => "expired",
            other => other.as_str(),
        }
    }
}

/// What a cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The batch is now `cancelling`.
    Requested,
    /// No such batch for this consumer.
    NotFound,
    /// The batch cannot be cancelled in this status (it has ended, or is ending).
    Refused(String),
}

/// One batch, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: String,
    pub endpoint: String,
    pub model: Option<String>,
    /// Validation errors (`{"object":"list","data":[…]}`), or null.
    pub errors: Value,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: Option<i64>,
    pub in_progress_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub metadata: Value,
    /// The webhook URL and its delivery record (`{delivered, failed, last}`), if any.
    pub webhook: Option<(String, Value)>,
}

impl Batch {
    /// OpenAI's Batch object (plus the gateway's `webhook` field).
    pub fn object(&self) -> Value {
        let (input, output) = (self.input_tokens, self.output_tokens);
        json!({
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": self.errors, "input_file_id": self.input_file_id,
            "completion_window": self.completion_window, "status": self.status.as_str(),
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": self.created_at, "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at, "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at, "failed_at": self.failed_at,
            "expired_at": self.expired_at, "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed,
                               "failed": self.failed},
            "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": input + output},
            "metadata": self.metadata,
            "webhook": self.webhook.as_ref().map(|(url, record)| {
                let mut w = if record.is_object() {
                    record.clone()
                } else {
                    json!({"delivered": 0, "failed": 0})
                };
                w["url"] = json!(url);
                w
            }),
        })
    }
}

/// A JSON column or field: its value, or null when absent or not JSON.
pub fn json_or_null(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_statuses_never_reach_clients() {
        assert_eq!(
            BatchStatus::parse("expiring"),
            Some(BatchStatus::InProgress)
        );
        assert_eq!(BatchStatus::parse("nope"), None);
        for s in [
            "validating",
            "in_progress",
            "finalizing",
            "completed",
            "failed",
            "expired",
            "cancelling",
            "cancelled",
        ] {
            assert_eq!(BatchStatus::parse(s).unwrap().as_str(), s);
        }
        let cancelled = json!({"error": {"code": "batch_cancelled"}});
        assert_eq!(RequestState::Failed.shown(&cancelled), "cancelled");
        assert_eq!(RequestState::Failed.shown(&Value::Null), "failed");
        assert_eq!(RequestState::Done.shown(&Value::Null), "completed");
        assert_eq!(
            RequestState::parse("running").map(RequestState::as_str),
            Some("running")
        );
    }
}
