//! The answers s3p assembles from calls it makes to the backends itself, for the decisions that need
//! them: a page of the virtual bucket (`listing::serve`) and the multipart uploads of the data sources
//! a key may write (`upload::uploads_list::serve`), with their metrics.

use super::Runtime;
use crate::config::ApiKey;
use crate::error::S3Error;
use crate::gateway::Outcome;
use crate::state::State;

/// The XML answer of a listing outcome (`Outcome::List` or `Outcome::ListUploads`).
pub async fn serve_listing(
    runtime: &Runtime,
    st: &State,
    key: &ApiKey,
    outcome: Outcome,
) -> Result<String, S3Error> {
    match outcome {
        Outcome::List(params) => {
            let served =
                crate::listing::serve(&st.backends, &st.config, &st.tokens, key, &params).await?;
            runtime.metrics.list_backend_calls(served.backend_calls);
            if served.cut_by_budget {
                runtime.metrics.limit_hit("max_backend_calls_per_list");
            }
            Ok(served.body)
        }
        Outcome::ListUploads(params) => {
            crate::upload::uploads_list::serve(&st.backends, &st.config, &st.uploads, key, &params)
                .await
        }
        _ => Err(S3Error::internal()),
    }
}
