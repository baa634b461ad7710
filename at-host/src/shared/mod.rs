//! What the client and the server sides both use, below both of them:
//! nothing here imports either side.
//!
//! - `app_error`: [`HandlerError`](crate::HandlerError), [`AppError`](crate::AppError),
//!   [`ServiceError`](crate::ServiceError);
//! - `wire`: request encoding, reply -> `Result`, the datagram size;
//! - `convert`: `Value` <-> serde types (typed calls and typed functions);
//! - `error`: [`Error`](crate::Error), [`ProtocolError`](crate::ProtocolError);
//! - `value`: [`Value`](crate::Value), the one owned value type;
//! - `number`: [`Number`](crate::shared::number::Number);
//! - `keys`: [`AuthKey`](crate::AuthKey): pre-shared keys, key files;
//! - `mqtt`: [`MqttBroker`](crate::MqttBroker), topics, reconnect backoff.

pub(crate) mod app_error;
pub(crate) mod convert;
pub(crate) mod error;
pub(crate) mod keys;
pub(crate) mod mqtt;
pub(crate) mod number;
pub(crate) mod value;
pub(crate) mod wire;
