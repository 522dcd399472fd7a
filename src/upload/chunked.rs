//! The aws-chunked body encoding of S3 uploads, decoded as it streams by.
//!
//! Forms (named by `x-amz-content-sha256`):
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: `<hex size>;chunk-signature=<sig>\r\n<data>\r\n` ... ending with a
//!   zero-size chunk; each signature chains from the previous one (the first from the request's
//!   signature), so s3p checks every chunk with the client's secret.
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: the same, then trailing headers (a checksum) and their
//!   own signature `x-amz-trailer-signature`.
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: `<hex size>\r\n<data>\r\n` ..., then the trailing checksum.
//!
//! Signed forms: the backend receives the decoded body with `Content-Length` =
//! `x-amz-decoded-content-length` (the chunk signatures are the client's, which the backend cannot
//! check); s3p keeps back the body's last byte until the whole body verified, so that a bad chunk, a
//! wrong checksum or a short body ends the backend request one byte short of its announced length and
//! the backend stores nothing. (A zero-length decoded body has no byte to keep back: its headers,
//! signed by the request's own signature, already say everything that is stored.)
//!
//! The unsigned trailer form is passed on as it was framed (with the client's `Content-Length`, or
//! chunked when the client sent none), so that the backend checks and stores the checksum too:
//! multipart uploads created with a checksum algorithm need it on every part. s3p still decodes and
//! verifies it on the way; the backend's body then ends with the trailer itself, so a body that fails
//! verification never reaches the backend whole.

use super::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::sigv4;
use crate::error::{S3Error, S3ErrorCode};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of the empty string (the second hash of every chunk's string to sign).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Longest chunk header or trailer line accepted (a signed header is ~90 bytes).
const MAX_LINE: usize = 4096;
/// Most trailing headers accepted.
const MAX_TRAILERS: usize = 8;

/// How chunk signatures are checked.
#[derive(Clone)]
pub struct ChunkSigning {
    /// Signing keys the chunks may be signed with; the first chunk picks the one that fits. From a
    /// request ([`ChunkSigning::from_seed`]): the one key whose secret verified its signature.
    pub keys: Vec<[u8; 32]>,
    /// `x-amz-date` of the request.
    pub amz_date: String,
    /// The credential scope (`20130524/us-east-1/s3/aws4_request`).
    pub scope: String,
    /// The request's own signature (the seed of the chain).
    pub seed_signature: String,
    /// Trailing headers carry a signature too (`...-PAYLOAD-TRAILER`).
    pub signed_trailer: bool,
}

impl ChunkSigning {
    /// The chunk signatures that follow a verified request's own (`auth::Authenticated::chunk_seed`).
    pub fn from_seed(seed: &sigv4::ChunkSeed, signed_trailer: bool) -> ChunkSigning {
        ChunkSigning {
            keys: vec![seed.signing_key],
            amz_date: seed.amz_date.clone(),
            scope: seed.scope.clone(),
            seed_signature: seed.signature.clone(),
            signed_trailer,
        }
    }
}

/// What the decoder expects of a body.
#[derive(Clone)]
pub struct ChunkedPlan {
    /// `x-amz-decoded-content-length`: the decoded body's length, sent to the backend.
    pub decoded_length: u64,
    /// `None` for `STREAMING-UNSIGNED-PAYLOAD-TRAILER`.
    pub signing: Option<ChunkSigning>,
    /// The checksum named by `x-amz-trailer`, which the trailer must carry.
    pub trailer: Option<ChecksumAlgorithm>,
    /// Passed on as framed (not decoded).
    pub pass_through: bool,
    /// The encoded body's length (the client's `Content-Length`), if it sent one.
    pub encoded_length: Option<u64>,
}

enum State {
    /// Reading a chunk header line.
    Header,
    /// Reading this many data bytes of the current chunk.
    Data(u64),
    /// Reading the CRLF after a chunk's data (bytes of it seen so far).
    DataEnd(u8),
    /// Reading trailer lines after the last chunk, up to an empty line.
    Trailer,
    Done,
}

/// Decodes one aws-chunked body. Feed it the body as it comes; it returns the decoded bytes to pass on.
pub struct ChunkedDecoder {
    plan: ChunkedPlan,
    state: State,
    /// A header or trailer line read so far.
    line: Vec<u8>,
    /// The current chunk's expected signature (signed forms).
    chunk_signature: Option<String>,
    chunk_hash: Sha256,
    previous_signature: String,
    /// Which of `plan.signing.keys` verified (decided by the first chunk).
    key: Option<usize>,
    checksum: Option<Checksummer>,
    trailers: Vec<(String, String)>,
    /// Decoded bytes seen so far.
    decoded: u64,
    /// Encoded bytes seen so far.
    encoded: u64,
    /// The last byte of the body, kept back until everything verified.
    held: Option<Bytes>,
}

fn malformed(what: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidRequest,
        format!("Malformed aws-chunked body: {what}."),
    )
}

