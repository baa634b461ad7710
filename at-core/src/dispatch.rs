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
    pub signature: Option<&'static Signature<'static>>,
}

impl Function {
    /// A table entry without a signature.
    ///
    /// # Panics
    ///
    /// If `name` starts with `rpc.`: those names belong to the protocol
    /// (contract section 7). In a `static` table that is a compile error:
    ///
    /// ```compile_fail
    /// # use at_core::{CallError, Function, Value};
    /// # fn f<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> { Ok(Value::Null) }
    /// static TABLE: [Function; 1] = [Function::new("rpc.mine", f)];
    /// ```
    pub const fn new(name: &'static str, handler: Handler) -> Self {
        refuse_reserved(name);
        Function {
            name,
            handler,
            signature: None,
        }
    }
}

/// Whether `name` is one of the protocol's own (`rpc.*`, contract section
/// 7), which a table may not define.
pub const fn is_reserved(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 4 && b[0] == b'r' && b[1] == b'p' && b[2] == b'c' && b[3] == b'.'
}

/// Panics (at compile time in a `static`) on a reserved name.
pub(crate) const fn refuse_reserved(name: &str) {
    assert!(
        !is_reserved(name),
        "rpc.* names belong to the protocol (contract section 7)"
    );
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
    pub signature: Option<Signature<'a>>,
}

/// A fixed table, searched in order; the first entry with the name wins.
/// An entry with an `rpc.*` name (only possible by filling the fields
/// directly) is never called, counted or listed: those names are answered
/// by the protocol itself.
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
        self.iter().filter(|f| !is_reserved(f.name)).count()
    }

    fn describe(&self, index: usize) -> Option<Description<'_>> {
        let mut own = self.iter().filter(|f| !is_reserved(f.name));
        own.nth(index).map(|f| Description {
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
        self.as_slice().count()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> {
        Ok(Value::Int(1))
    }

    #[test]
    fn reserved_names_are_rpc_dot_anything() {
        assert!(is_reserved("rpc.ping") && is_reserved("rpc."));
        assert!(!is_reserved("rpc") && !is_reserved("rpcx") && !is_reserved("add"));
    }

    #[test]
    fn a_table_never_counts_or_lists_an_rpc_name() {
        // Only the fields, filled directly, can make such an entry.
        let sneaky = Function {
            name: "rpc.mine",
            handler: one,
            signature: None,
        };
        let table = [Function::new("a", one), sneaky, Function::new("b", one)];
        assert_eq!(table.count(), 2);
        let names: [Option<&str>; 3] = core::array::from_fn(|i| table.describe(i).map(|d| d.name));
        assert_eq!(names, [Some("a"), Some("b"), None]);
    }

    #[test]
    #[should_panic(expected = "rpc.* names belong to the protocol")]
    fn new_refuses_an_rpc_name() {
        let _ = Function::new("rpc.mine", one);
    }
}
