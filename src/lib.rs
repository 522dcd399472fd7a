//! s3p: one virtual S3 bucket in front of many real ones, every access governed by an API key.
//!
//! A request's life, module by module, lowest layer first (README "How the code is laid out"; each
//! module imports only those listed before it, checked by `tests/layering.rs`):
//! 1. [`error`], [`wire`], [`timefmt`], [`seal`]: the one S3 error type and the one table of backend
//!    answers; the request's query and path read one way for every reader; dates; sealing;
//! 2. [`client_addr`], [`proxy_protocol`], [`config`]: who the client is behind trusted proxies; the
//!    validated configuration;
//! 3. [`sts`] / [`auth`]: temporary credentials' core (sealed session tokens, session policies, OIDC
//!    tokens); who is calling (legacy header, SigV4, SigV2, a session's token), verified against the
//!    key's secret;
//! 4. [`namespace`] / [`policy`]: which backend object a [`namespace::VirtualKey`] is; whether the key
//!    may read or write its data source (deny by default);
//! 5. [`xml`] / [`listing`]: listings merged across data sources and rendered in virtual terms;
//! 6. [`upload`]: writes (payloads, aws-chunked, multipart, answers rewritten, DeleteObjects);
//! 7. [`request`]: which operation on the virtual bucket (uses the listing and upload parameters);
//! 8. [`backend`] / [`state`]: re-signing with the backend's credentials, s3p's own backend calls; the
//!    configuration-derived state;
//! 9. [`gateway`]: the decision (answer, list, read a body, forward or refuse), its audit facts, and the
//!    answer side, pure;
//! 10. [`server`] and [`proxy`]: the I/O glue; `proxy` carries out each decision in pingora's phases.

pub mod auth;
pub mod backend;
pub mod client_addr;
pub mod config;
pub mod entitlements;
pub mod error;
pub mod gateway;
pub mod listing;
pub mod namespace;
pub mod policy;
pub mod proxy;
pub mod proxy_protocol;
pub mod request;
pub mod seal;
pub mod server;
pub mod state;
pub mod sts;
pub mod timefmt;
pub mod upload;
pub mod wire;
pub mod xml;
