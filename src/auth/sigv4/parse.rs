//! Reading a SigV4 request's authentication: the `Authorization` header and the presigned-URL query
//! parameters, into typed values (no verification here).

use super::*;
use crate::error::{S3Error, S3ErrorCode};

/// `AKID/yyyymmdd/region/service/aws4_request`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    /// `yyyymmdd`
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Credential {
    /// Splits a credential string; `None` unless it has exactly five non-empty parts ending in
    /// `aws4_request` (an access key id never contains `/`).
    pub fn parse(value: &str) -> Option<Credential> {
        let parts: Vec<&str> = value.split('/').collect();
        match parts.as_slice() {
            [akid, date, region, service, SCOPE_TERMINATOR]
                if !akid.is_empty()
                    && !date.is_empty()
                    && !region.is_empty()
                    && !service.is_empty() =>
            {
                Some(Credential {
                    access_key_id: akid.to_string(),
                    date: date.to_string(),
                    region: region.to_string(),
                    service: service.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The credential scope line of the string to sign: `yyyymmdd/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{SCOPE_TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// The three components of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    pub credential: Credential,
    /// As listed by the client (lowercase, `;`-separated on the wire), in the client's order.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Which form of SigV4 is being checked: the two forms use different error codes and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    Header,
    Query,
}

impl Form {
    pub(super) fn malformed(self, detail: &str) -> S3Error {
        match self {
            Form::Header => S3Error::with_message(
                S3ErrorCode::AuthorizationHeaderMalformed,
                format!("The authorization header is malformed; {detail}"),
            ),
            Form::Query => S3Error::with_message(
                S3ErrorCode::AuthorizationQueryParametersError,
                format!("Error parsing the X-Amz-Credential parameter; {detail}"),
            ),
        }
    }

    pub(super) fn query_error(message: impl Into<String>) -> S3Error {
        S3Error::with_message(S3ErrorCode::AuthorizationQueryParametersError, message)
    }
}

pub(super) const CREDENTIAL_MALFORMED: &str =
    "the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".";

/// Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
///
/// The service, the date and the presence of `host` are not checked here (see [`verify_header`]),
/// so this also parses the generic-service official test vectors.
pub fn parse_authorization(value: &str) -> Result<AuthorizationHeader, S3Error> {
    let malformed = |detail: &str| Form::Header.malformed(detail);
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with([' ', '\t']))
        .ok_or_else(|| {
            malformed("the authorization header must start with \"AWS4-HMAC-SHA256 \".")
        })?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let component = component.trim_matches([' ', '\t']);
        let (name, value) = component.split_once('=').ok_or_else(|| {
            malformed(&format!(
                "the authorization component \"{component}\" is malformed."
            ))
        })?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(&format!(
                    "the authorization component \"{component}\" is malformed."
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(malformed(&format!(
                "the authorization component \"{name}\" appears twice."
            )));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(malformed(
            "the authorization header requires three components: Credential, SignedHeaders, \
             and Signature.",
        ));
    };
    Ok(AuthorizationHeader {
        credential: Credential::parse(credential).ok_or_else(|| malformed(CREDENTIAL_MALFORMED))?,
        signed_headers: parse_signed_headers(signed_headers)
            .ok_or_else(|| malformed("the SignedHeaders are malformed."))?,
        signature: signature.to_string(),
    })
}

/// `a;b;c` -> `[a, b, c]`; `None` if empty or if any name is empty.
pub(super) fn parse_signed_headers(value: &str) -> Option<Vec<String>> {
    let names: Vec<String> = value.split(';').map(str::to_string).collect();
    (!names.iter().any(String::is_empty)).then_some(names)
}

/// The authentication parameters of a presigned URL, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedParams {
    pub credential: Credential,
    /// `X-Amz-Date`, `yyyymmddThhmmssZ`, as sent.
    pub amz_date: String,
    /// `X-Amz-Expires`, checked to be in `1..=604800`.
    pub expires: u64,
    pub signed_headers: Vec<String>,
    pub signature: String,
    /// `X-Amz-Content-Sha256`, when the client put it into the query.
    pub content_sha256: Option<String>,
}

/// True when the query carries any SigV4 presigned-URL parameter, i.e. the request means to use
/// query auth.
pub fn is_presigned(raw_query: &str) -> bool {
    let markers = [param::ALGORITHM, param::CREDENTIAL, param::SIGNATURE];
    query_pairs(raw_query).any(|(name, _)| markers.iter().any(|m| m.as_bytes() == name.as_ref()))
}

/// Extracts and checks the presigned-URL parameters (algorithm, credential shape, `X-Amz-Expires`
/// range). S3 rules that need more than the query (service, date match, clock) are applied by
/// [`verify_presigned`].
pub fn parse_presigned(raw_query: &str) -> Result<PresignedParams, S3Error> {
    const NAMES: [&str; 7] = [
        param::ALGORITHM,
        param::CREDENTIAL,
        param::DATE,
        param::EXPIRES,
        param::SIGNED_HEADERS,
        param::SIGNATURE,
        param::CONTENT_SHA256,
    ];
    let mut values: [Option<String>; 7] = Default::default();
    for (name, value) in query_pairs(raw_query) {
        if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == name.as_ref()) {
            // A repeated parameter would leave it unclear which value was meant: refuse it.
            if values[i]
                .replace(String::from_utf8_lossy(&value).into_owned())
                .is_some()
            {
                return Err(Form::query_error(format!(
                    "The {} parameter appears more than once.",
                    NAMES[i]
                )));
            }
        }
    }
    let [algorithm, credential, amz_date, expires, signed_headers, signature, content_sha256] =
        values;
    let (
        Some(algorithm),
        Some(credential),
        Some(amz_date),
        Some(expires),
        Some(signed_headers),
        Some(signature),
    ) = (
        algorithm,
        credential,
        amz_date,
        expires,
        signed_headers,
        signature,
    )
    else {
        return Err(Form::query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, \
             X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        ));
    };
    if algorithm != ALGORITHM {
        return Err(Form::query_error(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let expires: i64 = expires
        .parse()
        .map_err(|_| Form::query_error("X-Amz-Expires should be a number"))?;
    if expires < 0 {
        return Err(Form::query_error("X-Amz-Expires must be non-negative"));
    }
    if expires == 0 {
        return Err(Form::query_error("X-Amz-Expires must be greater than 0"));
    }
    if expires as u64 > MAX_PRESIGN_EXPIRES {
        return Err(Form::query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    Ok(PresignedParams {
        credential: Credential::parse(&credential)
            .ok_or_else(|| Form::Query.malformed(CREDENTIAL_MALFORMED))?,
        amz_date,
        expires: expires as u64,
        signed_headers: parse_signed_headers(&signed_headers)
            .ok_or_else(|| Form::query_error("Error parsing the X-Amz-SignedHeaders parameter."))?,
        signature,
        content_sha256,
    })
}

// -------------------------------------------------------------------------------------------------
// Core: canonical request, string to sign, key, signature (service-independent)
// -------------------------------------------------------------------------------------------------
