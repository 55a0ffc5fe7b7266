//! DICOMweb failures as HTTP responses: the PS3.18 status code, a Warning
//! header (PS3.18 8.6.3) and a JSON body with a readable message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::index::IndexError;
use crate::storage::StorageError;
use crate::transcode::TranscodeError;

#[derive(Debug, thiserror::Error)]
pub enum DicomWebError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("the requested range is outside the {0} bytes of the value")]
    RangeNotSatisfiable(u64),
    #[error("index error: {0}")]
    Index(#[from] IndexError),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
    #[error("every core is busy decoding images; try again shortly")]
    Busy,
}

impl From<TranscodeError> for DicomWebError {
    fn from(e: TranscodeError) -> Self {
        match e {
            TranscodeError::Storage(e) => DicomWebError::Storage(e),
            TranscodeError::Busy => DicomWebError::Busy,
            TranscodeError::TooLarge(_) => DicomWebError::NotAcceptable(e.to_string()),
            TranscodeError::Failed { .. } => DicomWebError::NotAcceptable(e.to_string()),
        }
    }
}

impl ResponseError for DicomWebError {
    fn status_code(&self) -> StatusCode {
        match self {
            DicomWebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DicomWebError::NotFound(_) => StatusCode::NOT_FOUND,
            DicomWebError::Forbidden(_) => StatusCode::FORBIDDEN,
            DicomWebError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            DicomWebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DicomWebError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DicomWebError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            DicomWebError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            DicomWebError::Storage(StorageError::NotFound(_)) => StatusCode::NOT_FOUND,
            DicomWebError::Index(_) | DicomWebError::Storage(_) | DicomWebError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "DICOMweb request failed");
        }
        let message = self.to_string();
        // Header values must be visible ASCII.
        let warning: String = message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .filter(|c| *c != '"')
            .take(200)
            .collect();
        let mut response = HttpResponse::build(status);
        if let DicomWebError::RangeNotSatisfiable(length) = self {
            response.insert_header(("Content-Range", format!("bytes */{length}")));
        }
        if let DicomWebError::Busy = self {
            response.insert_header(("Retry-After", "1"));
        }
        response
            .insert_header(("Warning", format!("299 tessera \"{warning}\"")))
            .json(serde_json::json!({
                "status": status.as_u16(),
                "error": status.canonical_reason().unwrap_or(""),
                "message": message,
            }))
    }
}