fn bad_signature() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::SignatureDoesNotMatch,
        "The chunk signature we calculated does not match the signature you provided.",
    )
}

impl ChunkedDecoder {
    pub fn new(plan: ChunkedPlan) -> ChunkedDecoder {
        let previous_signature = plan
            .signing
            .as_ref()
            .map(|s| s.seed_signature.clone())
            .unwrap_or_default();
        let checksum = plan.trailer.map(ChecksumAlgorithm::hasher);
        ChunkedDecoder {
            plan,
            state: State::Header,
            line: Vec::new(),
            chunk_signature: None,
            chunk_hash: Sha256::new(),
            previous_signature,
            key: None,
            checksum,
            trailers: Vec::new(),
            decoded: 0,
            encoded: 0,
            held: None,
        }
    }

    /// The body is complete and verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Decodes the next piece of the body; returns what may be passed on now (possibly empty). The
    /// body's last byte is returned only by the call that completes and verifies the body.
    pub fn feed(&mut self, input: &Bytes) -> Result<Bytes, S3Error> {
        if self.plan.pass_through {
            // Checked as decoded, passed on as framed. Nothing needs keeping back: the backend's body
            // ends with the trailer, whose last byte completes the verification in this very call, and
            // a call that fails passes nothing on.
            self.encoded += input.len() as u64;
            if self
                .plan
                .encoded_length
                .is_some_and(|total| self.encoded > total)
            {
                return Err(malformed("more data than Content-Length"));
            }
            self.decode(input)?;
            return Ok(input.clone());
        }
        self.decode(input)
    }

