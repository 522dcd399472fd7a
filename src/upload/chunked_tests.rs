//! The aws-chunked decoder against AWS's published examples ("Signature Calculations for the
//! Authorization Header: Transferring Payload in Multiple Chunks", with and without a signed trailer),
//! fed in every way a socket may cut a body, and against tampering.

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20130524T000000Z";
const SCOPE: &str = "20130524/us-east-1/s3/aws4_request";

fn key(secret: &str) -> [u8; 32] {
    sigv4::signing_key(secret, "20130524", "us-east-1", "s3").unwrap()
}

fn signing(seed: &str, signed_trailer: bool) -> ChunkSigning {
    ChunkSigning {
        keys: vec![key(SECRET)],
        amz_date: DATE.into(),
        scope: SCOPE.into(),
        seed_signature: seed.into(),
        signed_trailer,
    }
}

/// The example's body: 65 KiB of `a`, in a 64 KiB chunk and a 1 KiB chunk.
fn data() -> Vec<u8> {
    vec![b'a'; 66_560]
}

fn encode(sigs: [&str; 3], trailer: &str) -> Vec<u8> {
    let mut body = Vec::new();
    let chunk = |size: usize, sig: &str| {
        if sig.is_empty() {
            format!("{size:x}\r\n")
        } else {
            format!("{size:x};chunk-signature={sig}\r\n")
        }
    };
    body.extend_from_slice(chunk(65_536, sigs[0]).as_bytes());
    body.extend_from_slice(&data()[..65_536]);
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(chunk(1_024, sigs[1]).as_bytes());
    body.extend_from_slice(&data()[65_536..]);
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(chunk(0, sigs[2]).as_bytes());
    body.extend_from_slice(trailer.as_bytes());
    body.extend_from_slice(b"\r\n");
    body
}

const SIGNED: [&str; 3] = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];
const SIGNED_SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const TRAILER_SIGNED: [&str; 3] = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
];
const TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
const TRAILER: &str = "x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n";

fn plans() -> Vec<(&'static str, ChunkedPlan, Vec<u8>)> {
    vec![
        (
            "signed",
            ChunkedPlan {
                decoded_length: 66_560,
                signing: Some(signing(SIGNED_SEED, false)),
                trailer: None,
                pass_through: false,
                encoded_length: None,
            },
            encode(SIGNED, ""),
        ),
        (
            "signed with a signed trailer",
            ChunkedPlan {
                decoded_length: 66_560,
                signing: Some(signing(TRAILER_SEED, true)),
                trailer: Some(ChecksumAlgorithm::Crc32c),
                pass_through: false,
                encoded_length: None,
            },
            encode(TRAILER_SIGNED, TRAILER),
        ),
        (
            "unsigned with a trailer",
            ChunkedPlan {
                decoded_length: 66_560,
                signing: None,
                trailer: Some(ChecksumAlgorithm::Crc32c),
                pass_through: false,
                encoded_length: None,
            },
            encode(["", "", ""], "x-amz-checksum-crc32c:sOO8/Q==\r\n"),
        ),
    ]
}

/// The unsigned trailer form, passed on as framed: the output is the input, once each piece decoded.
#[test]
fn passed_through_bodies_come_out_as_framed_once_verified() {
    let body = encode(["", "", ""], "x-amz-checksum-crc32c:sOO8/Q==\r\n");
    let plan = ChunkedPlan {
        decoded_length: 66_560,
        signing: None,
        trailer: Some(ChecksumAlgorithm::Crc32c),
        pass_through: true,
        encoded_length: Some(body.len() as u64),
    };
    for step in [1, 3, 4096, body.len()] {
        let mut d = ChunkedDecoder::new(plan.clone());
        let mut out = Vec::new();
        let all = Bytes::copy_from_slice(&body);
        for at in (0..all.len()).step_by(step) {
            let piece = d.feed(&all.slice(at..(at + step).min(all.len()))).unwrap();
            out.extend_from_slice(&piece);
        }
        assert!(d.end_of_body().is_ok());
        assert_eq!(out, body, "step {step}");
    }
    // A wrong checksum: the piece that carries it is refused (nothing of it goes out).
    let bad = encode(["", "", ""], "x-amz-checksum-crc32c:AAAAAA==\r\n");
    let mut d = ChunkedDecoder::new(plan.clone());
    let e = d.feed(&Bytes::from(bad)).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::BadDigest);
    // More than announced.
    let mut d = ChunkedDecoder::new(plan);
    let long = [body.clone(), b"x".to_vec()].concat();
    assert!(d.feed(&Bytes::from(long)).is_err());
}

