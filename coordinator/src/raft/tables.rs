//! The state machine's entity tables, each declared once: a `Row` impl says its table name, its
//! key and where its rows live in `State`; the store opens, loads, rewrites and writes the touched
//! rows of every table in `TABLES` without naming any of them. Adding an entity's table is one
//! `impl Row` and one line in `TABLES`.

use super::store::{decode, encode, StoreError};
use crate::state::apikey::ApiKey;
use crate::state::billing::Invoice;
use crate::state::device::Device;
use crate::state::devicetoken::DeviceToken;
use crate::state::exposure::Exposure;
use crate::state::firewall::FirewallRule;
use crate::state::names::TenantName;
use crate::state::node::{JoinToken, Node};
use crate::state::tenant::Tenant;
use crate::state::usage::{Bucket, Cursor};
use crate::state::{State, Touched};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// An entity stored one row per value, keyed like its map in `State`.
pub trait Row: Serialize + DeserializeOwned + 'static {
    /// The table's name in the redb file (existing files use it: never rename).
    const TABLE: &'static str;
    /// The key of the state's map.
    type Id: Ord + Clone + 'static;
    /// The key column's redb type (`&str` or `u64`).
    type Key: redb::Key + 'static;
    fn rows(state: &State) -> &BTreeMap<Self::Id, Self>;
    fn rows_mut(state: &mut State) -> &mut BTreeMap<Self::Id, Self>;
    fn id(&self) -> Self::Id;
    fn key(id: &Self::Id) -> <Self::Key as redb::Value>::SelfType<'_>;
    /// The row `touched` names, when it is one of this table's.
    fn touched(touched: &Touched) -> Option<&Self::Id>;
}

