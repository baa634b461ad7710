//! [`Registry`]: the functions a server calls, by name.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use at_core::{ErrorBody, ErrorCode, Functions, JsonStr, Reply, Signature};

use super::typed::{Arity, AsyncFunction, OwnedSignature, Params, Pending, TypedFunction};
use crate::shared::app_error::HandlerError;
use crate::shared::value::Value;

/// An untyped host function: the arguments as owned [`Value`]s in, a value
/// or an error out (for dynamic use; typed functions check their own).
pub type HostFunction = dyn Fn(&[Value]) -> Result<Value, HandlerError> + Send + Sync + 'static;

/// Why a function cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Names that begin with `rpc.` belong to the protocol (contract
    /// section 7).
    #[error(
        "function name {0:?} is reserved: names beginning with \"rpc.\" belong to the protocol"
    )]
    Reserved(String),
    /// An empty name.
    #[error("a function name cannot be empty")]
    Empty,
    /// A service's topic method returned a topic of another name than the
    /// one it declares (`#[at(topic)]`).
    #[error("the service declares topic {expected:?} but its method returned {got:?}")]
    TopicName {
        /// The name the service declares.
        expected: String,
        /// The returned topic's name.
        got: String,
    },
}

/// A sync host function over the call's borrowed arguments.
type SyncFn = dyn Fn(&[at_core::Value<'_>]) -> Result<Value, HandlerError> + Send + Sync;

/// An async host function: arguments checked at once, the outcome later.
type AsyncFn = dyn Fn(&[at_core::Value<'_>]) -> Result<Pending, HandlerError> + Send + Sync;

#[derive(Clone)]
enum Call {
    /// An at-core table function: no allocation per call.
    Core(at_core::Handler),
    /// A sync host function over the borrowed arguments.
    Sync(Arc<SyncFn>),
    /// An async function: arguments checked at once, the outcome later.
    Async(Arc<AsyncFn>),
}

#[derive(Clone)]
struct Entry {
    call: Call,
    signature: Option<OwnedSignature>,
}

/// The functions a server calls, by name: the calculator, your own, or both.
///
/// Functions are typed ([`function`](Self::function), [`async_function`](Self::async_function):
/// Rust parameter and result types, arguments checked by the registry),
/// untyped ([`register`](Self::register): owned [`Value`]s), or at-core
/// table entries ([`register_core`](Self::register_core)). A sync function
/// runs on the task serving the connection (or the UDP socket) that
/// received the call, so it should return quickly; an `async` one may
/// await I/O without holding up other connections. A function that panics
/// is answered with `internal`; the server keeps serving.
///
/// ```
/// use at_host::{HandlerError, Registry};
/// let mut registry = Registry::with_calculator();
/// registry.function("greet", |name: String| format!("hello, {name}"))?;
/// registry.function("checked_add", |a: i64, b: i64| {
///     a.checked_add(b).ok_or(HandlerError::new(at_core::ErrorCode::Overflow, "too big"))
/// })?;
/// assert!(registry.contains("add") && registry.contains("greet"));
/// assert!(registry.function("rpc.mine", || ()).is_err());
/// # Ok::<(), at_host::RegistryError>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    /// By name; hashed with `foldhash` (the table is the server's own, so a
    /// peer's names can only be looked up, never crowd it).
    functions: std::collections::HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    /// Names in registration order (`rpc.functions` lists them so).
    order: Vec<Box<str>>,
    has_async: bool,
    /// Topics services declared (served with the functions).
    topics: Vec<super::Topic>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Serves `topic`, which a service declares as `name` (what
    /// `#[at_host::service]` registrations call); another name is
    /// [`RegistryError::TopicName`].
    ///
    /// ```
    /// let mut registry = at_host::Registry::new();
    /// let temp = at_host::Topic::new("temp", "degrees C").unwrap();
    /// assert!(registry.topic("temp", &temp).is_ok());
    /// assert!(registry.topic("pressure", &temp).is_err());
    /// ```
    pub fn topic(&mut self, name: &str, topic: &super::Topic) -> Result<&mut Self, RegistryError> {
        if topic.name() != name {
            return Err(RegistryError::TopicName {
                expected: name.to_owned(),
                got: topic.name().to_owned(),
            });
        }
        if !self.topics.iter().any(|t| t.name() == name) {
            self.topics.push(topic.clone());
        }
        Ok(self)
    }

    /// The topics registered so far, handed over (the server builder serves
    /// them).
    pub(crate) fn take_topics(&mut self) -> Vec<super::Topic> {
        std::mem::take(&mut self.topics)
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
            self.insert_core(function);
        }
        self
    }

    fn insert_core(&mut self, function: &at_core::Function) {
        let signature = function.signature.map(OwnedSignature::from_core);
        self.insert(function.name, Call::Core(function.handler), signature);
    }

    /// Adds every function of `other` (a name in both takes `other`'s),
    /// in `other`'s order after this registry's own, and its topics.
    pub fn extend(&mut self, other: Registry) -> &mut Self {
        let Registry {
            mut functions,
            order,
            has_async,
            topics,
        } = other;
        for name in order {
            if let Some(entry) = functions.remove(&name) {
                self.insert(&name, entry.call, entry.signature);
            }
        }
        self.has_async |= has_async;
        for topic in topics {
            if !self.topics.iter().any(|t| t.name() == topic.name()) {
                self.topics.push(topic);
            }
        }
        self
    }

    /// Adds (or replaces) an at-core table function, with its signature.
    pub fn register_core(
        &mut self,
        function: at_core::Function,
    ) -> Result<&mut Self, RegistryError> {
        check_name(function.name)?;
        self.insert_core(&function);
        Ok(self)
    }

    /// Adds (or replaces) a typed function under `name`: any `Fn(A, B, ...)
    /// -> R` of [`Param`](crate::Param) types and a [`Returns`](crate::Returns)
    /// type (see [`TypedFunction`]). Count and types of the arguments are
    /// checked before it runs.
    pub fn function<Args: Params, K, F: TypedFunction<Args, K>>(
        &mut self,
        name: &str,
        function: F,
    ) -> Result<&mut Self, RegistryError> {
        self.function_with_doc(name, "", function)
    }

    /// [`function`](Self::function), with a doc for `rpc.functions` (its
    /// first paragraph, see [`first_paragraph`]).
    pub fn function_with_doc<Args: Params, K, F: TypedFunction<Args, K>>(
        &mut self,
        name: &str,
        doc: &str,
        function: F,
    ) -> Result<&mut Self, RegistryError> {
        check_name(name)?;
        let shapes = Args::shapes();
        let arity = Arity::of(&shapes);
        let signature = OwnedSignature::new(&shapes, F::result_type(), &first_paragraph(doc));
        let call = Call::Sync(Arc::new(move |args: &[at_core::Value<'_>]| {
            arity.check(args.len())?;
            function.call_typed(args)
        }));
        self.insert(name, call, Some(signature));
        Ok(self)
    }

    /// Adds (or replaces) a typed `async` function under `name` (see
    /// [`AsyncFunction`]), with a doc for `rpc.functions`: its arguments are
    /// checked at once, then it runs without holding up the server's other
    /// connections.
    pub fn async_function<Args: Params, K, F: AsyncFunction<Args, K>>(
        &mut self,
        name: &str,
        doc: &str,
        function: F,
    ) -> Result<&mut Self, RegistryError> {
        check_name(name)?;
        let shapes = Args::shapes();
        let arity = Arity::of(&shapes);
        let signature = OwnedSignature::new(&shapes, F::result_type(), &first_paragraph(doc));
        let call = Call::Async(Arc::new(move |args: &[at_core::Value<'_>]| {
            arity.check(args.len())?;
            function.start(args)
        }));
        self.insert(name, call, Some(signature));
        self.has_async = true;
        Ok(self)
    }

    /// Adds (or replaces) an untyped function under `name`: it gets the
    /// arguments as owned [`Value`]s and checks them itself; its signature
    /// is unknown (`rpc.functions` shows `params: null`).
    pub fn register<F>(&mut self, name: &str, function: F) -> Result<&mut Self, RegistryError>
    where
        F: Fn(&[Value]) -> Result<Value, HandlerError> + Send + Sync + 'static,
    {
        check_name(name)?;
        let call = Call::Sync(Arc::new(move |args: &[at_core::Value<'_>]| {
            let owned: Vec<Value> = args.iter().map(|v| Value::from(*v)).collect();
            function(&owned)
        }));
        self.insert(name, call, None);
        Ok(self)
    }

    fn insert(&mut self, name: &str, call: Call, signature: Option<OwnedSignature>) {
        if self
            .functions
            .insert(name.into(), Entry { call, signature })
            .is_none()
        {
            self.order.push(name.into());
        }
    }

    /// True when a function of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|k| &**k)
    }

    /// The signature of `name`, when it is known (typed and at-core
    /// functions).
    pub fn signature(&self, name: &str) -> Option<Signature<'_>> {
        self.functions
            .get(name)
            .and_then(|e| e.signature.as_ref())
            .map(OwnedSignature::as_core)
    }

    /// Whether `body` calls an async function.
    pub(crate) fn calls_async(&self, body: &[u8]) -> bool {
        self.has_async
            && at_core::Request::parse(body).is_ok_and(|r| {
                let name = r.func.to_string();
                matches!(
                    self.functions.get(name.as_str()).map(|e| &e.call),
                    Some(Call::Async(_))
                )
            })
    }

    /// For a request body that calls an async function: its outcome,
    /// started (or the argument error). `None` for anything else, which
    /// [`at_core::respond_body`] answers.
    pub(crate) fn start_async(&self, body: &[u8]) -> Option<Result<Pending, HandlerError>> {
        if !self.has_async {
            return None;
        }
        let request = at_core::Request::parse(body).ok()?;
        let name = request.func.to_string();
        match &self.functions.get(name.as_str())?.call {
            Call::Async(start) => Some(start(&request.args)),
            _ => None,
        }
    }
}

/// What `rpc.functions` shows of a doc: its first paragraph (up to the
/// first blank line), its lines joined by single spaces.
///
/// ```
/// let doc = "Reads the sensor\nand converts it.\n\nMore detail.";
/// assert_eq!(at_host::first_paragraph(doc), "Reads the sensor and converts it.");
/// ```
pub fn first_paragraph(doc: &str) -> String {
    let mut words = Vec::new();
    for line in doc.lines().map(str::trim).skip_while(|l| l.is_empty()) {
        if line.is_empty() {
            break;
        }
        words.push(line);
    }
    words.join(" ")
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() {
        Err(RegistryError::Empty)
    } else if name.starts_with("rpc.") {
        Err(RegistryError::Reserved(name.to_owned()))
    } else {
        Ok(())
    }
}

/// The reply for a function's outcome.
pub(crate) fn reply_of(outcome: &Result<Value, HandlerError>) -> Reply<'_> {
    match outcome {
        Ok(value) => Reply::Success(value.as_core()),
        Err(e) => Reply::Error(ErrorBody {
            code: JsonStr::new(e.code.as_str()),
            message: JsonStr::new(&e.message),
        }),
    }
}

