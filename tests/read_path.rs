//! The read path end to end: real Garage behind a real s3p process, driven by aws-sdk-s3, the aws CLI and
//! raw HTTP. Every response is also checked for leaks of backend names and credentials.

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use common::*;
use std::collections::BTreeSet;

fn sdk(key: &str, secret: &str) -> aws_sdk_s3::Client {
    // aws-sdk-rust keeps the base path only with a trailing slash on the endpoint.
    sdk_client(
        &format!("{}/", fixture().s3p.endpoint()),
        key,
        secret,
        "us-east-1",
    )
}

fn alice() -> aws_sdk_s3::Client {
    sdk(ALICE, ALICE_SECRET)
}

/// Every virtual key alice can read, from the seed.
fn expected_virtual_keys() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (bucket, key, _) in seed_objects() {
        if bucket == ALPHA_BUCKET {
            out.insert(format!("sales/{key}"));
        } else if let Some(rest) = key.strip_prefix("data/") {
            out.insert(format!("data/{rest}"));
        } else if let Some(rest) = key.strip_prefix("data-private/") {
            out.insert(format!("data-private/{rest}"));
        }
    }
    out
}

#[test]
fn seed_curl_list_buckets() {
    let f = fixture();
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert_eq!(
        r.text(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Owner><ID>immuta</ID><DisplayName>Immuta</DisplayName></Owner><Buckets><Bucket><Name>immuta</Name>\
         <CreationDate>2006-03-19T00:00:00.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>"
    );
    assert!(r
        .header("x-amz-request-id")
        .is_some_and(|id| !id.is_empty()));
    assert_no_leak("ListBuckets", &r.all_bytes());
}

#[test]
fn seed_curl_list_bucket_v1() {
    let f = fixture();
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta",
        &[("Authorization", &legacy(BOB))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>immuta</Name><Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"), "{text}");
    let keys: Vec<String> = text
        .split("<Key>")
        .skip(1)
        .map(|s| s.split("</Key>").next().unwrap().to_string())
        .collect();
    // bob reads sales and data: data/ keys first (`data/` < `sales/`), nothing of data-private.
    let want: Vec<String> = expected_virtual_keys()
        .into_iter()
        .filter(|k| !k.starts_with("data-private/"))
        .map(|k| k.replace('&', "&amp;"))
        .collect();
    assert_eq!(keys, want);
    assert!(text.contains("<Owner><ID>immuta</ID><DisplayName>Immuta</DisplayName></Owner>"));
    assert_no_leak("ListObjects", &r.all_bytes());
}

#[test]
fn seed_curl_get_object() {
    let f = fixture();
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/data/2024/jan.csv",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"data 2024/jan.csv");
    assert_eq!(r.header("content-length"), Some("17"));
    assert!(r.header("etag").is_some());
    assert!(r.header("last-modified").is_some());
    assert!(r.header("x-amz-request-id").is_some());
    assert_no_leak("GetObject", &r.all_bytes());
}

#[test]
fn root_listing_shows_entitled_data_sources_only() {
    let rt = runtime();
    let list = |c: aws_sdk_s3::Client| {
        rt.block_on(async move {
            let out = c
                .list_objects_v2()
                .bucket("immuta")
                .delimiter("/")
                .send()
                .await
                .unwrap();
            let cps: Vec<String> = out
                .common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string())
                .collect();
            (
                cps,
                out.contents().len(),
                out.key_count(),
                out.is_truncated(),
            )
        })
    };
    assert_eq!(
        list(alice()),
        (
            vec!["data-private/".to_string(), "data/".into(), "sales/".into()],
            0,
            Some(3),
            Some(false)
        )
    );
    assert_eq!(
        list(sdk(BOB, BOB_SECRET)),
        (
            vec!["data/".to_string(), "sales/".into()],
            0,
            Some(2),
            Some(false)
        )
    );
}

#[test]
fn recursive_listing_pages_through_every_data_source() {
    let rt = runtime();
    let c = alice();
    for page_size in [1, 2, 3, 1000] {
        let keys = rt.block_on(async {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let out = c
                    .list_objects_v2()
                    .bucket("immuta")
                    .max_keys(page_size)
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(out.contents().len() <= page_size as usize);
                keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
                if out.is_truncated() == Some(true) {
                    let next = out.next_continuation_token().unwrap().to_string();
                    assert!(!next.contains("data") && !next.contains(BETA_BUCKET));
                    token = Some(next);
                } else {
                    return keys;
                }
            }
        });
        let want: Vec<String> = expected_virtual_keys().into_iter().collect();
        assert_eq!(keys, want, "page size {page_size}");
    }
}

