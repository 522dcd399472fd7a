//! DeleteObjects: parsing, and the grouping and merging of `serve` against a recording source.

use super::*;
use std::sync::Mutex;

const YAML: &str = r#"
token_secret: 0123456789abcdef
backends:
  b: { endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }
  c: { endpoint: "http://127.0.0.1:2", access_key_id: a, secret_access_key: s }
data_sources:
  sales: { backend: b, bucket: bucket-a }
  sandbox: { backend: b, bucket: bucket-b, prefix: box, writable: true }
  more: { backend: b, bucket: bucket-b, prefix: more, writable: true }
  far: { backend: c, bucket: bucket-f, writable: true }
api_keys:
  - { id: k, name: K, data_sources: { sales: read, sandbox: write, more: write, far: write } }
"#;

#[test]
fn requests_parse_and_refuse_what_is_not_a_delete() {
    let ok = parse_request(
        br#"<?xml version="1.0"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>
        <Object><Key>sandbox/a &amp; b</Key></Object><Object><Key> sp </Key><VersionId>v1</VersionId></Object></Delete>"#,
    )
    .unwrap();
    assert!(ok.quiet);
    assert_eq!(
        ok.objects,
        vec![
            ObjectId {
                key: "sandbox/a & b".into(),
                version_id: None
            },
            ObjectId {
                key: " sp ".into(),
                version_id: Some("v1".into())
            },
        ]
    );
    let many: String = (0..1001)
        .map(|i| format!("<Object><Key>k{i}</Key></Object>"))
        .collect();
    for bad in [
        "".to_string(),
        "<Delete></Delete>".into(),
        "<Other><Object><Key>k</Key></Object></Other>".into(),
        "<Delete><Object><Key></Key></Object></Delete>".into(),
        "<Delete><Object><VersionId>v</VersionId></Object></Delete>".into(),
        "<Delete><Object><Key><Deeper/></Key></Object></Delete>".into(),
        "<Delete><Surprise>1</Surprise></Delete>".into(),
        "<!DOCTYPE x><Delete><Object><Key>k</Key></Object></Delete>".into(),
        format!("<Delete>{many}</Delete>"),
    ] {
        let e = parse_request(bad.as_bytes()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::MalformedXML, "{bad:.60}");
    }
}

#[test]
fn backend_bodies_round_trip() {
    let objects = vec![
        ObjectId {
            key: "box/a<b>&\"c'".into(),
            version_id: None,
        },
        ObjectId {
            key: "box/x".into(),
            version_id: Some("v&1".into()),
        },
    ];
    let body = backend_request(&objects);
    assert!(body.contains("<Quiet>false</Quiet>"));
    // What s3p sends, read back as s3p reads a request.
    assert_eq!(parse_request(body.as_bytes()).unwrap().objects, objects);
    let result = br#"<DeleteResult><Deleted><Key>box/a</Key><DeleteMarker>true</DeleteMarker></Deleted>
        <Error><Key>box/b</Key><Code>AccessDenied</Code><Message>backend words</Message></Error></DeleteResult>"#;
    assert_eq!(
        parse_result(result).unwrap(),
        vec![
            Deleted::Ok {
                key: "box/a".into(),
                version_id: None,
                delete_marker: Some("true".into()),
                delete_marker_version_id: None
            },
            Deleted::Failed {
                key: "box/b".into(),
                version_id: None,
                code: "AccessDenied".into(),
                message: "backend words".into()
            },
        ]
    );
    assert!(parse_result(b"<Error><Code>x</Code></Error>").is_err());
}

/// Records the groups it is sent; deletes everything except keys ending in `!`, and fails whole
/// groups on backend `c`. Like a backend read back through an XML reader, it reports a key's CR as LF,
/// and it names the version it deleted (`v-<key>` when none was asked).
struct Recording(Mutex<Vec<Group>>);

#[async_trait]
impl DeleteSource for Recording {
    async fn delete(&self, group: &Group) -> Result<Vec<Deleted>, S3Error> {
        self.0.lock().unwrap().push(group.clone());
        if group.backend == "c" {
            return Err(S3Error::storage_unavailable());
        }
        Ok(group
            .objects
            .iter()
            .map(|o| {
                if o.key.ends_with('!') {
                    Deleted::Failed {
                        key: o.key.clone(),
                        version_id: None,
                        code: "WeirdBackendCode".into(),
                        message: "bucket-b says no".into(),
                    }
                } else {
                    Deleted::Ok {
                        key: o.key.replace('\r', "\n"),
                        version_id: Some(
                            o.version_id
                                .clone()
                                .unwrap_or_else(|| format!("v-{}", o.key)),
                        ),
                        delete_marker: None,
                        delete_marker_version_id: None,
                    }
                }
            })
            .collect())
    }
}