    fn decode(&mut self, input: &Bytes) -> Result<Bytes, S3Error> {
        let mut out: Vec<Bytes> = Vec::new();
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Header | State::Trailer => {
                    let rest = &input[at..];
                    let (piece, complete) = match memchr::memchr(b'\n', rest) {
                        Some(i) => (&rest[..=i], true),
                        None => (rest, false),
                    };
                    if self.line.len() + piece.len() > MAX_LINE {
                        return Err(malformed("line too long"));
                    }
                    self.line.extend_from_slice(piece);
                    at += piece.len();
                    if complete {
                        let line = std::mem::take(&mut self.line);
                        let line = line
                            .strip_suffix(b"\r\n")
                            .ok_or_else(|| malformed("line not ended by CRLF"))?;
                        if matches!(self.state, State::Header) {
                            self.start_chunk(line)?;
                        } else if line.is_empty() {
                            self.finish()?;
                        } else {
                            self.trailer_line(line)?;
                        }
                    }
                }
                State::Data(left) => {
                    let n = left.min((input.len() - at) as u64) as usize;
                    let data = input.slice(at..at + n);
                    at += n;
                    if self.plan.signing.is_some() {
                        self.chunk_hash.update(&data);
                    }
                    if let Some(c) = &mut self.checksum {
                        c.update(&data);
                    }
                    self.decoded += n as u64;
                    if self.decoded > self.plan.decoded_length {
                        return Err(malformed("more data than x-amz-decoded-content-length"));
                    }
                    if !self.plan.pass_through {
                        self.pass_on(data, &mut out);
                    }
                    if left == n as u64 {
                        self.end_chunk_data()?;
                        self.state = State::DataEnd(0);
                    } else {
                        self.state = State::Data(left - n as u64);
                    }
                }
                State::DataEnd(seen) => {
                    let want = b"\r\n"[seen as usize];
                    if input[at] != want {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    at += 1;
                    self.state = if seen == 1 {
                        State::Header
                    } else {
                        State::DataEnd(1)
                    };
                }
                State::Done => return Err(malformed("data after the last chunk")),
            }
        }
        if self.is_done() {
            out.extend(self.held.take());
        }
        Ok(match out.len() {
            0 => Bytes::new(),
            1 => out.pop().expect("one piece"),
            _ => {
                let mut all = BytesMut::with_capacity(out.iter().map(Bytes::len).sum());
                for piece in out {
                    all.extend_from_slice(&piece);
                }
                all.freeze()
            }
        })
    }

    /// The body ended: it must have been complete.
    pub fn end_of_body(&self) -> Result<(), S3Error> {
        if self.is_done() {
            Ok(())
        } else {
            Err(S3Error::new(S3ErrorCode::IncompleteBody))
        }
    }

    /// Passes data on, keeping back the body's last byte.
    fn pass_on(&mut self, data: Bytes, out: &mut Vec<Bytes>) {
        if self.decoded == self.plan.decoded_length && !data.is_empty() {
            let last = data.len() - 1;
            if last > 0 {
                out.push(data.slice(..last));
            }
            self.held = Some(data.slice(last..));
        } else if !data.is_empty() {
            out.push(data);
        }
    }

    fn start_chunk(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let line = std::str::from_utf8(line).map_err(|_| malformed("chunk header not ASCII"))?;
        let (size, extension) = match line.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (line, None),
        };
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("bad chunk size"));
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| malformed("bad chunk size"))?;
        self.chunk_signature = match (&self.plan.signing, extension) {
            (Some(_), Some(ext)) => {
                let sig = ext
                    .strip_prefix("chunk-signature=")
                    .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| malformed("bad chunk-signature"))?;
                Some(sig.to_ascii_lowercase())
            }
            (Some(_), None) => return Err(malformed("chunk without chunk-signature")),
            (None, Some(_)) => return Err(malformed("unexpected chunk extension")),
            (None, None) => None,
        };
        self.chunk_hash = Sha256::new();
        if size == 0 {
            self.end_chunk_data()?;
            self.state = State::Trailer;
        } else {
            self.state = State::Data(size);
        }
        Ok(())
    }

    /// Checks the signature of the chunk just read (signed forms).
    fn end_chunk_data(&mut self) -> Result<(), S3Error> {
        let Some(signing) = &self.plan.signing else {
            return Ok(());
        };
        let claimed = self.chunk_signature.take().ok_or_else(bad_signature)?;
        let data_hash = hex::encode(std::mem::take(&mut self.chunk_hash).finalize());
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{data_hash}",
            signing.amz_date, signing.scope, self.previous_signature
        );
        self.previous_signature = self.verify(&string_to_sign, &claimed)?;
        Ok(())
    }

    /// Verifies `claimed` over `string_to_sign` with the key's signing key (the first call picks which);
    /// returns the signature, the next link of the chain.
    fn verify(&mut self, string_to_sign: &str, claimed: &str) -> Result<String, S3Error> {
        let signing = self.plan.signing.as_ref().ok_or_else(bad_signature)?;
        let candidates: Vec<usize> = match self.key {
            Some(k) => vec![k],
            None => (0..signing.keys.len()).collect(),
        };
        for k in candidates {
            let expected = sigv4::signature(&signing.keys[k], string_to_sign);
            if bool::from(expected.as_bytes().ct_eq(claimed.as_bytes())) {
                self.key = Some(k);
                return Ok(expected);
            }
        }
        Err(bad_signature())
    }

    fn trailer_line(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let line = std::str::from_utf8(line).map_err(|_| malformed("trailer not UTF-8"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("trailer without `:`"))?;
        if self.trailers.len() >= MAX_TRAILERS {
            return Err(malformed("too many trailers"));
        }
        self.trailers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        Ok(())
    }

    /// The empty line after the trailers: checks the trailer signature, the checksum and the length.
    fn finish(&mut self) -> Result<(), S3Error> {
        let signature = self
            .trailers
            .iter()
            .position(|(n, _)| n == "x-amz-trailer-signature")
            .map(|i| self.trailers.remove(i).1);
        let signed_trailer = self.plan.signing.as_ref().is_some_and(|s| s.signed_trailer);
        if signed_trailer {
            let claimed = signature.ok_or_else(bad_signature)?;
            let mut canonical = String::new();
            for (n, v) in &self.trailers {
                canonical.push_str(&format!("{n}:{v}\n"));
            }
            let signing = self.plan.signing.as_ref().ok_or_else(bad_signature)?;
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
                signing.amz_date,
                signing.scope,
                self.previous_signature,
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            self.verify(&string_to_sign, &claimed.to_ascii_lowercase())?;
        } else if signature.is_some() {
            return Err(malformed("unexpected trailer signature"));
        }
        match (self.plan.trailer, self.checksum.take()) {
            (Some(alg), Some(hasher)) => {
                let sent = self
                    .trailers
                    .iter()
                    .find(|(n, _)| n == alg.header())
                    .map(|(_, v)| v.as_str())
                    .ok_or_else(|| malformed("the trailer named by x-amz-trailer is missing"))?;
                if self.trailers.len() != 1 {
                    return Err(malformed("trailers not announced by x-amz-trailer"));
                }
                let computed = hasher.finish();
                if !bool::from(computed.as_bytes().ct_eq(sent.as_bytes())) {
                    return Err(S3Error::with_message(
                        S3ErrorCode::BadDigest,
                        format!(
                            "The {} you specified did not match the calculated checksum.",
                            alg.name()
                        ),
                    ));
                }
            }
            _ if !self.trailers.is_empty() => {
                return Err(malformed("trailers not announced by x-amz-trailer"))
            }
            _ => {}
        }
        if self.decoded != self.plan.decoded_length {
            return Err(S3Error::new(S3ErrorCode::IncompleteBody));
        }
        self.state = State::Done;
        Ok(())
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