#[test]
fn listing_inside_a_data_source_with_delimiter_and_url_encoding() {
    let rt = runtime();
    let c = alice();
    rt.block_on(async {
        let out = c
            .list_objects_v2()
            .bucket("immuta")
            .prefix("data/")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        let cps: Vec<&str> = out
            .common_prefixes()
            .iter()
            .map(|p| p.prefix().unwrap())
            .collect();
        let keys: Vec<&str> = out.contents().iter().map(|o| o.key().unwrap()).collect();
        assert_eq!(cps, vec!["data/2024/", "data/dir/", "data/x y/"]);
        assert_eq!(keys, vec!["data/q1.csv"]);
        assert_eq!(out.prefix(), Some("data/"));
        // `data` must never match `data-private/`.
        let out = c
            .list_objects_v2()
            .bucket("immuta")
            .prefix("data/2024/")
            .send()
            .await
            .unwrap();
        let keys: Vec<&str> = out.contents().iter().map(|o| o.key().unwrap()).collect();
        assert_eq!(keys, vec!["data/2024/feb.csv", "data/2024/jan.csv"]);
        let o = &out.contents()[0];
        assert_eq!(o.size(), Some(17));
        assert!(o.e_tag().unwrap().starts_with('"'));
    });
    // Raw: encoding-type=url encodes keys, prefix and delimiter.
    let f = fixture();
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta?list-type=2&prefix=sales%2Fcaf&encoding-type=url",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("<Key>sales/caf%C3%A9/%C3%BCber%20%E2%98%83.txt</Key>"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("<EncodingType>url</EncodingType>"));
}

#[test]
fn awkward_keys_round_trip_byte_for_byte() {
    let rt = runtime();
    let c = alice();
    rt.block_on(async {
        for key in awkward_keys() {
            let vkey = format!("sales/{key}");
            let out = c
                .get_object()
                .bucket("immuta")
                .key(&vkey)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {vkey}: {e:?}"));
            let bytes = out.body.collect().await.unwrap().into_bytes();
            assert_eq!(bytes.as_ref(), body_of(&vkey).as_slice(), "{vkey}");
            let head = c
                .head_object()
                .bucket("immuta")
                .key(&vkey)
                .send()
                .await
                .unwrap_or_else(|e| panic!("HEAD {vkey}: {e:?}"));
            assert_eq!(head.content_length(), Some(body_of(&vkey).len() as i64));
        }
    });
}

#[test]
fn range_requests_return_206() {
    let f = fixture();
    let full = body_of("sales/big.bin");
    for (range, want_range, start, end) in [
        ("bytes=0-", "bytes 0-199999/200000", 0usize, 200_000usize),
        ("bytes=10-19", "bytes 10-19/200000", 10, 20),
        ("bytes=-5", "bytes 199995-199999/200000", 199_995, 200_000),
    ] {
        let r = raw(
            f.s3p.addr(),
            "GET",
            "/s3p/immuta/sales/big.bin",
            &[("Authorization", &legacy(ALICE)), ("Range", range)],
        );
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("content-range"), Some(want_range), "{range}");
        assert_eq!(r.body, full[start..end], "{range}");
    }
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/big.bin",
        &[
            ("Authorization", &legacy(ALICE)),
            ("Range", "bytes=300000-"),
        ],
    );
    assert_eq!(r.status, 416);
    assert!(
        r.text().contains("<Code>InvalidRange</Code>"),
        "{}",
        r.text()
    );
    assert_no_leak("416", &r.all_bytes());
}

#[test]
fn non_ascii_forwarded_headers_are_refused_up_front() {
    let f = fixture();
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[
            ("Authorization", &legacy(ALICE)),
            ("If-None-Match", "\"caf\u{e9}\""),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("<Code>InvalidArgument</Code>"));
}

#[test]
fn conditional_requests() {
    let f = fixture();
    let auth = legacy(ALICE);
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &auth)],
    );
    let etag = r.header("etag").unwrap().to_string();
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &auth), ("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &auth), ("If-Match", "\"nope\"")],
    );
    assert_eq!(r.status, 412);
    assert!(
        r.text().contains("<Code>PreconditionFailed</Code>"),
        "{}",
        r.text()
    );
    assert_no_leak("412", &r.all_bytes());
}

