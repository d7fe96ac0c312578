//! doorzet's end-to-end tests in one test binary: real processes or in-process servers over real
//! mutual TLS. One binary instead of one per file, because each links the whole stack (about
//! 150 MB and a link step apiece); nextest still runs every test in its own process. Pick a
//! group with a filter, e.g. `cargo nextest run -p doorzet-e2e -E 'test(/^facts::/)'`.

mod abuse_connections;
mod abuse_input;
mod audit_alarm;
mod audit_crash;
mod audit_tamper;
mod checkpoint_gossip;
mod console_browser;
mod console_oidc;
mod crl;
mod directory;
mod directory_push;
mod escalations;
mod facts;
mod gateway;
mod gateway_fuzz;
mod gateway_webhooks;
mod identity_jwt;
mod identity_tls;
mod limits;
mod local_mesh;
mod observability;
mod partner_admin;
mod postgres;
mod tls_reload;
