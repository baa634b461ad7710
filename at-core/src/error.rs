//! The contract's error codes and the error a function returns.

use core::fmt;

/// The `code` of an error reply: what programs match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A header that cannot be a frame (wrong magic, no type bit).
    BadFrame,
    /// The body's CRC-32 differs from the header's.
    ChecksumMismatch,
    /// `length` is over the receiver's limit.
    FrameTooLarge,
    /// The body is not a valid request.
    BadRequest,
    /// No function of that name is registered.
    UnknownFunction,
    /// Wrong number or type of arguments.
    InvalidArguments,
    /// A division by zero.
    DivisionByZero,
    /// The result does not fit (integer overflow, or not a finite number).
    Overflow,
    /// The server refuses the call for lack of capacity.
    Busy,
    /// Authentication is required, or failed (contract section 9).
    Unauthorized,
    /// Anything else that went wrong on the server.
    Internal,
    /// `deadline_ms` had passed before the function was called; it was not
    /// called (contract section 10.4).
    DeadlineExceeded,
    /// The call was stopped (`rpc.cancel`, or its deadline while it ran);
    /// it may have partly run (contract section 10.4).
    Cancelled,
    /// `rpc.subscribe` names a topic the server does not have (contract
    /// section 10.3).
    UnknownTopic,
}

impl ErrorCode {
    /// Every code, in the contract's order (section 3, then section 10's).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadFrame,
        ErrorCode::ChecksumMismatch,
        ErrorCode::FrameTooLarge,
        ErrorCode::BadRequest,
        ErrorCode::UnknownFunction,
        ErrorCode::InvalidArguments,
        ErrorCode::DivisionByZero,
        ErrorCode::Overflow,
        ErrorCode::Busy,
        ErrorCode::Unauthorized,
        ErrorCode::Internal,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Cancelled,
        ErrorCode::UnknownTopic,
    ];

    /// The code as it travels: `"division_by_zero"`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownFunction => "unknown_function",
            ErrorCode::InvalidArguments => "invalid_arguments",
            ErrorCode::DivisionByZero => "division_by_zero",
            ErrorCode::Overflow => "overflow",
            ErrorCode::Busy => "busy",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::UnknownTopic => "unknown_topic",
        }
    }

    /// The code named `name`, if the contract has one.
    ///
    /// ```
    /// use at_core::ErrorCode;
    /// assert_eq!(ErrorCode::from_name("overflow"), Some(ErrorCode::Overflow));
    /// assert_eq!(ErrorCode::from_name("nope"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The message this project sends with the code when it has nothing
    /// more specific to say.
    pub const fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad frame",
            ErrorCode::ChecksumMismatch => "checksum mismatch",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownFunction => "unknown function",
            ErrorCode::InvalidArguments => "invalid arguments",
            ErrorCode::DivisionByZero => "division by zero",
            ErrorCode::Overflow => "overflow",
            ErrorCode::Busy => "server busy",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal error",
            ErrorCode::DeadlineExceeded => "deadline exceeded",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::UnknownTopic => "unknown topic",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a function call failed: a code and a message for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallError {
    /// What programs match on.
    pub code: ErrorCode,
    /// What people read.
    pub message: &'static str,
}

impl CallError {
    /// An error with the code's default message.
    pub const fn new(code: ErrorCode) -> Self {
        CallError {
            code,
            message: code.default_message(),
        }
    }

    /// An error with a message of the caller's.
    pub const fn with_message(code: ErrorCode, message: &'static str) -> Self {
        CallError { code, message }
    }
}

impl From<ErrorCode> for CallError {
    fn from(code: ErrorCode) -> Self {
        CallError::new(code)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl core::error::Error for CallError {}

/// What is wrong with a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body is not UTF-8.
    NotUtf8,
    /// The body is not JSON: the first bad byte is at `offset`.
    Syntax {
        /// Byte offset of the error in the body.
        offset: usize,
    },
    /// Arrays and objects nest deeper than [`crate::json::MAX_DEPTH`].
    TooDeep,
    /// The body is JSON but not an object.
    NotAnObject,
    /// A required member is missing.
    Missing {
        /// The member's name.
        member: &'static str,
    },
    /// A member has the wrong JSON type (or a value the contract does not
    /// allow, such as a `status` other than `success` or `error`).
    WrongType {
        /// The member's name.
        member: &'static str,
    },
    /// A member appears twice.
    Duplicate {
        /// The member's name.
        member: &'static str,
    },
    /// More than [`MAX_ARGS`](crate::MAX_ARGS) arguments.
    TooManyArgs,
    /// An integer literal outside i64.
    IntegerOverflow,
    /// A number with a fraction or exponent, read by a build of at-core
    /// without the `float` feature (an integers-only device). Never
    /// returned when `float` is on (the default).
    FloatUnsupported,
}

impl BodyError {
    /// The error code a server answers this with: `overflow` for an integer
    /// outside i64, `invalid_arguments` for too many arguments (or a double
    /// in an integers-only build), otherwise `bad_request`.
    pub fn code(&self) -> ErrorCode {
        match self {
            BodyError::IntegerOverflow => ErrorCode::Overflow,
            BodyError::TooManyArgs | BodyError::FloatUnsupported => ErrorCode::InvalidArguments,
            _ => ErrorCode::BadRequest,
        }
    }

    /// A short message for the error reply.
    pub fn message(&self) -> &'static str {
        match self {
            BodyError::NotUtf8 => "body is not UTF-8",
            BodyError::Syntax { .. } => "body is not valid JSON",
            BodyError::TooDeep => "JSON nested too deeply",
            BodyError::NotAnObject => "body is not a JSON object",
            BodyError::Missing { member: "func" } => "missing \"func\"",
            BodyError::Missing { member: "args" } => "missing \"args\"",
            BodyError::Missing { .. } => "a required member is missing",
            BodyError::WrongType { member: "func" } => "\"func\" must be a string",
            BodyError::WrongType {
                member: "deadline_ms",
            } => "\"deadline_ms\" must be an integer from 0 to 4294967295",
            BodyError::WrongType { member: "args" } => "\"args\" must be an array",
            BodyError::WrongType { .. } => "a member has the wrong type",
            BodyError::Duplicate { .. } => "a member appears twice",
            BodyError::TooManyArgs => "too many arguments",
            BodyError::IntegerOverflow => "integer argument outside 64-bit range",
            BodyError::FloatUnsupported => "this server takes integers only",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Syntax { offset } => write!(f, "body is not valid JSON (at byte {offset})"),
            BodyError::Missing { member } => write!(f, "missing member \"{member}\""),
            BodyError::WrongType { member } => write!(f, "member \"{member}\" has the wrong type"),
            BodyError::Duplicate { member } => write!(f, "member \"{member}\" appears twice"),
            other => f.write_str(other.message()),
        }
    }
}