impl Functions for Registry {
    fn count(&self) -> usize {
        self.order.len()
    }

    fn describe(&self, index: usize) -> Option<at_core::Description<'_>> {
        let name = self.order.get(index)?;
        Some(at_core::Description {
            name,
            signature: self.signature(name),
        })
    }

    fn call<R>(
        &self,
        func: &str,
        args: &[at_core::Value<'_>],
        reply: impl FnOnce(Reply<'_>) -> R,
    ) -> R {
        match self.functions.get(func).map(|e| &e.call) {
            None => reply(Reply::Error(ErrorBody::new(
                ErrorCode::UnknownFunction,
                "unknown function",
            ))),
            Some(Call::Core(handler)) => reply(handler(args).into()),
            Some(Call::Sync(function)) => match catch_unwind(AssertUnwindSafe(|| function(args))) {
                Ok(outcome) => reply(reply_of(&outcome)),
                Err(_) => {
                    log::error!("function {func:?} panicked");
                    reply(Reply::Error(ErrorBody::new(
                        ErrorCode::Internal,
                        "the function failed",
                    )))
                }
            },
            // Only reached for a request whose name the async path could
            // not see (never, as both read the same body).
            Some(Call::Async(_)) => reply(Reply::Error(ErrorBody::new(
                ErrorCode::Internal,
                "async function called from a sync path",
            ))),
        }
    }
}

/// Something that registers its functions in a [`Registry`](crate::Registry):
/// what [`ServerBuilder::service`](crate::ServerBuilder::service) takes;
/// `#[service]` implements it for `TraitServer<S>`.
pub trait Service {
    /// Registers every function.
    fn register(self, registry: &mut Registry) -> Result<(), RegistryError>;
}
