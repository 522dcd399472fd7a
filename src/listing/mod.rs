//! The virtual bucket listing. `merge` walks the entitled data sources in S3 order and fills a page from
//! backend pages; `token` seals continuation tokens; `params` parses the client's query. Pure except for
//! the [`merge::PageSource`] trait, whose real implementation (HTTP to the backends) is in `backend.rs`.

pub mod merge;
pub mod params;
pub mod token;

#[cfg(test)]
mod model_tests;