/// (method, target, authorization, status, code)
fn refusal_table() -> Vec<(&'static str, String, Option<String>, u16, &'static str)> {
    let a = Some(legacy(ALICE));
    let b = Some(legacy(BOB));
    vec![
        (
            "GET",
            "/s3p/immuta/sales/no-such-key".into(),
            a.clone(),
            404,
            "NoSuchKey",
        ),
        (
            "GET",
            "/s3p/immuta/data-private/salaries.csv".into(),
            b.clone(),
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta/no-such-ds/x".into(),
            b.clone(),
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta/sales".into(),
            a.clone(),
            404,
            "NoSuchKey",
        ),
        (
            "GET",
            "/s3p/immuta/sales/".into(),
            a.clone(),
            404,
            "NoSuchKey",
        ),
        (
            "GET",
            "/s3p/immuta/data-private".into(),
            b.clone(),
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta/data/../data-private/salaries.csv".into(),
            b.clone(),
            400,
            "InvalidArgument",
        ),
        (
            "GET",
            "/s3p/immuta/data/%2e%2e/data-private/salaries.csv".into(),
            b.clone(),
            400,
            "InvalidArgument",
        ),
        (
            "GET",
            "/s3p/immuta/data%2F..%2Fdata-private%2Fsalaries.csv".into(),
            b.clone(),
            400,
            "InvalidArgument",
        ),
        (
            "GET",
            "/s3p/immuta/data-private%2Fsalaries.csv".into(),
            b.clone(),
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta/data/%FF".into(),
            a.clone(),
            400,
            "InvalidURI",
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            None,
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            Some(legacy("unknown-key")),
            403,
            "InvalidAccessKeyId",
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            Some(legacy(NOLEGACY)),
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            Some(format!("AWS {ALICE}:bm90IGEgc2lnbmF0dXJlIGF0IGFsbA==")),
            403,
            "AccessDenied",
        ),
        (
            "GET",
            "/s3p/immuta?acl".into(),
            a.clone(),
            501,
            "NotImplemented",
        ),
        (
            "GET",
            "/s3p/immuta?inventory".into(),
            a.clone(),
            501,
            "NotImplemented",
        ),
        (
            "GET",
            "/s3p/immuta?versioning".into(),
            a.clone(),
            501,
            "NotImplemented",
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt?tagging".into(),
            a.clone(),
            501,
            "NotImplemented",
        ),
        // No data source of this configuration is writable: writes are refused, whatever the key.
        (
            "PUT",
            "/s3p/immuta/sales/new.txt".into(),
            a.clone(),
            403,
            "AccessDenied",
        ),
        (
            "DELETE",
            "/s3p/immuta/sales/plain.txt".into(),
            a.clone(),
            403,
            "AccessDenied",
        ),
        (
            "PUT",
            "/s3p/immuta".into(),
            a.clone(),
            405,
            "MethodNotAllowed",
        ),
        (
            "GET",
            "/s3p/other-bucket".into(),
            a.clone(),
            404,
            "NoSuchBucket",
        ),
        (
            "GET",
            "/s3p/immuta?max-keys=-1".into(),
            a.clone(),
            400,
            "InvalidArgument",
        ),
        (
            "GET",
            "/s3p/immuta?list-type=2&continuation-token=forged".into(),
            a.clone(),
            400,
            "InvalidArgument",
        ),
    ]
}

#[test]
fn refusals_are_s3_errors_that_leak_nothing() {
    let f = fixture();
    for (method, target, auth, status, code) in refusal_table() {
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if method == "PUT" {
            headers.push(("Content-Length", "0"));
        }
        let r = raw(f.s3p.addr(), method, &target, &headers);
        let ctx = format!("{method} {target} ({auth:?})");
        assert_eq!(r.status, status, "{ctx}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/xml"), "{ctx}");
        let text = r.text();
        assert!(
            text.contains(&format!("<Code>{code}</Code>")),
            "{ctx}: {text}"
        );
        let request_id = r.header("x-amz-request-id").unwrap();
        assert!(
            text.contains(&format!("<RequestId>{request_id}</RequestId>")),
            "{ctx}: {text}"
        );
        assert_no_leak(&ctx, &r.all_bytes());
        // HEAD gets the same status, without a body.
        if method == "GET" && target.starts_with("/s3p/immuta/") {
            let h = raw(f.s3p.addr(), "HEAD", &target, &headers);
            assert_eq!(h.status, status, "HEAD {target}");
            assert!(h.body.is_empty(), "HEAD {target}");
        }
    }
}

