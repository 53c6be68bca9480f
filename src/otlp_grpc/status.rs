//! The one map from an HTTP status (the router's own refusal, or the
//! endpoint's answer to the OTLP/HTTP re-send) to the gRPC status of an
//! OTLP export, following the OTLP specification's "Failures" and
//! "OTLP/gRPC Throttling": a retryable refusal is `UNAVAILABLE`, or
//! `RESOURCE_EXHAUSTED` carrying a `google.rpc.RetryInfo` (without it a
//! client treats `RESOURCE_EXHAUSTED` as final); a bad export is
//! `INVALID_ARGUMENT` and is not retried.

use bytes::Bytes;
use prost::Message;
use std::time::Duration;
use tonic::{Code, Status};

/// The gRPC code an HTTP status stands for, and whether it is retryable
/// (a `RetryInfo` goes with it).
pub fn code_of(status: u16) -> (Code, bool) {
    match status {
        200..=299 => (Code::Ok, false),
        401 => (Code::Unauthenticated, false),
        403 => (Code::PermissionDenied, false),
        404 | 405 => (Code::Unimplemented, false),
        408 => (Code::DeadlineExceeded, true),
        413 | 431 => (Code::ResourceExhausted, false),
        429 => (Code::ResourceExhausted, true),
        500 => (Code::Internal, false),
        502..=504 => (Code::Unavailable, true),
        400..=499 => (Code::InvalidArgument, false),
        _ => (Code::Unknown, false),
    }
}

/// The gRPC status for an HTTP `status` with `message`; `retry_after`
/// (seconds) becomes the `RetryInfo` delay of a retryable one, 1 s when the
/// answer named none.
pub fn status_of(status: u16, message: &str, retry_after: Option<u64>) -> Status {
    let (code, retryable) = code_of(status);
    if !retryable {
        return Status::new(code, message);
    }
    let delay = Duration::from_secs(retry_after.unwrap_or(1));
    Status::with_details(code, message, retry_info(code, message, delay))
}

/// The HTTP status a gRPC code stands for (metrics and the access log
/// count a passed-through call by it).
pub fn http_of(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound | Code::Unimplemented => 404,
        Code::DeadlineExceeded => 504,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        _ => 500,
    }
}

/// A gRPC deployment's answer as passed back: its status (code, message,
/// details) as it sent it, the HTTP status it stands for, and on `OK` the
/// response message. An answer without `grpc-status` maps by its HTTP status.
pub fn of_grpc_answer(answer: crate::upstream::GrpcAnswer) -> (u16, Result<Bytes, Status>) {
    match answer.code {
        Some(0) => (200, Ok(answer.body)),
        Some(code) => {
            let code = Code::from_i32(code);
            (http_of(code), Err(Status::with_details(code, answer.message, answer.details)))
        }
        None => {
            let status = match answer.http_status {
                200 => 502,
                other => other,
            };
            let message =
                format!("the deployment's gRPC endpoint answered HTTP {} without grpc-status", answer.http_status);
            (status, Err(status_of(status, &message, None)))
        }
    }
}

/// `google.rpc.Status { code, message, details: [RetryInfo { retry_delay }] }`,
/// the content of `grpc-status-details-bin`.
fn retry_info(code: Code, message: &str, delay: Duration) -> Bytes {
    let retry = RetryInfo {
        retry_delay: Some(ProtoDuration { seconds: delay.as_secs() as i64, nanos: delay.subsec_nanos() as i32 }),
    };
    let status = RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![Any { type_url: RETRY_INFO_TYPE.to_string(), value: retry.encode_to_vec() }],
    };
    status.encode_to_vec().into()
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_the_otlp_grpc_codes() {
        let table = [
            (200, Code::Ok, false),
            (204, Code::Ok, false),
            (400, Code::InvalidArgument, false),
            (401, Code::Unauthenticated, false),
            (403, Code::PermissionDenied, false),
            (404, Code::Unimplemented, false),
            (413, Code::ResourceExhausted, false),
            (429, Code::ResourceExhausted, true),
            (500, Code::Internal, false),
            (502, Code::Unavailable, true),
            (503, Code::Unavailable, true),
            (504, Code::Unavailable, true),
            (418, Code::InvalidArgument, false),
            (501, Code::Unknown, false),
        ];
        for (status, code, retryable) in table {
            assert_eq!(code_of(status), (code, retryable), "{status}");
        }
    }

    #[test]
    fn a_retryable_status_carries_retry_info_with_the_delay() {
        let status = status_of(429, "over quota", Some(3));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let decoded = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(decoded.code, Code::ResourceExhausted as i32);
        assert_eq!(decoded.details[0].type_url, RETRY_INFO_TYPE);
        let retry = RetryInfo::decode(decoded.details[0].value.as_slice()).unwrap();
        assert_eq!(retry.retry_delay, Some(ProtoDuration { seconds: 3, nanos: 0 }));
        assert!(status_of(403, "no", None).details().is_empty());
    }
}
