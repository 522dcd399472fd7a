//! The virtual bucket listing. `merge` walks the entitled data sources in S3 order and fills a page from
//! backend pages; `token` seals continuation tokens; `params` parses the client's query. Pure except for
//! the [`merge::PageSource`] trait, whose real implementation (HTTP to the backends) is in `backend.rs`.

pub mod merge;
pub mod params;
pub mod token;
pub mod xml;

#[cfg(test)]
mod model_tests;

use crate::config::{ApiKey, Config};
use crate::error::S3Error;
use merge::{list_page, CallBudget, ListQuery, PageSource, Position};
use params::{ListParams, ListVersion};
use token::{TokenBinding, TokenSealer};

/// One client page of the virtual bucket, rendered, and what it cost.
pub struct Served {
    pub body: String,
    /// Backend calls the page cost.
    pub backend_calls: usize,
    /// The page ended because its backend call budget was spent.
    pub cut_by_budget: bool,
}

/// ListObjects (v1) or ListObjectsV2 over the data sources `key` may read: where the page starts (the
/// client's marker or sealed token), the merged walk within the call budget, the page rendered with the
/// next marker or a token sealed to this key, prefix and delimiter. An error comes from a refused token or
/// a backend call (its `cause` names the backend and the failure).
pub async fn serve<S: PageSource + ?Sized>(
    source: &S,
    config: &Config,
    tokens: &TokenSealer,
    key: &ApiKey,
    params: &ListParams,
) -> Result<Served, S3Error> {
    let binding = TokenBinding {
        api_key: key.id.expose(),
        prefix: &params.prefix,
        delimiter: params.delimiter.as_deref(),
    };
    let from_marker = |marker: Option<&str>| {
        Position::from_marker(
            marker.unwrap_or(""),
            &params.prefix,
            params.delimiter.as_deref(),
        )
    };
    let start = match (params.version, &params.continuation_token) {
        (ListVersion::V1, _) => from_marker(params.marker.as_deref()),
        (ListVersion::V2, Some(t)) => tokens.open(t, &binding)?,
        (ListVersion::V2, None) => from_marker(params.start_after.as_deref()),
    };
    let data_sources = crate::policy::readable_data_sources(config, key);
    let query = ListQuery {
        prefix: params.prefix.clone(),
        delimiter: params.delimiter.clone(),
        start,
        max_keys: params.max_keys,
        budget: CallBudget::new(config.limits.max_backend_calls_per_list),
    };
    let page = list_page(source, &data_sources, &query).await?;
    let next_token = match (&page.next, params.version) {
        (Some(p), ListVersion::V2) => Some(tokens.seal(p, &binding)),
        _ => None,
    };
    // v1: NextMarker with a delimiter, as AWS does (clients use the last key otherwise), and on every
    // page the call budget ended: it may end elsewhere than at its last key, or hold no key at all.
    let next_marker = match (&page.next, params.version) {
        (Some(next), ListVersion::V1) if params.delimiter.is_some() || page.cut_by_budget => {
            Some(next.as_marker(&params.prefix, params.delimiter.as_deref()))
        }
        _ => None,
    };
    let body = xml::list_objects(&xml::ListingView {
        bucket: &config.bucket,
        params,
        owner: &config.owner,
        entries: &page.entries,
        is_truncated: page.is_truncated,
        next_marker: next_marker.as_deref(),
        next_token: next_token.as_deref(),
    });
    Ok(Served {
        body,
        backend_calls: page.backend_calls,
        cut_by_budget: page.cut_by_budget,
    })
}
