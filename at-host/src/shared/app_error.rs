//! Errors a function answers with: [`HandlerError`] (a contract code and a
//! message), [`AppError`] (an application's own error type, mapped to one
//! and back) and [`ServiceError`] (what a generated client returns for a
//! function with its own error type).

use at_core::ErrorCode;

use crate::shared::error::Error;

/// What a registered function returns instead of a value: a code from the
/// contract and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    /// What programs match on.
    pub code: ErrorCode,
    /// What people read.
    pub message: String,
}

impl HandlerError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
        }
    }

    /// `invalid_arguments` with a message.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        HandlerError::new(ErrorCode::InvalidArguments, message)
    }
}

impl From<at_core::CallError> for HandlerError {
    fn from(e: at_core::CallError) -> Self {
        HandlerError::new(e.code, e.message)
    }
}

/// An application's own error type, as a function returns it (`Result<T,
/// MyError>`) and as a generated client gives it back: each error travels
/// as a contract code and a message ([`to_error`](Self::to_error)), and an
/// error reply that [`from_error`](Self::from_error) recognises comes back
/// as the same error. Implementing it gives `From<E> for HandlerError`.
///
/// For a server-only error type, `impl From<MyError> for HandlerError` is
/// enough; a `#[service]` whose functions return `Result<T, MyError>` needs
/// `AppError`, since its client maps replies back.
///
/// ```
/// use at_host::{AppError, ErrorCode, HandlerError};
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum SensorError {
///     #[error("no sensor {0}")]
///     Missing(u8),
///     #[error("sensor is warming up")]
///     WarmingUp,
/// }
///
/// impl AppError for SensorError {
///     fn to_error(&self) -> HandlerError {
///         let code = match self {
///             SensorError::Missing(_) => ErrorCode::InvalidArguments,
///             SensorError::WarmingUp => ErrorCode::Busy,
///         };
///         HandlerError::new(code, self.to_string())
///     }
///
///     fn from_error(e: &HandlerError) -> Option<Self> {
///         match (e.code, e.message.as_str()) {
///             (ErrorCode::Busy, "sensor is warming up") => Some(SensorError::WarmingUp),
///             (ErrorCode::InvalidArguments, m) => {
///                 m.strip_prefix("no sensor ")?.parse().ok().map(SensorError::Missing)
///             }
///             _ => None,
///         }
///     }
/// }
///
/// let e = HandlerError::from(SensorError::Missing(3));
/// assert_eq!(e.to_string(), "invalid_arguments: no sensor 3");
/// assert_eq!(SensorError::from_error(&e), Some(SensorError::Missing(3)));
/// ```
pub trait AppError: Sized + Send + 'static {
    /// The code and message this error travels as.
    fn to_error(&self) -> HandlerError;

    /// The error that an error reply of this code and message stands for,
    /// or `None` when it is not one of these (the client then returns the
    /// reply as [`Error::Remote`]).
    fn from_error(error: &HandlerError) -> Option<Self>;
}

impl<E: AppError> From<E> for HandlerError {
    fn from(e: E) -> Self {
        e.to_error()
    }
}

/// What a generated client returns for a function declared `-> Result<T,
/// E>` with `E: AppError`: the function's own error, or why the call did
/// not get an answer of the function (transport, arguments, an error reply
/// that is not one of `E`'s).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E> {
    /// The function answered with one of its errors.
    #[error("{0}")]
    App(E),
    /// Anything else.
    #[error(transparent)]
    Call(Error),
}

impl<E: AppError> ServiceError<E> {
    /// `error` as `E` where it is an error reply that `E` recognises.
    pub fn from_call(error: Error) -> Self {
        if let Error::Remote { code, message } = &error
            && let Some(code) = ErrorCode::from_name(code)
            && let Some(app) = E::from_error(&HandlerError::new(code, message.clone()))
        {
            return ServiceError::App(app);
        }
        ServiceError::Call(error)
    }
}

impl<E: AppError> From<Error> for ServiceError<E> {
    fn from(error: Error) -> Self {
        ServiceError::from_call(error)
    }
}
