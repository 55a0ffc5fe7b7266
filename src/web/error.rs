//! The one mapping from domain errors to HTTP statuses and JSON bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::auth::AuthError;
use crate::peers::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Registry(RegistryError::NotFound(_)) | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Registry(RegistryError::Invalid(_))
            | ApiError::Registry(RegistryError::TitleMismatch { .. })
            | ApiError::Registry(RegistryError::OwnTitle(_))
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Registry(RegistryError::OutsideNetworks(_)) => StatusCode::FORBIDDEN,
            ApiError::Registry(RegistryError::Index(_)) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Auth(e) => auth_status(e),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = %self, "API request failed");
        }
        let mut rsp = HttpResponse::build(self.status_code());
        if let ApiError::Auth(AuthError::Locked { seconds }) = self {
            rsp.insert_header(("Retry-After", seconds.to_string()));
        }
        rsp.json(serde_json::json!({"error": self.to_string()}))
    }
}

fn auth_status(e: &AuthError) -> StatusCode {
    match e {
        AuthError::BadCredentials | AuthError::LockedNow | AuthError::WrongPassword => {
            StatusCode::UNAUTHORIZED
        }
        AuthError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
        AuthError::UserExists(_)
        | AuthError::TokenExists(_)
        | AuthError::External(_)
        | AuthError::LocalAccount(_) => StatusCode::CONFLICT,
        AuthError::Disabled(_) => StatusCode::FORBIDDEN,
        AuthError::NoSuchUser(_) | AuthError::NoSuchToken(_) => StatusCode::NOT_FOUND,
        AuthError::SamePassword
        | AuthError::Password(_)
        | AuthError::NoRoles
        | AuthError::BadName(_)
        | AuthError::TokenRoles
        | AuthError::TokenLifetime => StatusCode::BAD_REQUEST,
        AuthError::Index(_) => StatusCode::SERVICE_UNAVAILABLE,
        AuthError::Random(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A query string parsed into `T`, or a 400 that says what is wrong.
pub fn parsed<T>(query: Result<actix_web::web::Query<T>, actix_web::Error>) -> Result<T, ApiError> {
    query
        .map(actix_web::web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
}
