//! Writes end to end against a real Garage: PutObject in every payload form (plain, signed hash,
//! aws-chunked signed and with trailers, built here byte by byte), multipart uploads, copies and deletes
//! through s3p, each read back byte for byte, and every refusal checked to leave the backend unchanged.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

const WRITER: &str = "writer-api-key";
const WRITER_SECRET: &str = "writer-secret-0123456789";
const READER: &str = "reader-api-key";
const READER_SECRET: &str = "reader-secret-0123456789";
const LEGACY_WRITER: &str = "legacy-writer-token";

struct Env {
    garage: Garage,
    s3p: S3p,
    /// The configuration, for a second s3p of the same setup.
    yaml: String,
    dir: TempDir,
}

/// `sales` (alpha, read-only) and `sandbox` (beta under `sandbox/`, writable); the writer may write
/// `sandbox` and read `sales`, the reader reads everything and writes nothing.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let dir = TempDir::new("writes");
        let garage = Garage::start(&dir.0.join("garage"));
        runtime().block_on(async {
            let c = garage.client();
            for (key, body) in [("seed.csv", "a,b\n1,2\n"), ("other/keep.txt", "keep")] {
                c.put_object()
                    .bucket(ALPHA_BUCKET)
                    .key(key)
                    .body(ByteStream::from_static(body.as_bytes()))
                    .send()
                    .await
                    .unwrap();
            }
        });
        let yaml = format!(
            r#"listen: 127.0.0.1:{{PORT}}
base_path: /s3p
bucket: immuta
token_secret: test-token-secret-0123456789
limits: {{ max_concurrent_requests: 64 }}
backends:
  garage: {{ endpoint: "{endpoint}", region: garage, access_key_id: {GARAGE_KEY_ID}, secret_access_key: {GARAGE_SECRET} }}
data_sources:
  sales: {{ backend: garage, bucket: {ALPHA_BUCKET} }}
  sandbox: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: sandbox/, writable: true }}
api_keys:
  - {{ id: {WRITER}, secret: {WRITER_SECRET}, name: Writer, data_sources: {{ sales: read, sandbox: write }} }}
  - {{ id: {READER}, secret: {READER_SECRET}, name: Reader, data_sources: all }}
  - {{ id: {LEGACY_WRITER}, name: Legacy writer, data_sources: {{ sandbox: write }} }}
"#,
            endpoint = garage.endpoint()
        );
        let s3p = S3p::start(&dir.0.join("s3p"), &yaml);
        Env {
            garage,
            s3p,
            yaml,
            dir,
        }
    })
}

fn writer() -> aws_sdk_s3::Client {
    sdk_client(
        &format!("{}/", env().s3p.endpoint()),
        WRITER,
        WRITER_SECRET,
        "us-east-1",
    )
}

fn reader() -> aws_sdk_s3::Client {
    sdk_client(
        &format!("{}/", env().s3p.endpoint()),
        READER,
        READER_SECRET,
        "us-east-1",
    )
}

/// Every (key, body) of the read-only data source's bucket, for before/after comparisons (the
/// writable one changes under the other tests, which run at the same time).
fn backend_state() -> Vec<(String, String, Vec<u8>)> {
    let c = env().garage.client();
    runtime().block_on(async {
        let mut all = Vec::new();
        for bucket in [ALPHA_BUCKET] {
            let list = c.list_objects_v2().bucket(bucket).send().await.unwrap();
            for o in list.contents() {
                let key = o.key().unwrap().to_string();
                let body = c
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                let bytes = body.body.collect().await.unwrap().into_bytes().to_vec();
                all.push((bucket.to_string(), key, bytes));
            }
        }
        all
    })
}

