//! Reading a body into memory within a size limit: one strict helper for every upload and
//! request body (function invocations, component uploads).

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Why a body could not be read within its limit.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The declared `Content-Length` or the bytes received exceed the limit.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The `Content-Length` header is not a plain decimal number.
    #[error("invalid content-length header")]
    InvalidLength,
    /// The client failed while sending (reset, timeout between frames...).
    #[error("reading the body: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The declared `Content-Length`, parsed strictly (RFC 9110: digits only, so `+5` is refused).
pub fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, BodyError> {
    let Some(value) = headers.get(http::header::CONTENT_LENGTH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| BodyError::InvalidLength)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BodyError::InvalidLength);
    }
    text.parse().map(Some).map_err(|_| BodyError::InvalidLength)
}

/// Buffers `body` if it fits in `limit` bytes; refuses a too-large declared length before
/// reading anything.
pub async fn read_within<B>(headers: &http::HeaderMap, body: B, limit: u64) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared_length(headers)?.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Read(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(len: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, len.parse().unwrap());
        h
    }

    #[test]
    fn content_length_is_strict() {
        assert_eq!(declared_length(&http::HeaderMap::new()).unwrap(), None);
        assert_eq!(declared_length(&headers("42")).unwrap(), Some(42));
        for bad in ["+5", "-1", " 5", "5 ", "0x10", "", "99999999999999999999999"] {
            assert!(declared_length(&headers(bad)).is_err(), "{bad:?} should be refused");
        }
    }

    #[tokio::test]
    async fn limits_declared_and_actual_sizes() {
        let body = || http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(read_within(&http::HeaderMap::new(), body(), 10).await.unwrap().len(), 10);
        assert!(matches!(read_within(&http::HeaderMap::new(), body(), 9).await, Err(BodyError::TooLarge { limit: 9 })));
        assert!(matches!(read_within(&headers("100"), body(), 50).await, Err(BodyError::TooLarge { limit: 50 })));
    }
}
