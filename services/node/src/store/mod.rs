//! The node's persistent state, through sqlx on SQLite or PostgreSQL.
//!
//! # Layout
//! - [`directory_copy`]: the last good copy of the region's directory.
//! - [`cases`]: cases, facts, consents and legal bases, links to case references.
//! - [`disclosures`]: the disclosure log (NEN 7513).
//! - [`inbox`]: notifications from the coordinator.
//! - [`mandates`]: the organisation's mandates.

pub mod cases;
pub mod directory_copy;
pub mod disclosures;
pub mod inbox;
pub mod mandates;

use doorzet_store::Migrations;
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The node's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};
