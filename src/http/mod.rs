//! The HTTP side: forward-auth for reverse proxies, `/metrics` and health checks.
//!
//! Owns: where it listens and accepting there ([`listener`]), the cap on open connections
//! ([`admission`]), serving one connection with hyper ([`connection`]), and the answers:
//! routing ([`routes`]), `/v1/auth` ([`forward_auth`]), `/metrics`, `/healthz`, `/readyz`
//! ([`monitoring`]).
//!
//! Off unless `http_listen` names an address. It answers verify, metrics and health only,
//! never an admin request. Connections are served on the socket side's connection threads
//! ([`crate::server::workers`]); verifies are decided by the same
//! [`crate::index::verify::decide_run`] as the socket's.

mod admission;
mod connection;
mod forward_auth;
mod listener;
mod monitoring;
mod routes;

pub(crate) use admission::Admission;
pub(crate) use listener::{bind_all, HttpListener};