#[test]
fn each_key_is_authorised_and_groups_go_once_per_backend_bucket() {
    let config = Config::from_yaml_str(YAML, &|_| None).unwrap();
    let key = &config.api_keys[0];
    let keys = [
        "sandbox/a",
        "sales/b",
        "more/c",
        "sandbox/d!",
        "nope/e",
        "far/f",
        "sandbox/",
        "sandbox/../sales/x",
        "sandbox/cr\rkey",
    ];
    let request = DeleteRequest {
        quiet: false,
        objects: keys
            .iter()
            .map(|k| ObjectId {
                key: k.to_string(),
                version_id: None,
            })
            .collect(),
    };
    let source = Recording(Mutex::new(Vec::new()));
    let versions = VersionIds::rotated("a token secret, long enough", &[]);
    let served = futures_lite_block_on(serve(&source, &config, &versions, key, &request));
    let answer = served.body;
    let groups = source.0.into_inner().unwrap();
    // sandbox and more share bucket-b on backend b: one call; far (backend c) another.
    assert_eq!(groups.len(), 2);
    let b = groups.iter().find(|g| g.backend == "b").unwrap();
    assert_eq!(b.bucket, "bucket-b");
    let sent: Vec<&str> = b.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(sent, ["box/a", "more/c", "box/d!", "box/cr\rkey"]);
    let (_, records) = xml::records(answer.as_bytes()).unwrap();
    let got: Vec<(String, String, Option<String>)> = records
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.field("Key").unwrap().to_string(),
                r.field("Code").map(str::to_string),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>)> = [
        ("Deleted", "sandbox/a", None),
        ("Error", "sales/b", Some("AccessDenied")),
        ("Deleted", "more/c", None),
        ("Error", "sandbox/d!", Some("InternalError")),
        ("Error", "nope/e", Some("AccessDenied")),
        ("Error", "far/f", Some("ServiceUnavailable")),
        ("Error", "sandbox/", Some("AccessDenied")),
        ("Error", "sandbox/../sales/x", Some("InvalidArgument")),
        // Reported back as `box/cr\nkey`: still found, and deleted.
        ("Deleted", "sandbox/cr\rkey", None),
    ]
    .iter()
    .map(|(n, k, c)| (n.to_string(), k.to_string(), c.map(str::to_string)))
    .collect();
    assert_eq!(got, want);
    assert!(
        !answer.contains("bucket-b") && !answer.contains("<Key>box/"),
        "{answer}"
    );
    // The backend's version ids reach the client sealed for their object, and open again.
    assert!(!answer.contains("v-box"), "{answer}");
    let sealed = records[0].field("VersionId").unwrap();
    assert_eq!(versions.open("sandbox", "a", sealed).unwrap(), "v-box/a");
    // One outcome per object, for the audit, in the request's order.
    let outcomes: Vec<(&str, Option<&str>, Option<S3ErrorCode>)> = served
        .outcomes
        .iter()
        .map(|o| (o.key.as_str(), o.data_source.as_deref(), o.error))
        .collect();
    assert_eq!(outcomes.len(), keys.len());
    assert_eq!(outcomes[0], ("sandbox/a", Some("sandbox"), None));
    assert_eq!(
        outcomes[1],
        ("sales/b", None, Some(S3ErrorCode::AccessDenied))
    );
    assert_eq!(
        outcomes[5],
        ("far/f", Some("far"), Some(S3ErrorCode::ServiceUnavailable))
    );
    // Quiet: only the errors.
    let quiet = futures_lite_block_on(serve(
        &source_again(),
        &config,
        &versions,
        key,
        &DeleteRequest {
            quiet: true,
            ..request
        },
    ))
    .body;
    assert!(!quiet.contains("<Deleted>") && quiet.contains("<Error>"));
}

fn source_again() -> Recording {
    Recording(Mutex::new(Vec::new()))
}

/// Runs a future to completion on a one-off runtime (the source above never waits).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