#[test]
fn bob_cannot_list_or_read_data_private_by_any_route() {
    let rt = runtime();
    let c = sdk(BOB, BOB_SECRET);
    rt.block_on(async {
        for prefix in ["data-private/", "data-", "d", ""] {
            let out = c
                .list_objects_v2()
                .bucket("immuta")
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            for o in out.contents() {
                assert!(
                    !o.key().unwrap().starts_with("data-private"),
                    "{prefix}: {:?}",
                    o.key()
                );
            }
        }
        // A marker inside the denied data source opens nothing.
        let out = c
            .list_objects()
            .bucket("immuta")
            .marker("data-private/")
            .send()
            .await
            .unwrap();
        let keys: Vec<&str> = out.contents().iter().map(|o| o.key().unwrap()).collect();
        assert!(
            !keys.is_empty() && keys.iter().all(|k| !k.starts_with("data-private")),
            "{keys:?}"
        );
        let e = c
            .get_object()
            .bucket("immuta")
            .key("data-private/salaries.csv")
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("AccessDenied"));
    });
}

#[test]
fn sigv4_from_the_sdk_and_bad_signatures() {
    let rt = runtime();
    rt.block_on(async {
        let out = alice()
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.body.collect().await.unwrap().into_bytes().as_ref(),
            b"body of plain.txt"
        );
        let wrong = sdk(ALICE, "not-the-secret");
        let e = wrong
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("SignatureDoesNotMatch"));
        let unknown = sdk("nobody", "whatever");
        let e = unknown
            .list_objects_v2()
            .bucket("immuta")
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("InvalidAccessKeyId"));
        let e = alice()
            .get_object()
            .bucket("immuta")
            .key("sales/missing")
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("NoSuchKey"));
    });
}

#[test]
fn bucket_location_and_head_bucket() {
    let rt = runtime();
    rt.block_on(async {
        let loc = alice()
            .get_bucket_location()
            .bucket("immuta")
            .send()
            .await
            .unwrap();
        assert!(
            loc.location_constraint()
                .is_none_or(|l| l.as_str().is_empty()),
            "us-east-1 is the empty constraint"
        );
        alice().head_bucket().bucket("immuta").send().await.unwrap();
        let e = alice()
            .head_bucket()
            .bucket("nope")
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    });
}

#[test]
fn backend_unreachable_is_503_service_unavailable() {
    let f = fixture();
    let dead = free_port();
    let yaml = standard_config(&f.garage)
        .replace(&f.garage.endpoint(), &format!("http://127.0.0.1:{dead}"));
    let s = S3p::start(&f.dir.join("s3p-dead-backend"), &yaml);
    for target in ["/s3p/immuta/sales/plain.txt", "/s3p/immuta?prefix=sales/"] {
        let r = raw(
            s.addr(),
            "GET",
            target,
            &[("Authorization", &legacy(ALICE))],
        );
        assert_eq!(r.status, 503, "{target}: {}", r.text());
        assert!(
            r.text().contains("<Code>ServiceUnavailable</Code>"),
            "{}",
            r.text()
        );
        assert!(
            !r.text().contains(&dead.to_string()),
            "backend address leaked"
        );
    }
}

#[test]
fn aws_cli_lists_and_downloads() {
    let f = fixture();
    let dir = f.dir.join("awscli");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(
        &config,
        "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
    )
    .unwrap();
    let aws = std::env::var("S3P_AWS_CLI").unwrap_or_else(|_| "aws".into());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&aws)
            .args(args)
            .args(["--endpoint-url", &f.s3p.endpoint()])
            .env("AWS_ACCESS_KEY_ID", ALICE)
            .env("AWS_SECRET_ACCESS_KEY", ALICE_SECRET)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
            .output()
            .unwrap_or_else(|e| panic!("the aws CLI is required ({aws}): {e}"));
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let ls = String::from_utf8(run(&["s3", "ls", "s3://immuta/"])).unwrap();
    let dirs: Vec<&str> = ls.lines().map(|l| l.trim()).collect();
    assert_eq!(dirs, vec!["PRE data-private/", "PRE data/", "PRE sales/"]);
    let rec = String::from_utf8(run(&["s3", "ls", "s3://immuta/sales/", "--recursive"])).unwrap();
    // Lines are `date time size key`, separated by runs of spaces; keys may hold spaces themselves.
    let keys: BTreeSet<String> = rec
        .lines()
        .map(|l| {
            let mut rest = l;
            for _ in 0..3 {
                rest = rest.trim_start();
                rest = &rest[rest.find(' ').unwrap()..];
            }
            rest.trim_start().to_string()
        })
        .collect();
    let want: BTreeSet<String> = awkward_keys()
        .iter()
        .chain(["big.bin"].iter())
        .map(|k| format!("sales/{k}"))
        .collect();
    assert_eq!(keys, want, "{rec}");
    let got = run(&["s3", "cp", "s3://immuta/sales/with space.txt", "-"]);
    assert_eq!(got, b"body of with space.txt");
}
