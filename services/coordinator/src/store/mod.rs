//! The coordinator's persistent state, through sqlx on SQLite or PostgreSQL.
//!
//! # Layout
//! - [`directory_versions`]: the versions of the directory file the coordinator has served.

pub mod directory_versions;

use doorzet_store::Migrations;
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The coordinator's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};