impl Row for Node {
    const TABLE: &'static str = "nodes";
    type Id = u64;
    type Key = u64;
    fn rows(state: &State) -> &BTreeMap<u64, Self> {
        &state.nodes
    }
    fn rows_mut(state: &mut State) -> &mut BTreeMap<u64, Self> {
        &mut state.nodes
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn key(id: &u64) -> u64 {
        *id
    }
    fn touched(touched: &Touched) -> Option<&u64> {
        if let Touched::Node(id) = touched {
            Some(id)
        } else {
            None
        }
    }
}

/// A table of one row per tenant whose map in `State` is `$field`, the tenant's name in the
/// row's `$name`.
macro_rules! tenant_rows {
    ($ty:ty, $table:literal, $field:ident, $touched:ident, $name:ident) => {
        impl Row for $ty {
            const TABLE: &'static str = $table;
            type Id = TenantName;
            type Key = &'static str;
            fn rows(state: &State) -> &BTreeMap<TenantName, Self> {
                &state.$field
            }
            fn rows_mut(state: &mut State) -> &mut BTreeMap<TenantName, Self> {
                &mut state.$field
            }
            fn id(&self) -> TenantName {
                self.$name.clone()
            }
            fn key(id: &TenantName) -> &str {
                id.as_str()
            }
            fn touched(touched: &Touched) -> Option<&TenantName> {
                if let Touched::$touched(id) = touched {
                    Some(id)
                } else {
                    None
                }
            }
        }
    };
}

tenant_rows!(Tenant, "tenants", tenants, Tenant, name);
tenant_rows!(crate::state::backup::TenantBackups, "backups", backups, Backups, tenant);

/// A table of rows keyed by a string id whose map in `State` is `$field`.
macro_rules! string_rows {
    ($ty:ty, $table:literal, $field:ident, $touched:ident) => {
        impl Row for $ty {
            const TABLE: &'static str = $table;
            type Id = String;
            type Key = &'static str;
            fn rows(state: &State) -> &BTreeMap<String, Self> {
                &state.$field
            }
            fn rows_mut(state: &mut State) -> &mut BTreeMap<String, Self> {
                &mut state.$field
            }
            fn id(&self) -> String {
                self.id.clone()
            }
            fn key(id: &String) -> &str {
                id.as_str()
            }
            fn touched(touched: &Touched) -> Option<&String> {
                if let Touched::$touched(id) = touched {
                    Some(id)
                } else {
                    None
                }
            }
        }
    };
}

string_rows!(ApiKey, "api_keys", api_keys, ApiKey);
string_rows!(JoinToken, "join_tokens", join_tokens, JoinToken);
string_rows!(Device, "devices", devices, Device);
string_rows!(Exposure, "exposures", exposures, Exposure);
string_rows!(FirewallRule, "firewall_rules", firewall_rules, FirewallRule);
string_rows!(DeviceToken, "device_tokens", device_tokens, DeviceToken);
string_rows!(Invoice, "invoices", invoices, Invoice);

impl Row for crate::state::user::User {
    const TABLE: &'static str = "users";
    type Id = String;
    type Key = &'static str;
    fn rows(state: &State) -> &BTreeMap<String, Self> {
        &state.users
    }
    fn rows_mut(state: &mut State) -> &mut BTreeMap<String, Self> {
        &mut state.users
    }
    fn id(&self) -> String {
        self.name.to_string()
    }
    fn key(id: &String) -> &str {
        id.as_str()
    }
    fn touched(touched: &Touched) -> Option<&String> {
        if let Touched::User(id) = touched {
            Some(id)
        } else {
            None
        }
    }
}

/// A table of rows keyed by a string id their value computes (`$ty::id()`), whose map in
/// `State` is `state.usage.$field`.
macro_rules! usage_rows {
    ($ty:ty, $table:literal, $field:ident, $touched:ident) => {
        impl Row for $ty {
            const TABLE: &'static str = $table;
            type Id = String;
            type Key = &'static str;
            fn rows(state: &State) -> &BTreeMap<String, Self> {
                &state.usage.$field
            }
            fn rows_mut(state: &mut State) -> &mut BTreeMap<String, Self> {
                &mut state.usage.$field
            }
            fn id(&self) -> String {
                <$ty>::id(self)
            }
            fn key(id: &String) -> &str {
                id.as_str()
            }
            fn touched(touched: &Touched) -> Option<&String> {
                if let Touched::$touched(id) = touched {
                    Some(id)
                } else {
                    None
                }
            }
        }
    };
}

usage_rows!(Bucket, "usage_buckets", buckets, UsageBucket);
usage_rows!(Cursor, "usage_cursors", cursors, UsageCursor);

/// Every entity table.
pub const TABLES: &[&dyn Table] = &[
    &Rows::<Tenant>(PhantomData),
    &Rows::<Node>(PhantomData),
    &Rows::<ApiKey>(PhantomData),
    &Rows::<JoinToken>(PhantomData),
    &Rows::<Device>(PhantomData),
    &Rows::<Exposure>(PhantomData),
    &Rows::<FirewallRule>(PhantomData),
    &Rows::<DeviceToken>(PhantomData),
    &Rows::<Bucket>(PhantomData),
    &Rows::<Cursor>(PhantomData),
    &Rows::<Invoice>(PhantomData),
    &Rows::<crate::state::backup::TenantBackups>(PhantomData),
    &Rows::<crate::state::user::User>(PhantomData),
];

/// What the store does with a table, whatever its row type.
pub trait Table: Sync {
    fn create(&self, txn: &WriteTransaction) -> Result<(), StoreError>;
    fn load(&self, txn: &ReadTransaction, state: &mut State) -> Result<(), StoreError>;
    /// Replaces the table's rows with the state's.
    fn rewrite(&self, txn: &WriteTransaction, state: &State) -> Result<(), StoreError>;
    /// Writes (or removes) the rows `touched` names, as they are now in `state`.
    fn write_touched(&self, txn: &WriteTransaction, state: &State, touched: &[Touched]) -> Result<(), StoreError>;
}

pub struct Rows<R>(PhantomData<fn() -> R>);

impl<R: Row> Rows<R> {
    fn definition() -> TableDefinition<'static, R::Key, &'static [u8]> {
        TableDefinition::new(R::TABLE)
    }
}

impl<R: Row> Table for Rows<R> {
    fn create(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(Self::definition())?;
        Ok(())
    }

    fn load(&self, txn: &ReadTransaction, state: &mut State) -> Result<(), StoreError> {
        let rows = R::rows_mut(state);
        for row in txn.open_table(Self::definition())?.iter()? {
            let (_, v) = row?;
            let value: R = decode(R::TABLE, v.value())?;
            rows.insert(value.id(), value);
        }
        Ok(())
    }

    fn rewrite(&self, txn: &WriteTransaction, state: &State) -> Result<(), StoreError> {
        txn.delete_table(Self::definition())?;
        let mut table = txn.open_table(Self::definition())?;
        for (id, value) in R::rows(state) {
            table.insert(R::key(id), encode(value).as_slice())?;
        }
        Ok(())
    }

    fn write_touched(&self, txn: &WriteTransaction, state: &State, touched: &[Touched]) -> Result<(), StoreError> {
        let mut ids = touched.iter().filter_map(R::touched).peekable();
        if ids.peek().is_none() {
            return Ok(());
        }
        let mut table = txn.open_table(Self::definition())?;
        for id in ids {
            match R::rows(state).get(id) {
                Some(value) => {
                    table.insert(R::key(id), encode(value).as_slice())?;
                }
                None => {
                    table.remove(R::key(id))?;
                }
            }
        }
        Ok(())
    }
}
