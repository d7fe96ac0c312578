//! The node's persistent state, through sqlx on SQLite or PostgreSQL.
//!
//! # Layout
//! - [`directory_copy`]: the last good copy of the region's directory.

pub mod directory_copy;

use doorzet_store::Migrations;
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The node's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};
