//! [`Registry`]: the functions a server calls, by name.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use at_core::{ErrorBody, ErrorCode, Functions, JsonStr, Reply};

use crate::value::Value;

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

/// A host function: borrowed arguments in, an owned value or an error out.
pub type HostFunction =
    dyn Fn(&[at_core::Value<'_>]) -> Result<Value, HandlerError> + Send + Sync + 'static;

#[derive(Clone)]
enum Entry {
    /// An at-core table function: no allocation per call.
    Core(at_core::Handler),
    Host(Arc<HostFunction>),
}

/// The functions a server calls, by name: the calculator, your own, or both.
///
/// A function runs on the task serving the connection (or the UDP socket)
/// that received the call, so it should return quickly. A function that
/// panics is answered with `internal`; the server keeps serving.
///
/// ```
/// use at_host::{HandlerError, Registry, Value};
/// let mut registry = Registry::with_calculator();
/// registry.register("greet", |args| match args {
///     [at_core::Value::Str(name)] => Ok(Value::Str(format!("hello, {name}"))),
///     _ => Err(HandlerError::invalid_arguments("expected one string")),
/// });
/// assert!(registry.contains("add") && registry.contains("greet"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    functions: HashMap<Box<str>, Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry holding the calculator's `add`, `sub`, `mul` and `div`.
    pub fn with_calculator() -> Self {
        let mut registry = Registry::new();
        registry.add_calculator();
        registry
    }

    /// Adds the four calculator functions.
    pub fn add_calculator(&mut self) -> &mut Self {
        for function in &at_core::calculator::CALCULATOR {
            self.register_core(*function);
        }
        self
    }

    /// Adds (or replaces) an at-core table function.
    pub fn register_core(&mut self, function: at_core::Function) -> &mut Self {
        self.functions
            .insert(function.name.into(), Entry::Core(function.handler));
        self
    }

    /// Adds (or replaces) a function under `name`.
    pub fn register<F>(&mut self, name: &str, function: F) -> &mut Self
    where
        F: Fn(&[at_core::Value<'_>]) -> Result<Value, HandlerError> + Send + Sync + 'static,
    {
        self.functions
            .insert(name.into(), Entry::Host(Arc::new(function)));
        self
    }

    /// True when a function of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The registered names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(|k| &**k)
    }
}

impl Functions for Registry {
    fn call<R>(
        &self,
        func: &str,
        args: &[at_core::Value<'_>],
        reply: impl FnOnce(Reply<'_>) -> R,
    ) -> R {
        match self.functions.get(func) {
            None => reply(Reply::Error(ErrorBody::new(
                ErrorCode::UnknownFunction,
                "unknown function",
            ))),
            Some(Entry::Core(handler)) => reply(handler(args).into()),
            Some(Entry::Host(function)) => {
                match catch_unwind(AssertUnwindSafe(|| function(args))) {
                    Ok(Ok(value)) => reply(Reply::Success(value.as_core())),
                    Ok(Err(e)) => reply(Reply::Error(ErrorBody {
                        code: JsonStr::new(e.code.as_str()),
                        message: JsonStr::new(&e.message),
                    })),
                    Err(_) => {
                        log::error!("function {func:?} panicked");
                        reply(Reply::Error(ErrorBody::new(
                            ErrorCode::Internal,
                            "the function failed",
                        )))
                    }
                }
            }
        }
    }
}