/// Feeds `body` in pieces of `step` bytes; returns the decoded output, or the first error.
fn decode(plan: &ChunkedPlan, body: &[u8], step: usize) -> Result<(Vec<u8>, bool), S3Error> {
    let mut d = ChunkedDecoder::new(plan.clone());
    let mut out = Vec::new();
    let body = Bytes::copy_from_slice(body);
    let mut at = 0;
    while at < body.len() {
        let end = (at + step).min(body.len());
        let piece = d.feed(&body.slice(at..end))?;
        // The last byte is passed on only once everything verified.
        if out.len() + piece.len() == 66_560 {
            assert!(
                d.is_done(),
                "the last byte went out before the end was verified"
            );
        }
        out.extend_from_slice(&piece);
        at = end;
    }
    Ok((out, d.end_of_body().is_ok()))
}

#[test]
fn published_examples_decode_however_the_body_is_cut() {
    for (name, plan, body) in plans() {
        for step in [1, 2, 3, 7, 100, 4096, 65_536, 70_000, body.len()] {
            let (out, complete) =
                decode(&plan, &body, step).unwrap_or_else(|e| panic!("{name}/{step}: {e:?}"));
            assert!(complete, "{name}/{step}");
            assert_eq!(out, data(), "{name}/{step}");
        }
    }
}

#[test]
fn the_right_secret_of_two_is_found() {
    let (_, mut plan, body) = plans().remove(0);
    if let Some(s) = &mut plan.signing {
        s.keys = vec![key("the other secret of a rotation"), key(SECRET)];
    }
    let (out, complete) = decode(&plan, &body, 1000).unwrap();
    assert!(complete);
    assert_eq!(out.len(), 66_560);
}

#[test]
fn tampering_is_refused_and_the_last_byte_kept_back() {
    for (name, plan, body) in plans() {
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = body.clone();
            f(&mut b);
            b
        };
        let cases: Vec<(&str, Vec<u8>, Option<S3ErrorCode>)> = vec![
            // One data byte changed: its chunk signature (or the checksum) no longer fits.
            (
                "data byte",
                mutate(&|b| b[200] = b'b'),
                Some(if plan.signing.is_some() {
                    S3ErrorCode::SignatureDoesNotMatch
                } else {
                    S3ErrorCode::BadDigest
                }),
            ),
            (
                "last data byte",
                mutate(&|b| {
                    let i = b.windows(3).rposition(|w| w == b"a\r\n").unwrap();
                    b[i] = b'b';
                }),
                Some(if plan.signing.is_some() {
                    S3ErrorCode::SignatureDoesNotMatch
                } else {
                    S3ErrorCode::BadDigest
                }),
            ),
            ("cut short", body[..body.len() - 40].to_vec(), None),
            (
                "bad size",
                mutate(&|b| b[0] = b'z'),
                Some(S3ErrorCode::InvalidRequest),
            ),
            (
                "extra data",
                [body.clone(), b"1\r\na\r\n".to_vec()].concat(),
                Some(S3ErrorCode::InvalidRequest),
            ),
        ];
        for (case, bad, want) in cases {
            for step in [1, 5000, bad.len()] {
                match (decode(&plan, &bad, step), want) {
                    (Err(e), Some(code)) => assert_eq!(e.code, code, "{name}/{case}/{step}"),
                    (Ok((out, complete)), None) => {
                        assert!(!complete, "{name}/{case}/{step}");
                        assert!(
                            out.len() < 66_560,
                            "{name}/{case}/{step}: the whole body went out"
                        );
                    }
                    (got, want) => panic!(
                        "{name}/{case}/{step}: {:?} want {want:?}",
                        got.map(|(o, c)| (o.len(), c))
                    ),
                }
            }
        }
    }
}

