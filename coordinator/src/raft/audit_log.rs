//! The audit trail as stored: the `audit` table of the store, read a page or a stream at a time
//! in one redb read transaction, so no reader ever holds the whole trail in memory. Every read
//! first has the state machine write what it applied (`StateMachineStore::write_applied`), so it
//! sees every entry applied before it.

use super::state_machine::StateMachineStore;
use super::store::{decode, StoreError, AUDIT};
use crate::state::audit::{self, AuditEntry, Break, Page};
use redb::{ReadableTable, ReadableTableMetadata};

/// A read handle on the stored trail (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    sm: StateMachineStore,
}

impl AuditLog {
    pub(super) fn new(sm: StateMachineStore) -> Self {
        Self { sm }
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.sm.write_applied()?;
        Ok(self.sm.db().begin_read()?)
    }

    /// The entries with `after < seq < before` that `keep` accepts, at most `limit` of them (see
    /// `audit::page`), read from one consistent view of the store.
    pub fn page(
        &self,
        keep: impl Fn(&AuditEntry) -> bool,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let lo = after.map_or(0, |a| a.saturating_add(1));
        let hi = before.unwrap_or(u64::MAX).max(lo);
        let range = table.range(lo..hi)?.map(|row| -> Result<AuditEntry, StoreError> {
            let (_, v) = row?;
            decode("audit entry", v.value())
        });
        audit::page_of(range, keep, after.is_some(), limit)
    }

    /// Walks the stored chain from the first entry, one entry at a time: `(verdict, total)`.
    pub fn verify(&self) -> Result<(Result<u64, Break>, u64), StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let total = table.len()?;
        let entries = table.iter()?.map(|row| -> Result<AuditEntry, StoreError> {
            let (_, v) = row?;
            decode("audit entry", v.value())
        });
        Ok((audit::verify_stream(entries)?, total))
    }
}