fn backend_object(key: &str) -> Option<Vec<u8>> {
    let c = env().garage.client();
    runtime().block_on(async {
        let got = c
            .get_object()
            .bucket(BETA_BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(got.body.collect().await.unwrap().into_bytes().to_vec())
    })
}

fn read_back(client: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    runtime().block_on(async {
        let got = client
            .get_object()
            .bucket("immuta")
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("reading back {key}: {e:?}"));
        got.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

/// Pseudo-random bytes (a fixed xorshift stream), so that a misplaced byte cannot go unnoticed.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    parse_response(&buf)
}

/// SigV4 header authentication of a request by the writer (aws-sigv4, independent of s3p's verifier),
/// with `payload_hash` as `x-amz-content-sha256` and `headers` signed; returns every header to send.
fn signed(
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    payload_hash: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let host = env().s3p.addr().to_string();
    let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let request = Signed {
        method,
        host: &host,
        path_and_query: target,
        headers: &extra,
        payload_hash,
    };
    let mut out: Vec<(String, String)> = vec![("host".into(), host.clone())];
    out.extend(headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
    out.extend(sigv4_sign(&request, WRITER, WRITER_SECRET, now));
    out
}

fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    s3p::timefmt::format_amz_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[test]
fn sdk_put_get_delete_round_trip_with_default_checksums() {
    let e = env();
    let w = writer();
    let data = bytes(1_500_000, 1);
    runtime().block_on(async {
        // aws-sdk-s3 sends its default CRC32 trailer (aws-chunked) on streaming bodies.
        let put = w
            .put_object()
            .bucket("immuta")
            .key("sandbox/dir/round trip.bin")
            .content_type("application/octet-stream")
            .metadata("owner", "writer")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("put through s3p");
        assert!(put.e_tag().is_some());
        let head = w
            .head_object()
            .bucket("immuta")
            .key("sandbox/dir/round trip.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(data.len() as i64));
        assert_eq!(
            head.metadata()
                .and_then(|m| m.get("owner"))
                .map(String::as_str),
            Some("writer")
        );
        assert_eq!(head.content_type(), Some("application/octet-stream"));
    });
    assert_eq!(read_back(&w, "sandbox/dir/round trip.bin"), data);
    assert_eq!(
        backend_object("sandbox/dir/round trip.bin").as_deref(),
        Some(&data[..])
    );
    runtime().block_on(async {
        w.delete_object()
            .bucket("immuta")
            .key("sandbox/dir/round trip.bin")
            .send()
            .await
            .expect("delete");
    });
    assert_eq!(backend_object("sandbox/dir/round trip.bin"), None);
    let log = e.s3p.log();
    assert!(
        log.contains("\"operation\":\"PutObject\""),
        "audit of the put"
    );
    assert!(
        log.contains("\"bytes_received\":"),
        "audit counts received bytes"
    );
}

#[test]
fn multipart_upload_through_s3p() {
    let w = writer();
    let part1 = bytes(5 << 20, 2);
    let part2 = bytes(1 << 20, 3);
    runtime().block_on(async {
        let created = w
            .create_multipart_upload()
            .bucket("immuta")
            .key("sandbox/mp/big.bin")
            // Parts carry the SDK's default CRC32 checksums, which the completion names again: the
            // backend must keep them, which it does for an upload created with the algorithm.
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
            .send()
            .await
            .expect("create");
        assert_eq!(created.bucket(), Some("immuta"));
        assert_eq!(created.key(), Some("sandbox/mp/big.bin"));
        let id = created.upload_id().unwrap().to_string();
        let mut parts = Vec::new();
        for (n, data) in [(1, &part1), (2, &part2)] {
            let up = w
                .upload_part()
                .bucket("immuta")
                .key("sandbox/mp/big.bin")
                .upload_id(&id)
                .part_number(n)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("part {n}: {e:?}"));
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .e_tag(up.e_tag().unwrap())
                    .set_checksum_crc32(up.checksum_crc32().map(str::to_string))
                    .build(),
            );
        }
        // The id is bound to its object: another key cannot use it.
        let stolen = w
            .upload_part()
            .bucket("immuta")
            .key("sandbox/mp/other.bin")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            stolen.into_service_error().meta().code(),
            Some("NoSuchUpload")
        );
        // ListParts: the backend's parts, in virtual terms.
        let listed = w
            .list_parts()
            .bucket("immuta")
            .key("sandbox/mp/big.bin")
            .upload_id(&id)
            .send()
            .await
            .expect("ListParts");
        assert_eq!(listed.bucket(), Some("immuta"));
        assert_eq!(listed.key(), Some("sandbox/mp/big.bin"));
        assert_eq!(listed.upload_id(), Some(id.as_str()));
        let sizes: Vec<(i32, i64)> = listed
            .parts()
            .iter()
            .map(|p| (p.part_number().unwrap(), p.size().unwrap()))
            .collect();
        assert_eq!(sizes, [(1, 5 << 20), (2, 1 << 20)]);
        assert_eq!(listed.owner().and_then(|o| o.id()), Some("immuta"));
        let done = w
            .complete_multipart_upload()
            .bucket("immuta")
            .key("sandbox/mp/big.bin")
            .upload_id(&id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .expect("complete");
        assert_eq!(done.bucket(), Some("immuta"));
        assert_eq!(done.key(), Some("sandbox/mp/big.bin"));
        assert!(
            done.e_tag().unwrap().ends_with("-2\""),
            "{:?}",
            done.e_tag()
        );
        // Abort: the upload is gone afterwards.
        let created = w
            .create_multipart_upload()
            .bucket("immuta")
            .key("sandbox/mp/aborted.bin")
            .send()
            .await
            .unwrap();
        let id = created.upload_id().unwrap();
        w.abort_multipart_upload()
            .bucket("immuta")
            .key("sandbox/mp/aborted.bin")
            .upload_id(id)
            .send()
            .await
            .expect("abort");
        let after = w
            .upload_part()
            .bucket("immuta")
            .key("sandbox/mp/aborted.bin")
            .upload_id(id)
            .part_number(1)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            after.into_service_error().meta().code(),
            Some("NoSuchUpload")
        );
    });
    // UploadPartCopy: a part copied from an object the key may read (Garage copies parts only from
    // objects larger than it stores inline: the first 5 MiB of the upload above).
    runtime().block_on(async {
        let created = w
            .create_multipart_upload()
            .bucket("immuta")
            .key("sandbox/mp/copied.csv")
            .send()
            .await
            .unwrap();
        let id = created.upload_id().unwrap();
        let part = w
            .upload_part_copy()
            .bucket("immuta")
            .key("sandbox/mp/copied.csv")
            .upload_id(id)
            .part_number(1)
            .copy_source("immuta/sandbox/mp/big.bin")
            .copy_source_range("bytes=0-5242879")
            .send()
            .await
            .expect("UploadPartCopy");
        let etag = part
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .unwrap()
            .to_string();
        w.complete_multipart_upload()
            .bucket("immuta")
            .key("sandbox/mp/copied.csv")
            .upload_id(id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .parts(
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(1)
                            .e_tag(etag)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("complete the copied upload");
    });
    assert_eq!(read_back(&w, "sandbox/mp/copied.csv"), part1);
    let whole = [part1, part2].concat();
    assert_eq!(read_back(&w, "sandbox/mp/big.bin"), whole);
    assert_eq!(
        backend_object("sandbox/mp/big.bin").as_deref(),
        Some(&whole[..])
    );
    assert_eq!(backend_object("sandbox/mp/aborted.bin"), None);
}

#[test]
fn copies_within_one_backend() {
    let w = writer();
    runtime().block_on(async {
        w.copy_object()
            .bucket("immuta")
            .key("sandbox/copied.csv")
            .copy_source("immuta/sales/seed.csv")
            .send()
            .await
            .expect("copy from a readable data source");
    });
    assert_eq!(read_back(&w, "sandbox/copied.csv"), b"a,b\n1,2\n");
}

#[test]
fn signed_chunks_are_verified_and_a_bad_one_stores_nothing() {
    let e = env();
    let data = bytes(200_000, 4);
    for (name, tamper) in [("good", false), ("bad", true)] {
        let key = format!("sandbox/chunked-{name}.bin");
        let target = format!("/s3p/immuta/{key}");
        let now = SystemTime::now();
        let date = amz_date(now);
        // The encoded length is known before signing: compute the body once with a dummy seed.
        let encoded_len = signed_chunks(WRITER_SECRET, &data, 65_536, &"0".repeat(64), &date).len();
        let headers = signed(
            "PUT",
            &target,
            &[
                ("content-encoding", "aws-chunked".to_string()),
                ("content-length", encoded_len.to_string()),
                ("x-amz-decoded-content-length", data.len().to_string()),
            ],
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            now,
        );
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        let seed = auth.rsplit("Signature=").next().unwrap();
        let mut body = signed_chunks(WRITER_SECRET, &data, 65_536, seed, &date);
        if tamper {
            // One byte of the second chunk's data.
            let at = body.len() / 2;
            body[at] ^= 1;
        }
        let r = send(e.s3p.addr(), "PUT", &target, &headers, &body);
        if tamper {
            assert_eq!(r.status, 403, "{}", r.text());
            assert!(r.text().contains("SignatureDoesNotMatch"), "{}", r.text());
            assert_eq!(backend_object(&key), None, "a bad chunk must store nothing");
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(backend_object(&key).as_deref(), Some(&data[..]));
        }
        assert_no_leak("chunked put", &r.all_bytes());
    }
}

#[test]
fn trailing_checksums_are_checked() {
    let e = env();
    let data = bytes(100_000, 5);
    let crc = {
        use base64::Engine;
        let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
        d.update(&data);
        base64::engine::general_purpose::STANDARD.encode((d.finalize() as u32).to_be_bytes())
    };
    for (name, checksum) in [("good", crc.clone()), ("bad", "AAAAAA==".to_string())] {
        let key = format!("sandbox/trailer-{name}.bin");
        let mut body = Vec::new();
        for piece in data.chunks(40_000) {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n").as_bytes());
        let headers: Vec<(String, String)> = [
            ("host", e.s3p.addr().to_string()),
            ("authorization", format!("AWS {LEGACY_WRITER}:immuta")),
            ("content-encoding", "aws-chunked".into()),
            ("content-length", body.len().to_string()),
            (
                "x-amz-content-sha256",
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER".into(),
            ),
            ("x-amz-decoded-content-length", data.len().to_string()),
            ("x-amz-trailer", "x-amz-checksum-crc32".into()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        let r = send(
            e.s3p.addr(),
            "PUT",
            &format!("/s3p/immuta/{key}"),
            &headers,
            &body,
        );
        if name == "bad" {
            assert_eq!(r.status, 400, "{}", r.text());
            assert!(r.text().contains("BadDigest"), "{}", r.text());
            assert_eq!(
                backend_object(&key),
                None,
                "a wrong checksum must store nothing"
            );
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(backend_object(&key).as_deref(), Some(&data[..]));
        }
    }
}

#[test]
fn a_signed_payload_hash_is_checked_by_the_backend() {
    let e = env();
    let target = "/s3p/immuta/sandbox/hashed.txt";
    let now = SystemTime::now();
    let body = b"the body that was signed";
    let good = signed(
        "PUT",
        target,
        &[("content-length", body.len().to_string())],
        &hex_sha256(body),
        now,
    );
    let r = send(e.s3p.addr(), "PUT", target, &good, body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        backend_object("sandbox/hashed.txt").as_deref(),
        Some(&body[..])
    );
    // Same length, another body: s3p's signature check passes (the hash is a header), the backend's
    // check of the body against the re-signed hash does not.
    let other = b"THE BODY THAT WAS SIGNED";
    let target = "/s3p/immuta/sandbox/hashed-bad.txt";
    let bad = signed(
        "PUT",
        target,
        &[("content-length", other.len().to_string())],
        &hex_sha256(body),
        now,
    );
    let r = send(e.s3p.addr(), "PUT", target, &bad, other);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(backend_object("sandbox/hashed-bad.txt"), None);
}

#[test]
fn expect_continue_is_answered_after_the_decision() {
    let e = env();
    let body = b"sent after 100 Continue";
    let mut stream = TcpStream::connect(e.s3p.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "PUT /s3p/immuta/sandbox/continued.txt HTTP/1.1\r\nHost: {}\r\nAuthorization: AWS {LEGACY_WRITER}:immuta\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        e.s3p.addr(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut first = [0u8; 25];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).unwrap();
    let r = read_response(&mut stream);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        backend_object("sandbox/continued.txt").as_deref(),
        Some(&body[..])
    );
    // A refusal comes at once, without 100 Continue and without reading the body.
    let mut stream = TcpStream::connect(e.s3p.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = head.replace("sandbox/continued.txt", "sales/continued.txt");
    stream.write_all(head.as_bytes()).unwrap();
    let r = read_response(&mut stream);
    assert_eq!(r.status, 403);
}

/// Method, target, headers, body, expected status and error code.
type RefusalCase<'a> = (
    &'a str,
    &'a str,
    Vec<(String, String)>,
    &'a [u8],
    u16,
    &'a str,
);

#[test]
fn refused_writes_leave_the_backend_unchanged() {
    let e = env();
    let before = backend_state();
    let addr = e.s3p.addr();
    let host = addr.to_string();
    let legacy = |key: &str| {
        vec![
            ("host".to_string(), host.clone()),
            ("authorization".to_string(), format!("AWS {key}:immuta")),
        ]
    };
    let with = |mut h: Vec<(String, String)>, extra: &[(&str, &str)]| {
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        h
    };
    #[rustfmt::skip]
    let cases: Vec<RefusalCase> = vec![
        // A read-only data source, for a key granted write elsewhere.
        ("PUT", "/s3p/immuta/sales/new.csv", with(legacy(LEGACY_WRITER), &[("content-length", "3")]), b"abc", 403, "AccessDenied"),
        ("DELETE", "/s3p/immuta/sales/seed.csv", legacy(LEGACY_WRITER), b"", 403, "AccessDenied"),
        // A data source the key is not granted at all, and one that does not exist: the same answer.
        ("PUT", "/s3p/immuta/nope/x", with(legacy(LEGACY_WRITER), &[("content-length", "3")]), b"abc", 403, "AccessDenied"),
        // The data source's root, the bucket, the root of the service.
        ("PUT", "/s3p/immuta/sandbox/", with(legacy(LEGACY_WRITER), &[("content-length", "3")]), b"abc", 403, "AccessDenied"),
        ("PUT", "/s3p/immuta", with(legacy(LEGACY_WRITER), &[("content-length", "0")]), b"", 405, "MethodNotAllowed"),
        ("DELETE", "/s3p/immuta", legacy(LEGACY_WRITER), b"", 405, "MethodNotAllowed"),
        ("PUT", "/s3p/immuta?versioning", with(legacy(LEGACY_WRITER), &[("content-length", "0")]), b"", 405, "MethodNotAllowed"),
        // Copies from what the key cannot read.
        ("PUT", "/s3p/immuta/sandbox/stolen.csv", with(legacy(LEGACY_WRITER), &[("x-amz-copy-source", "/immuta/sales/seed.csv")]), b"", 403, "AccessDenied"),
        // A forged upload id.
        ("PUT", "/s3p/immuta/sandbox/mp.bin?partNumber=1&uploadId=Zm9yZ2Vk", with(legacy(LEGACY_WRITER), &[("content-length", "3")]), b"abc", 404, "NoSuchUpload"),
        // Dot segments and encoded tricks.
        ("PUT", "/s3p/immuta/sandbox/%2e%2e/sales/x", with(legacy(LEGACY_WRITER), &[("content-length", "3")]), b"abc", 400, "InvalidArgument"),
        ("PUT", "/s3p/immuta/sandbox%2F..%2Fsales/x", with(legacy(LEGACY_WRITER), &[("content-length", "3")]), b"abc", 400, "InvalidArgument"),
        // Headers s3p cannot honour.
        ("PUT", "/s3p/immuta/sandbox/public.csv", with(legacy(LEGACY_WRITER), &[("content-length", "3"), ("x-amz-acl", "public-read")]), b"abc", 501, "NotImplemented"),
    ];
    for (method, target, headers, body, status, code) in cases {
        let r = send(addr, method, target, &headers, body);
        assert_eq!(r.status, status, "{method} {target}: {}", r.text());
        assert!(r.text().contains(code), "{method} {target}: {}", r.text());
        assert_no_leak(target, &r.all_bytes());
    }
    // SigV4 keys: a reader may not write anywhere; the writer not outside its grant.
    runtime().block_on(async {
        let r = reader()
            .put_object()
            .bucket("immuta")
            .key("sandbox/by-reader")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(r.into_service_error().meta().code(), Some("AccessDenied"));
        let w = writer()
            .delete_object()
            .bucket("immuta")
            .key("sales/seed.csv")
            .send()
            .await
            .unwrap_err();
        assert_eq!(w.into_service_error().meta().code(), Some("AccessDenied"));
        let c = writer()
            .copy_object()
            .bucket("immuta")
            .key("sales/copy.csv")
            .copy_source("immuta/sandbox/x")
            .send()
            .await
            .unwrap_err();
        assert_eq!(c.into_service_error().meta().code(), Some("AccessDenied"));
    });
    assert_eq!(
        backend_state(),
        before,
        "a refused write changed the backend"
    );
    for key in [
        "sandbox/stolen.csv",
        "sandbox/public.csv",
        "sandbox/mp.bin",
        "sandbox/by-reader",
        "sandbox/",
        "sales/x",
        "sales/new.csv",
    ] {
        assert_eq!(backend_object(key), None, "{key} was written");
    }
}

#[test]
fn delete_objects_authorises_each_key() {
    let e = env();
    let w = writer();
    runtime().block_on(async {
        for k in ["sandbox/batch/1", "sandbox/batch/2"] {
            w.put_object()
                .bucket("immuta")
                .key(k)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap();
        }
        let ids = [
            "sandbox/batch/1",
            "sandbox/batch/2",
            "sales/seed.csv",
            "nope/x",
            "sandbox/batch/never-there",
        ]
        .iter()
        .map(|k| {
            aws_sdk_s3::types::ObjectIdentifier::builder()
                .key(*k)
                .build()
                .unwrap()
        })
        .collect::<Vec<_>>();
        let out = w
            .delete_objects()
            .bucket("immuta")
            .delete(
                aws_sdk_s3::types::Delete::builder()
                    .set_objects(Some(ids))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("DeleteObjects through s3p");
        let mut deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
        deleted.sort();
        // S3 reports a missing key as deleted.
        assert_eq!(
            deleted,
            [
                "sandbox/batch/1",
                "sandbox/batch/2",
                "sandbox/batch/never-there"
            ]
        );
        let mut errors: Vec<(&str, &str)> = out
            .errors()
            .iter()
            .map(|e| (e.key().unwrap(), e.code().unwrap()))
            .collect();
        errors.sort();
        assert_eq!(
            errors,
            [
                ("nope/x", "AccessDenied"),
                ("sales/seed.csv", "AccessDenied")
            ]
        );
    });
    assert_eq!(backend_object("sandbox/batch/1"), None);
    assert_eq!(backend_object("sandbox/batch/2"), None);
    let c = e.garage.client();
    runtime().block_on(async {
        c.head_object()
            .bucket(ALPHA_BUCKET)
            .key("seed.csv")
            .send()
            .await
            .expect("a denied key stays");
    });
    // A body that does not match its Content-MD5 is refused whole.
    let body = b"<Delete><Object><Key>sandbox/x</Key></Object></Delete>";
    let headers: Vec<(String, String)> = [
        ("host", e.s3p.addr().to_string()),
        ("authorization", format!("AWS {LEGACY_WRITER}:immuta")),
        ("content-length", body.len().to_string()),
        ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==".to_string()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    let r = send(e.s3p.addr(), "POST", "/s3p/immuta?delete", &headers, body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("BadDigest"), "{}", r.text());
}

#[test]
fn object_acl_tagging_and_attributes() {
    let w = writer();
    runtime().block_on(async {
        let acl = w
            .get_object_acl()
            .bucket("immuta")
            .key("sales/seed.csv")
            .send()
            .await
            .expect("GetObjectAcl");
        assert_eq!(acl.owner().and_then(|o| o.id()), Some("immuta"));
        let grants = acl.grants();
        assert_eq!(grants.len(), 1);
        assert_eq!(
            grants[0].permission().map(|p| p.as_str()),
            Some("FULL_CONTROL")
        );
        // Garage 2.5 answers 501 to GetObjectTagging: s3p forwards it and passes the answer on in its
        // own words. (GetObjectAttributes is forwarded too, but Garage 2.5 answers it as a plain GET, so
        // only its forwarding is checked here, in the audit below.)
        let tagging = w
            .get_object_tagging()
            .bucket("immuta")
            .key("sales/seed.csv")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            tagging.into_service_error().meta().code(),
            Some("NotImplemented")
        );
        let _ = w
            .get_object_attributes()
            .bucket("immuta")
            .key("sales/seed.csv")
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::Etag)
            .send()
            .await;
        // An ACL on a write: `private` is what every object is; anything else is refused.
        w.put_object()
            .bucket("immuta")
            .key("sandbox/acl-private.txt")
            .acl(aws_sdk_s3::types::ObjectCannedAcl::Private)
            .body(ByteStream::from_static(b"p"))
            .send()
            .await
            .expect("x-amz-acl: private is accepted");
        let public = w
            .put_object()
            .bucket("immuta")
            .key("sandbox/acl-public.txt")
            .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
            .body(ByteStream::from_static(b"p"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            public.into_service_error().meta().code(),
            Some("NotImplemented")
        );
    });
    assert_eq!(backend_object("sandbox/acl-public.txt"), None);
    let log = env().s3p.log();
    assert!(
        log.contains("backend garage answered 501"),
        "the backend's 501 is logged"
    );
}

/// Streams `total` bytes of a fixed pattern as one PUT (legacy key), `chunk` bytes per write with
/// `pause` between writes; returns the status.
fn stream_put(addr: SocketAddr, key: &str, total: u64, chunk: usize, pause: Duration) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let head = format!(
        "PUT /s3p/immuta/{key} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: AWS {LEGACY_WRITER}:immuta\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let block = bytes(chunk, 7);
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.min((total - sent) as usize);
        stream.write_all(&block[..n]).unwrap();
        sent += n as u64;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    read_response(&mut stream).status
}

#[test]
fn uploads_stream_without_buffering() {
    let e = env();
    // An s3p of its own, so that other tests' requests do not count.
    let s3p = S3p::start(&e.dir.0.join("s3p-memory"), &e.yaml);
    let addr = s3p.addr();
    let pid = s3p.pid();
    // Warm up (pools, allocator) before the baseline.
    assert_eq!(
        stream_put(
            addr,
            "sandbox/mem/warm.bin",
            4 << 20,
            256 << 10,
            Duration::ZERO
        ),
        200
    );
    let baseline = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Eight slow uploaders (64 KiB every 100 ms) beside one 1 GiB upload at full speed.
    let slow: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                stream_put(
                    addr,
                    &format!("sandbox/mem/slow-{i}.bin"),
                    2 << 20,
                    64 << 10,
                    Duration::from_millis(100),
                )
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let status = stream_put(
        addr,
        "sandbox/mem/big.bin",
        1 << 30,
        1 << 20,
        Duration::ZERO,
    );
    let elapsed = started.elapsed();
    for t in slow {
        assert_eq!(t.join().unwrap(), 200, "a slow upload");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(status, 200);
    let growth_mib = (peak.load(std::sync::atomic::Ordering::Relaxed) - baseline) as f64 / 1024.0;
    println!(
        "1 GiB upload in {:.1} s ({:.0} MB/s) beside 8 slow uploads: RSS {} MiB at start, peak growth {growth_mib:.1} MiB",
        elapsed.as_secs_f64(),
        (1u64 << 30) as f64 / elapsed.as_secs_f64() / 1e6,
        baseline / 1024
    );
    assert!(growth_mib < 64.0, "RSS grew by {growth_mib:.1} MiB");
    let c = e.garage.client();
    runtime().block_on(async {
        let head = c
            .head_object()
            .bucket(BETA_BUCKET)
            .key("sandbox/mem/big.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(1 << 30));
        c.delete_object()
            .bucket(BETA_BUCKET)
            .key("sandbox/mem/big.bin")
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn a_stalled_uploader_is_cut_and_nothing_is_stored() {
    let e = env();
    // A short window and a rate no dripping client meets (the defaults are 60 s and 1 KiB/s).
    let yaml = e.yaml.replace(
        "limits: { max_concurrent_requests: 64 }",
        "limits: { max_concurrent_requests: 64, client_timeout_ms: 1000, min_client_rate_bytes_per_s: 100000 }",
    );
    assert_ne!(yaml, e.yaml);
    let s3p = S3p::start(&e.dir.0.join("s3p-slow-upload"), &yaml);
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(s3p.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "PUT /s3p/immuta/sandbox/dripped.bin HTTP/1.1\r\nHost: {}\r\nAuthorization: AWS {LEGACY_WRITER}:immuta\r\nContent-Length: 1000000\r\n\r\n",
        s3p.addr()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // 1 KiB every 100 ms (10 KB/s), until s3p stops taking it.
    let chunk = [b'd'; 1024];
    for _ in 0..100 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the stalled upload was not cut"
    );
    if !buf.is_empty() {
        let r = parse_response(&buf);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("RequestTimeout"), "{}", r.text());
    }
    assert_eq!(backend_object("sandbox/dripped.bin"), None);
    let log = s3p.log();
    assert!(log.contains("upload cut"), "the cut is logged");
}

#[test]
fn list_multipart_uploads_shows_the_writable_data_sources_only() {
    let w = writer();
    runtime().block_on(async {
        let mut ids = Vec::new();
        for k in ["sandbox/lmu/one.bin", "sandbox/lmu/two.bin"] {
            let created = w
                .create_multipart_upload()
                .bucket("immuta")
                .key(k)
                .send()
                .await
                .unwrap();
            ids.push((k.to_string(), created.upload_id().unwrap().to_string()));
        }
        let listed = w
            .list_multipart_uploads()
            .bucket("immuta")
            .prefix("sandbox/lmu/")
            .send()
            .await
            .expect("ListMultipartUploads");
        let got: Vec<(String, String)> = listed
            .uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap().to_string(),
                    u.upload_id().unwrap().to_string(),
                )
            })
            .collect();
        // The ids are the ones CreateMultipartUpload gave (sealed, bound to their keys).
        assert_eq!(got, ids);
        assert_eq!(listed.bucket(), Some("immuta"));
        // A page of one, then the next from its markers.
        let first = w
            .list_multipart_uploads()
            .bucket("immuta")
            .prefix("sandbox/lmu/")
            .max_uploads(1)
            .send()
            .await
            .unwrap();
        assert_eq!(first.is_truncated(), Some(true));
        assert_eq!(first.uploads().len(), 1);
        let rest = w
            .list_multipart_uploads()
            .bucket("immuta")
            .prefix("sandbox/lmu/")
            .key_marker(first.next_key_marker().unwrap())
            .upload_id_marker(first.next_upload_id_marker().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            rest.uploads()
                .iter()
                .map(|u| u.key().unwrap())
                .collect::<Vec<_>>(),
            ["sandbox/lmu/two.bin"]
        );
        // The reader writes nowhere: it sees no uploads at all.
        let none = reader()
            .list_multipart_uploads()
            .bucket("immuta")
            .send()
            .await
            .unwrap();
        assert!(none.uploads().is_empty());
        for (k, id) in &ids {
            w.abort_multipart_upload()
                .bucket("immuta")
                .key(k)
                .upload_id(id)
                .send()
                .await
                .unwrap();
        }
    });
}
