//! s3p: one virtual S3 bucket in front of many real ones, every access governed by an API key.
//!
//! A request's life, module by module:
//! 1. [`auth`]: who is calling (legacy header, SigV4, SigV2), verified against the key's secret;
//! 2. [`request`]: which operation on the virtual bucket, and which [`namespace::VirtualKey`];
//! 3. [`policy`]: whether the key may read that data source (deny by default);
//! 4. [`namespace`] / [`backend`]: the backend bucket and key, re-signed with the backend's credentials;
//! 5. [`listing`] / [`xml`]: listings merged across data sources and rendered in virtual terms;
//!    [`error`]: every refusal as one S3 error type.
//!
//! [`proxy`] is the pingora glue that wires these together; everything else is pure and tested alone.

pub mod auth;
pub mod backend;
pub mod client_addr;
pub mod config;
pub mod error;
pub mod gateway;
pub mod listing;
pub mod namespace;
pub mod ops;
pub mod policy;
pub mod proxy;
pub mod proxy_protocol;
pub mod request;
pub mod state;
pub mod timefmt;
pub mod wire;
pub mod xml;
