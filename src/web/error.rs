//! The one mapping from domain errors to HTTP statuses and JSON bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::peers::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Registry(RegistryError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Registry(RegistryError::Invalid(_))
            | ApiError::Registry(RegistryError::TitleMismatch { .. })
            | ApiError::Registry(RegistryError::OwnTitle(_))
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Registry(RegistryError::OutsideNetworks(_)) => StatusCode::FORBIDDEN,
            ApiError::Registry(RegistryError::Index(_)) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = %self, "API request failed");
        }
        HttpResponse::build(self.status_code()).json(serde_json::json!({"error": self.to_string()}))
    }
}

/// A query string parsed into `T`, or a 400 that says what is wrong.
pub fn parsed<T>(query: Result<actix_web::web::Query<T>, actix_web::Error>) -> Result<T, ApiError> {
    query
        .map(actix_web::web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
}
