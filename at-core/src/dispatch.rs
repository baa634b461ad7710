//! Function tables: what a server calls by name.
//!
//! A firmware declares a fixed table ([`Function`]s in a `static` array);
//! a host toolkit implements [`Functions`] over its own registry. Either way
//! [`crate::respond`] does the rest.

use crate::body::Reply;
use crate::error::{CallError, ErrorCode};
use crate::signature::Signature;
use crate::value::Value;

/// A function a server can call: arguments in, a value or an error out.
///
/// The result may borrow from the arguments (an `echo` can return its
/// argument without copying it).
pub type Handler = for<'a> fn(&[Value<'a>]) -> Result<Value<'a>, CallError>;

/// One entry of a function table: a name, its handler, and its signature
/// when known (typed functions, see [`crate::typed`]).
#[derive(Clone, Copy)]
pub struct Function {
    /// The name callers use in `func`.
    pub name: &'static str,
    /// What runs.
    pub handler: Handler,
    /// Parameter and result types and a line of doc, for `rpc.functions`
    /// (`None`: unknown, shown as `params: null`).
    pub signature: Option<&'static Signature>,
}

impl Function {
    /// A table entry without a signature.
    pub const fn new(name: &'static str, handler: Handler) -> Self {
        Function {
            name,
            handler,
            signature: None,
        }
    }
}

impl core::fmt::Debug for Function {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .finish()
    }
}

/// Something that calls functions by name.
///
/// `call` hands the outcome to `reply` rather than returning it, so an
/// implementation may build the result in storage of its own (a host's
/// `String`, say) that lives only for the call.
pub trait Functions {
    /// Calls `func` with `args` and passes the outcome to `reply`; an
    /// unknown name is the error `unknown_function`.
    fn call<R>(&self, func: &str, args: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R;

    /// How many functions there are (for `rpc.info`).
    fn count(&self) -> usize {
        0
    }

    /// Function `index` in a stable order (the same on every call), for
    /// `rpc.functions`; `None` past the end.
    fn describe(&self, index: usize) -> Option<Description<'_>> {
        let _ = index;
        None
    }
}

/// A function as `rpc.functions` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Description<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its signature, when known.
    pub signature: Option<Signature>,
}

/// A fixed table, searched in order; the first entry with the name wins.
///
/// ```
/// use at_core::{CallError, Function, Functions, Reply, Value};
/// fn answer<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> { Ok(Value::Int(42)) }
/// static TABLE: [Function; 5] = [
///     at_core::calculator::ADD, at_core::calculator::SUB,
///     at_core::calculator::MUL, at_core::calculator::DIV,
///     Function::new("answer", answer),
/// ];
/// let r = TABLE.call("answer", &[], |reply| reply == Reply::Success(Value::Int(42)));
/// assert!(r);
/// ```
impl Functions for [Function] {
    fn call<R>(&self, func: &str, args: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R {
        match self.iter().find(|f| f.name == func) {
            Some(f) => reply((f.handler)(args).into()),
            None => reply(Reply::Error(
                CallError::new(ErrorCode::UnknownFunction).into(),
            )),
        }
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn describe(&self, index: usize) -> Option<Description<'_>> {
        self.get(index).map(|f| Description {
            name: f.name,
            signature: f.signature.copied(),
        })
    }
}

impl<const N: usize> Functions for [Function; N] {
    fn call<R>(&self, func: &str, args: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R {
        self.as_slice().call(func, args, reply)
    }

    fn count(&self) -> usize {
        N
    }

    fn describe(&self, index: usize) -> Option<Description<'_>> {
        self.as_slice().describe(index)
    }
}

impl<T: Functions + ?Sized> Functions for &T {
    fn call<R>(&self, func: &str, args: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R {
        (**self).call(func, args, reply)
    }

    fn count(&self) -> usize {
        (**self).count()
    }

    fn describe(&self, index: usize) -> Option<Description<'_>> {
        (**self).describe(index)
    }
}
