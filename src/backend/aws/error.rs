//! SDK errors turned into one-line typed errors that keep the service's code.

use std::error::Error as StdError;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// Everything the chain of `err` says, joined, for classification.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push(e.to_string());
        cur = e.source();
    }
    out
}

/// The service's error code of `err`, when the service answered.
pub fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

pub fn convert<E, R>(
    action: &'static str,
    region: &str,
    endpoint: Option<&str>,
    err: SdkError<E, R>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let region = region.to_string();
    if let SdkError::ServiceError(se) = &err {
        let e = se.err();
        let code = e.code().unwrap_or("Unknown").to_string();
        let message = e.message().unwrap_or("no message").to_string();
        let request_id = e.meta().extra("aws_request_id").map(Box::from);
        return Error::Aws {
            action,
            region,
            code,
            message,
            request_id,
            source: Box::new(err),
        };
    }
    let parts = chain(&err);
    let lower = parts.join(": ").to_lowercase();
    // The innermost message is usually the one a person can act on.
    let message = parts
        .iter()
        .rev()
        .find(|p| !p.is_empty() && !p.contains("dispatch failure") && !p.contains("other"))
        .cloned()
        .unwrap_or_else(|| parts.last().cloned().unwrap_or_default());
    // One line: the SDK's credential chain lists every provider it tried on
    // lines of their own; the first line says what a person needs.
    let message = message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches(". Attempted:")
        .trim_end_matches(':')
        .to_string();
    if lower.contains("credential") {
        return Error::Credentials {
            action,
            region,
            message,
            source: Box::new(err),
        };
    }
    let unreachable = matches!(err, SdkError::TimeoutError(_))
        || matches!(&err, SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout())
        || lower.contains("connection refused")
        || lower.contains("dns error")
        || lower.contains("error trying to connect");
    if unreachable {
        return Error::Unreachable {
            action,
            region,
            endpoint: endpoint.map(|e| format!(" {e}")).unwrap_or_default(),
            message,
            source: Box::new(err),
        };
    }
    Error::Sdk {
        action,
        region,
        message,
        source: Box::new(err),
    }
}
