//! CPU cost of one listing page inside s3p, without any I/O: parse a backend's ListObjectsV2 page of 1,000
//! keys, merge it into a virtual page, render the client's ListBucketResult. This is the work s3p adds to
//! a listing on top of the backend's own time (bench/run cell 5 measures the whole thing end to end).
//!
//!     cargo bench --bench listing
//!
//! Prints the median time per page of each stage over many runs.

use async_trait::async_trait;
use bytes::Bytes;
use s3p::config::{DataSource, Owner};
use s3p::error::S3Error;
use s3p::listing::merge::{
    list_page, BackendListRequest, BackendPage, CallBudget, ListQuery, PageSource, Position,
};
use s3p::listing::params::{ListParams, ListVersion};
use s3p::listing::xml as listing_xml;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A ListObjectsV2 answer shaped like Garage's for `encoding-type=url`: keys `data/part-NNNNNN`.
fn backend_body(keys: usize) -> Bytes {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>bench-list</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>\
         <EncodingType>url</EncodingType><KeyCount>1000</KeyCount>\
         <NextContinuationToken>ZGF0YS9wYXJ0LTAwMTAwMA</NextContinuationToken>",
    );
    for i in 0..keys {
        x.push_str(&format!(
            "<Contents><Key>data%2Fpart-{i:06}</Key><LastModified>2026-11-26T02:29:19.123Z</LastModified>\
             <ETag>&quot;{i:032x}&quot;</ETag><Size>16</Size><StorageClass>STANDARD</StorageClass></Contents>"
        ));
    }
    x.push_str("</ListBucketResult>");
    Bytes::from(x)
}

/// Answers every backend call by parsing the same body, as the real backend client does after the HTTP call.
struct ParsingSource {
    body: Bytes,
}

#[async_trait]
impl PageSource for ParsingSource {
    async fn list(&self, _: &DataSource, _: BackendListRequest) -> Result<BackendPage, S3Error> {
        let mut page = listing_xml::parse_backend_listing(&self.body).expect("fixture parses");
        page.next_continuation = Some("more".into());
        Ok(page)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let body = backend_body(1000);
    let ds = DataSource {
        name: "list".into(),
        backend: "garage".into(),
        bucket: "bench-list".into(),
        prefix: String::new(),
        writable: false,
    };
    let sources = [&ds];
    let owner = Owner {
        id: "s3p".into(),
        display_name: "s3p".into(),
    };
    let params = ListParams {
        version: ListVersion::V2,
        prefix: String::new(),
        delimiter: None,
        max_keys: 1000,
        marker: None,
        start_after: None,
        continuation_token: Some("a-sealed-token-of-realistic-length-0123456789".into()),
        encoding_url: false,
        fetch_owner: false,
    };
    let source = ParsingSource { body: body.clone() };
    // The in-memory source never waits: a current-thread runtime only drives the merge's future.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let query = ListQuery {
        prefix: String::new(),
        delimiter: None,
        start: Position::Start,
        max_keys: 1000,
        budget: CallBudget::UNLIMITED,
    };

    let rounds = 1500;
    let (mut parse, mut merge, mut render) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        black_box(listing_xml::parse_backend_listing(black_box(&body)).unwrap());
        parse.push(t.elapsed());

        let t = Instant::now();
        let page = rt.block_on(list_page(&source, &sources, &query)).unwrap();
        merge.push(t.elapsed());
        assert_eq!(page.entries.len(), 1000);

        let t = Instant::now();
        let out = listing_xml::list_objects(&listing_xml::ListingView {
            bucket: "immuta",
            params: &params,
            owner: &owner,
            entries: &page.entries,
            is_truncated: page.is_truncated,
            next_marker: None,
            next_token: Some("another-sealed-token-of-realistic-length-0123456789"),
        });
        render.push(t.elapsed());
        black_box(out);
    }
    let (p, m, r) = (median(parse), median(merge), median(render));
    println!("backend body: {} bytes, 1000 keys", body.len());
    println!(
        "parse                 {:>8.1} µs/page",
        p.as_secs_f64() * 1e6
    );
    println!(
        "parse+merge           {:>8.1} µs/page",
        m.as_secs_f64() * 1e6
    );
    println!(
        "render                {:>8.1} µs/page",
        r.as_secs_f64() * 1e6
    );
    println!(
        "parse+merge+render    {:>8.1} µs/page",
        (m + r).as_secs_f64() * 1e6
    );
}