#[test]
fn signed_chunks_and_trailers_are_checked() {
    // A chunk signature changed.
    let (_, plan, _) = plans().remove(0);
    let mut sigs = SIGNED;
    let forged = "0".repeat(64);
    sigs[1] = &forged;
    let e = decode(&plan, &encode(sigs, ""), 4096).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
    // A chunk without its signature.
    let e = decode(&plan, &encode(["", "", ""], ""), 4096).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
    // The signed trailer: a changed checksum breaks the trailer signature; a missing signature too.
    let (_, plan, _) = plans().remove(1);
    let tampered = TRAILER.replace("sOO8/Q==", "AAAAAA==");
    let e = decode(&plan, &encode(TRAILER_SIGNED, &tampered), 4096).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
    let unsigned = "x-amz-checksum-crc32c:sOO8/Q==\r\n";
    let e = decode(&plan, &encode(TRAILER_SIGNED, unsigned), 4096).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
    // The unsigned trailer form: a wrong checksum, a missing one, an unannounced trailer.
    let (_, plan, _) = plans().remove(2);
    let none = ["", "", ""];
    let e = decode(
        &plan,
        &encode(none, "x-amz-checksum-crc32c:AAAAAA==\r\n"),
        4096,
    )
    .unwrap_err();
    assert_eq!(e.code, S3ErrorCode::BadDigest);
    let e = decode(&plan, &encode(none, ""), 4096).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
    let e = decode(
        &plan,
        &encode(none, "x-amz-checksum-crc32c:sOO8/Q==\r\nx-other:1\r\n"),
        4096,
    )
    .unwrap_err();
    assert_eq!(e.code, S3ErrorCode::InvalidRequest);
}

#[test]
fn an_empty_body_decodes() {
    let plan = ChunkedPlan {
        decoded_length: 0,
        signing: None,
        trailer: Some(ChecksumAlgorithm::Crc32),
        pass_through: false,
        encoded_length: None,
    };
    let mut d = ChunkedDecoder::new(plan);
    let out = d
        .feed(&Bytes::from_static(
            b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
        ))
        .unwrap();
    assert!(out.is_empty());
    assert!(d.end_of_body().is_ok());
}

/// AWS's example request itself (its headers, its signature over them): the seed its verification keeps
/// is the example's seed, and decodes the example's body, with and without a signed trailer.
#[test]
fn the_seed_a_verified_request_keeps_decodes_the_published_examples() {
    const AUTH: &str =
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,";
    let examples = [
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            None,
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
            SIGNED_SEED,
            plans().remove(0),
        ),
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            Some("x-amz-checksum-crc32c"),
            "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer",
            TRAILER_SEED,
            plans().remove(1),
        ),
    ];
    for (form, trailer, signed_headers, seed, (name, plan, body)) in examples {
        let mut headers: Vec<(String, String)> = [
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", form),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("content-length", "66824"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        if let Some(t) = trailer {
            headers.push(("x-amz-trailer".into(), t.into()));
        }
        let view = crate::wire::RequestView {
            method: "PUT",
            raw_path: "/examplebucket/chunkObject.txt",
            raw_query: "",
            headers: crate::wire::Headers::Pairs(&headers),
        };
        let authorization = format!("{AUTH}SignedHeaders={signed_headers},Signature={seed}");
        let lookup = |_: &str| crate::auth::SecretLookup::Secrets(vec![SECRET.to_string()]);
        let now = sigv4::parse_amz_date(DATE).unwrap();
        let verified = sigv4::verify_header(&view, &authorization, now, &lookup)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let chunk_seed = verified.chunk_seed.expect("a seed");
        assert_eq!(
            (
                chunk_seed.signing_key,
                chunk_seed.amz_date.as_str(),
                chunk_seed.scope.as_str(),
                chunk_seed.signature.as_str()
            ),
            (key(SECRET), DATE, SCOPE, seed),
            "{name}"
        );
        assert!(
            !format!("{chunk_seed:?}").contains(&hex::encode(key(SECRET))),
            "{name}: the key shown"
        );
        let from_seed = ChunkedPlan {
            signing: Some(ChunkSigning::from_seed(&chunk_seed, trailer.is_some())),
            ..plan
        };
        let (out, complete) =
            decode(&from_seed, &body, 4096).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(complete, "{name}");
        assert_eq!(out, data(), "{name}");
    }
}
