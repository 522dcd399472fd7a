//! The additional checksums of S3 (`x-amz-checksum-*`), computed over a body as it streams by, for the
//! trailing checksums of aws-chunked uploads that s3p decodes itself.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::Digest as _;

/// An S3 additional-checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// From the header name that carries it (`x-amz-checksum-crc32`...), any case.
    pub fn from_header(name: &str) -> Option<ChecksumAlgorithm> {
        let name = name.trim().to_ascii_lowercase();
        Some(match name.strip_prefix("x-amz-checksum-")? {
            "crc32" => ChecksumAlgorithm::Crc32,
            "crc32c" => ChecksumAlgorithm::Crc32c,
            "crc64nvme" => ChecksumAlgorithm::Crc64Nvme,
            "sha1" => ChecksumAlgorithm::Sha1,
            "sha256" => ChecksumAlgorithm::Sha256,
            _ => return None,
        })
    }

    pub fn header(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name S3 uses in messages (`CRC32`...).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    pub fn hasher(self) -> Checksummer {
        match self {
            ChecksumAlgorithm::Crc32 => Checksummer::Crc(
                self,
                crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            ),
            ChecksumAlgorithm::Crc32c => Checksummer::Crc(
                self,
                crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi),
            ),
            ChecksumAlgorithm::Crc64Nvme => Checksummer::Crc(
                self,
                crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme),
            ),
            ChecksumAlgorithm::Sha1 => Checksummer::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Checksummer::Sha256(sha2::Sha256::new()),
        }
    }
}

/// A checksum being computed.
pub enum Checksummer {
    Crc(ChecksumAlgorithm, crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Checksummer {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksummer::Crc(_, d) => d.update(data),
            Checksummer::Sha1(d) => d.update(data),
            Checksummer::Sha256(d) => d.update(data),
        }
    }

    /// The checksum as S3 writes it: base64 of the big-endian digest.
    pub fn finish(self) -> String {
        match self {
            Checksummer::Crc(ChecksumAlgorithm::Crc64Nvme, d) => {
                STANDARD.encode(d.finalize().to_be_bytes())
            }
            Checksummer::Crc(_, d) => STANDARD.encode((d.finalize() as u32).to_be_bytes()),
            Checksummer::Sha1(d) => STANDARD.encode(d.finalize()),
            Checksummer::Sha256(d) => STANDARD.encode(d.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of each CRC over "123456789" (from the CRC catalogue), and the digests of
    /// "hello world" (computed with Python's hashlib), base64-encoded big-endian as S3 writes them.
    #[test]
    fn known_values() {
        let table = [
            (ChecksumAlgorithm::Crc32, "123456789", "y/Q5Jg=="), // 0xCBF43926
            (ChecksumAlgorithm::Crc32c, "123456789", "4waSgw=="), // 0xE3069283
            (ChecksumAlgorithm::Crc64Nvme, "123456789", "rosUhgp5mIg="), // 0xAE8B14860A799888
            (
                ChecksumAlgorithm::Sha1,
                "hello world",
                "Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            ),
            (
                ChecksumAlgorithm::Sha256,
                "hello world",
                "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            ),
            (ChecksumAlgorithm::Crc32, "", "AAAAAA=="),
        ];
        for (alg, input, want) in table {
            let mut h = alg.hasher();
            // In two pieces: streaming must give the same value.
            let (a, b) = input.as_bytes().split_at(input.len() / 2);
            h.update(a);
            h.update(b);
            assert_eq!(h.finish(), want, "{alg:?}");
            assert_eq!(ChecksumAlgorithm::from_header(alg.header()), Some(alg));
        }
        assert_eq!(
            ChecksumAlgorithm::from_header("X-Amz-Checksum-CRC32"),
            Some(ChecksumAlgorithm::Crc32)
        );
        assert_eq!(ChecksumAlgorithm::from_header("x-amz-checksum-md5"), None);
        assert_eq!(ChecksumAlgorithm::from_header("content-md5"), None);
    }
}
