//! The audit log: who did what, when, and how it ended.
//!
//! One row per command submission (accepted or refused, from the API or
//! MQTT) and per admin action (devices created, revoked or rotated; API keys
//! created or revoked), from the API or the CLI. Rows are only appended.
//! Writes happen on those actions alone, never on the telemetry path. The
//! callers decide what a failed audit write means; the hub logs and counts
//! it rather than turning a completed action into an error (see
//! `api::audit::record`).
//!
//! Listing pages newest first by id, with the same `before` cursor as the
//! command lists.

use super::{Backend, Store, StoreError, now_ms};

/// Longest actor, action or target stored, in characters; longer values are
/// cut (they come from names and ids, which are shorter).
const MAX_FIELD_CHARS: usize = 200;

/// An entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// Who: `api:<key name>`, `mqtt` or `cli`.
    pub actor: String,
    /// What: `command.create`, `device.create`, `device.revoke`,
    /// `device.rotate_token`, `api_key.create`, `api_key.revoke`.
    pub action: String,
    /// On what: a device or API key id (or the id that was asked for).
    pub target: Option<String>,
    /// How it ended: `ok`, or the refusal's error code (`not_found`, …).
    pub outcome: String,
    /// Anything else worth keeping, as a JSON object (never a secret).
    pub detail: serde_json::Value,
}

impl NewAuditEntry {
    /// An entry with an empty detail object.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: Option<&str>,
        outcome: impl Into<String>,
    ) -> NewAuditEntry {
        NewAuditEntry {
            actor: actor.into(),
            action: action.into(),
            target: target.map(str::to_owned),
            outcome: outcome.into(),
            detail: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// The same entry with `detail`.
    pub fn with_detail(mut self, detail: serde_json::Value) -> NewAuditEntry {
        self.detail = detail;
        self
    }
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Increasing id; the paging cursor.
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: String,
    /// More, as a JSON object.
    pub detail: serde_json::Value,
}

/// Which entries [`Store::list_audit`] returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Most entries per page (at least 1 is returned when any match).
    pub limit: u32,
    /// Only entries with an id below this (the previous page's cursor).
    pub before_id: Option<i64>,
    /// Only entries by exactly this actor.
    pub actor: Option<String>,
    /// Only entries of exactly this action.
    pub action: Option<String>,
}

/// One page of entries, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// `before_id` for the next page; None on the last.
    pub next_before_id: Option<i64>,
}

/// What a backend reads back: the detail still as JSON text.
pub(crate) struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<AuditEntry, StoreError> {
        let detail = serde_json::from_str(&row.detail).map_err(|err| {
            StoreError::Corrupt(format!("audit entry {} has bad detail: {err}", row.id))
        })?;
        Ok(AuditEntry {
            id: row.id,
            at_ms: row.at,
            actor: row.actor,
            action: row.action,
            target: row.target,
            outcome: row.outcome,
            detail,
        })
    }
}

/// `value` cut to [`MAX_FIELD_CHARS`] characters, without control characters
/// (Postgres refuses NUL in text; logs and terminals mind the rest).
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_CHARS)
        .collect()
}

/// Removes NUL from every string of `value`, keys included: Postgres
/// refuses `\u0000` in JSONB, and a hostile request may carry one.
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            let old = std::mem::take(map);
            for (key, mut item) in old {
                scrub(&mut item);
                map.insert(key.replace('\0', ""), item);
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

impl Store {
    /// Appends `entry`, stamped with the current time; returns its id.
    pub async fn record_audit(&self, entry: &NewAuditEntry) -> Result<i64, StoreError> {
        let entry = NewAuditEntry {
            actor: clean(&entry.actor),
            action: clean(&entry.action),
            target: entry.target.as_deref().map(clean),
            outcome: clean(&entry.outcome),
            detail: {
                let mut detail = entry.detail.clone();
                scrub(&mut detail);
                detail
            },
        };
        // Serialising a `Value` cannot fail; `\u0000` is escaped, so Postgres takes it.
        let detail = serde_json::to_string(&entry.detail)
            .map_err(|err| StoreError::Corrupt(format!("audit detail: {err}")))?;
        let at = now_ms();
        match &*self.backend {
            Backend::Sqlite(db) => db.insert_audit(at, &entry, &detail).await,
            Backend::Postgres(db) => db.insert_audit(at, &entry, &detail).await,
        }
    }

    /// Deletes at most `limit` entries recorded before `cutoff_ms`, oldest
    /// first, in one statement; returns how many. Fewer than `limit` means
    /// none older remain.
    pub async fn delete_audit_before(&self, cutoff_ms: i64, limit: u32) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        match &*self.backend {
            Backend::Sqlite(db) => db.delete_audit_before(cutoff_ms, limit).await,
            Backend::Postgres(db) => db.delete_audit_before(cutoff_ms, limit).await,
        }
    }

    /// A page of entries, newest first.
    pub async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let limit = query.limit.max(1);
        let mut fetch = query.clone();
        fetch.limit = limit + 1;
        let rows = match &*self.backend {
            Backend::Sqlite(db) => db.list_audit(&fetch).await?,
            Backend::Postgres(db) => db.list_audit(&fetch).await?,
        };
        let mut entries = rows
            .into_iter()
            .map(AuditEntry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before_id = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_before_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_and_cleaned() {
        assert_eq!(clean("a\u{0}b\nc"), "abc");
        assert_eq!(clean(&"x".repeat(500)).chars().count(), MAX_FIELD_CHARS);
        let mut detail = serde_json::json!({"a\u{0}": ["x\u{0}y", {"k": "\u{0}"}], "n": 1});
        scrub(&mut detail);
        assert_eq!(detail, serde_json::json!({"a": ["xy", {"k": ""}], "n": 1}));
    }
}
