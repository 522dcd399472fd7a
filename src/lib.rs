//! s3p: one virtual S3 bucket in front of many real ones, every access governed by an API key.
//!
//! A request's life, module by module (README "How the code is laid out"; each module imports only
//! those listed before it, checked by `tests/layering.rs`):
//! 1. [`wire`], [`error`], [`config`]: the request's query and path read one way for every reader, the
//!    one S3 error type, the validated configuration;
//! 2. [`auth`]: who is calling (legacy header, SigV4, SigV2), verified against the key's secret;
//! 3. [`request`] / [`namespace`]: which operation on the virtual bucket, which [`namespace::VirtualKey`],
//!    and which backend object it is;
//! 4. [`policy`]: whether the key may read that data source (deny by default);
//! 5. [`listing`] / [`xml`]: listings merged across data sources and rendered in virtual terms;
//! 6. [`backend`]: re-signing with the backend's credentials, the listing client;
//! 7. [`gateway`]: the decision (answer, list, forward or refuse) and its audit facts, pure;
//! 8. [`server`] and [`proxy`]: the I/O glue; `proxy` carries out each decision in pingora's phases.

pub mod auth;
pub mod backend;
pub mod client_addr;
pub mod config;
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
pub mod timefmt;
pub mod upload;
pub mod wire;
pub mod xml;
