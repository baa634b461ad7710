//! `#[service]`: a service defined once, as a trait, gives its typed client
//! and its server registration. Use it through `at_host::service` (this
//! crate is an implementation detail of at-host; see its docs for the
//! example).
//!
//! For `trait Calculator` the attribute emits:
//! - the trait, each `async fn m(&self, a: A) -> R` turned into
//!   `fn m(&self, a: A) -> impl Future<Output = R> + Send` (implement it
//!   with `async fn` as written);
//! - `CalculatorClient<C = at_host::Client>`: one async method per function
//!   over any `at_host::Caller` (the TCP or UDP client), returning
//!   `Result<T, at_host::Error>` where the trait returns `T` or
//!   `Result<T, HandlerError>`;
//! - `CalculatorServer<S>(pub S)`: an `at_host::Service` that registers
//!   every function of an implementation, with its parameter types and the
//!   first paragraph of its doc comment (for `rpc.functions`).
//!
//! A function's wire name is its Rust name, or `#[at(name = "...")]`;
//! names beginning with `rpc.` belong to the protocol and are refused at
//! compile time.
//!
//! A service declares a topic (contract 10.3) with a plain method marked
//! `#[at(topic)]` (or `#[at(topic = "wire/name")]`) that returns the
//! implementation's `at_host::Topic` handle: `fn temperature(&self) ->
//! at_host::Topic;`. For it the attribute also emits `CalculatorTopics`
//! with `fn temperature() -> at_host::Topic` (the right name, the doc
//! comment's first paragraph as its doc) for the implementation to keep
//! and publish to, a registration that serves the topic with the
//! functions (a handle of another name is `RegistryError::TopicName`), and
//! a client method `temperature::<T>()` that subscribes (over any
//! `at_host::Subscribe`: the TCP or UDP client).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments,
    ReturnType, TraitItem, TraitItemFn, Type, parse_macro_input,
};

/// Generates a typed client and a server registration from a trait of
/// `async fn`s. See the crate docs.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return Error::new(Span::call_site(), "#[service] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemTrait);
    match expand(item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// One topic of the service: `#[at(topic)] fn name(&self) -> Topic;`.
struct TopicItem {
    method: Ident,
    wire_name: String,
    doc: String,
    docs: Vec<Attribute>,
    /// The method as written (for the `Arc<S>` impl).
    sig: syn::Signature,
}

/// One function of the service.
struct Function {
    method: Ident,
    wire_name: String,
    doc: String,
    docs: Vec<Attribute>,
    params: Vec<(Ident, Type)>,
    /// The trait's return type, as written.
    output: Type,
    /// What the client gives back on success.
    ok: Type,
    /// The error type of a `Result<T, E>` return whose `E` is not
    /// `HandlerError`: the client maps error replies back to it.
    app_error: Option<Type>,
    /// The rewritten signature (for the `Arc<S>` impl).
    sig: syn::Signature,
}

/// A parameter as the server receives it: `&T` arrives as `T`'s owned form
/// (`&str` as `String`), lent to the implementation.
fn owned(ty: &Type) -> TokenStream2 {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => {
            let inner = &r.elem;
            quote_spanned!(ty.span()=> <#inner as ::std::borrow::ToOwned>::Owned)
        }
        other => quote!(#other),
    }
}

/// How the server passes a received parameter on.
fn lent(name: &Ident, ty: &Type) -> TokenStream2 {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => {
            quote!(::std::borrow::Borrow::borrow(&#name))
        }
        _ => quote!(#name),
    }
}

fn expand(mut item: ItemTrait) -> syn::Result<TokenStream2> {
    if !item.generics.params.is_empty() {
        return Err(Error::new(
            item.generics.span(),
            "a service trait cannot be generic",
        ));
    }
    let mut functions = Vec::new();
    let mut topics = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            return Err(Error::new(
                trait_item.span(),
                "a service trait holds only `async fn`s and `#[at(topic)]` methods",
            ));
        };
        match topic_item(f)? {
            Some(topic) => topics.push(topic),
            None => functions.push(function(f)?),
        }
    }
    let vis = &item.vis;
    let name = &item.ident;
    let client = format_ident!("{}Client", name);
    let server = format_ident!("{}Server", name);

    let client_methods = functions.iter().map(|f| {
        let Function {
            method,
            wire_name,
            docs,
            params,
            ok,
            app_error,
            ..
        } = f;
        let names: Vec<_> = params.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = params.iter().map(|(_, t)| t).collect();
        let call = quote! {
            ::at_host::Caller::call_as::<#ok>(&self.caller, #wire_name, (#(#names,)*)).await
        };
        match app_error {
            None => quote! {
                #(#docs)*
                pub async fn #method(&self, #(#names: #types),*)
                    -> ::core::result::Result<#ok, ::at_host::Error>
                {
                    #call
                }
            },
            Some(e) => quote! {
                #(#docs)*
                pub async fn #method(&self, #(#names: #types),*)
                    -> ::core::result::Result<#ok, ::at_host::ServiceError<#e>>
                {
                    #call.map_err(::at_host::ServiceError::from_call)
                }
            },
        }
    });

    // Each parameter and result type checked where it is written, so that a
    // type that cannot travel is reported at that type.
    let checks = functions.iter().map(|f| {
        let params = f.params.iter().map(|(_, ty)| {
            let owned = owned(ty);
            quote_spanned! {ty.span()=> __param::<#owned>(); __client_param::<#ty>(); }
        });
        let output = &f.output;
        let ok = &f.ok;
        let result =
            quote_spanned! {output.span()=> __result::<_, #output>(); __client_result::<#ok>(); };
        quote! { #(#params)* #result }
    });
    let arc_methods = functions.iter().map(|f| {
        let sig = &f.sig;
        let method = &f.method;
        let names = f.params.iter().map(|(n, _)| n);
        quote! { #sig { S::#method(self, #(#names),*) } }
    });
    let arc_topics = topics.iter().map(|t| {
        let sig = &t.sig;
        let method = &t.method;
        quote! { #sig { S::#method(self) } }
    });
    let topic_registrations = topics.iter().map(|t| {
        let method = &t.method;
        let wire_name = &t.wire_name;
        quote! { registry.topic(#wire_name, &service.#method())?; }
    });
    let topic_makers = topics.iter().map(|t| {
        let TopicItem {
            method,
            wire_name,
            doc,
            docs,
            ..
        } = t;
        quote! {
            #(#docs)*
            pub fn #method() -> ::at_host::Topic {
                // The name was checked when the service was compiled.
                ::at_host::Topic::new(#wire_name, #doc)
                    .unwrap_or_else(|_| ::core::unreachable!("#[service] checked topic names"))
            }
        }
    });
    let topic_client_methods = topics.iter().map(|t| {
        let method = &t.method;
        let wire_name = &t.wire_name;
        let docs = &t.docs;
        quote! {
            #(#docs)*
            ///
            /// Subscribes to this topic (contract 10.3): events of `T`, gaps
            /// reported, the lease renewed by itself, unsubscribed on drop.
            pub async fn #method<T: ::at_host::__private::DeserializeOwned + ::core::marker::Send>(
                &self,
            ) -> ::core::result::Result<::at_host::Subscription<'_, T>, ::at_host::Error> {
                ::at_host::Subscribe::subscribe::<T>(&self.caller, #wire_name).await
            }
        }
    });
    let topics_struct = format_ident!("{}Topics", name);
    let topics_doc = format!(
        "The topics of [`{name}`], made with the names and docs the service \
         declares: keep each and return it from its method."
    );
    let topics_items = if topics.is_empty() {
        quote! {}
    } else {
        quote! {
            #[doc = #topics_doc]
            #vis struct #topics_struct;

            impl #topics_struct {
                #(#topic_makers)*
            }

            impl<C: ::at_host::Subscribe> #client<C> {
                #(#topic_client_methods)*
            }
        }
    };

    let registrations = functions.iter().map(|f| {
        let Function {
            method,
            wire_name,
            doc,
            params,
            ..
        } = f;
        let names: Vec<_> = params.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = params.iter().map(|(_, t)| owned(t)).collect();
        let passed: Vec<_> = params.iter().map(|(n, t)| lent(n, t)).collect();
        quote! {
            {
                let service = ::std::sync::Arc::clone(&service);
                registry.async_function(#wire_name, #doc, move |#(#names: #types),*| {
                    let service = ::std::sync::Arc::clone(&service);
                    async move { service.#method(#(#passed),*).await }
                })?;
            }
        }
    });

    let client_doc = format!(
        "The typed client of [`{name}`]: one async method per function, on \
         `&self` (calls from several tasks go out pipelined), over any \
         [`at_host::Caller`] (`at_host::Client` for TCP, \
         `at_host::UdpClient` for UDP)."
    );
    let server_doc = format!(
        "Serves an implementation of [`{name}`]: \
         `Server::builder().service({server}(implementation))`."
    );
    let checks_fn = format_ident!("__at_host_check_{}", name);
    Ok(quote! {
        #item

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code)]
        fn #checks_fn() {
            fn __param<T: ::at_host::Param>() {}
            fn __result<K, R: ::at_host::Returns<K>>() {}
            fn __client_result<T: ::at_host::__private::DeserializeOwned>() {}
            fn __client_param<T: ::at_host::__private::Serialize + ?::core::marker::Sized>() {}
            #(#checks)*
        }

        /// An implementation shared behind an `Arc` is an implementation.
        impl<S: #name + ::core::marker::Send + ::core::marker::Sync> #name for ::std::sync::Arc<S> {
            #(#arc_methods)*
            #(#arc_topics)*
        }

        #[doc = #client_doc]
        #vis struct #client<C = ::at_host::Client> {
            caller: C,
        }

        impl<C: ::at_host::Caller> #client<C> {
            /// A client calling through `caller`.
            pub fn new(caller: C) -> Self {
                Self { caller }
            }

            /// The caller, for calls outside the service.
            pub fn caller(&self) -> &C {
                &self.caller
            }

            /// The caller back.
            pub fn into_inner(self) -> C {
                self.caller
            }

            #(#client_methods)*
        }

        #[doc = #server_doc]
        #vis struct #server<S>(pub S);

        impl<S: #name + ::core::marker::Send + ::core::marker::Sync + 'static> ::at_host::Service for #server<S> {
            fn register(self, registry: &mut ::at_host::Registry) -> ::core::result::Result<(), ::at_host::RegistryError> {
                let service = ::std::sync::Arc::new(self.0);
                #(#registrations)*
                #(#topic_registrations)*
                let _ = service;
                ::core::result::Result::Ok(())
            }
        }

        #topics_items
    })
}

/// Whether `name` is a topic name the contract allows: 1 to 64 ASCII
/// letters, digits, `-`, `_`, `.` or `/`, not `rpc.*`.
fn valid_topic(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with("rpc.")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// A method marked `#[at(topic)]` (the mark taken off), or `None` for a
/// function.
fn topic_item(f: &mut TraitItemFn) -> syn::Result<Option<TopicItem>> {
    let mut wire_name = None;
    let mut rest = Vec::new();
    for attr in f.attrs.drain(..) {
        let mut is_topic = false;
        if attr.path().is_ident("at") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("topic") {
                    is_topic = true;
                    if meta.input.peek(syn::Token![=]) {
                        let name: LitStr = meta.value()?.parse()?;
                        wire_name = Some((name.value(), name.span()));
                    }
                }
                // Other `at(...)` keys are the function's (`name`).
                else if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                }
                Ok(())
            })?;
        }
        if is_topic {
            wire_name.get_or_insert((f.sig.ident.to_string(), f.sig.ident.span()));
        } else {
            rest.push(attr);
        }
    }
    f.attrs = rest;
    let Some((wire_name, span)) = wire_name else {
        return Ok(None);
    };
    let sig = &f.sig;
    let plain = sig.asyncness.is_none()
        && sig.generics.params.is_empty()
        && sig.inputs.len() == 1
        && matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none())
        && matches!(&sig.output, ReturnType::Type(..))
        && f.default.is_none();
    if !plain {
        return Err(Error::new(
            sig.span(),
            "a topic is `#[at(topic)] fn name(&self) -> at_host::Topic;` (not async, no default body)",
        ));
    }
    if !valid_topic(&wire_name) {
        return Err(Error::new(
            span,
            "a topic is 1 to 64 of A-Z a-z 0-9 - _ . / and not rpc.* (contract 10.3)",
        ));
    }
    let docs: Vec<Attribute> = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Some(TopicItem {
        method: sig.ident.clone(),
        doc: first_doc_paragraph(&docs),
        docs,
        wire_name,
        sig: sig.clone(),
    }))
}

/// Reads one trait function and rewrites it to return a `Send` future.
fn function(f: &mut TraitItemFn) -> syn::Result<Function> {
    let sig = &mut f.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            "service functions are `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "service functions cannot be generic",
        ));
    }
    if f.default.is_some() {
        return Err(Error::new(
            sig.ident.span(),
            "service functions have no default body",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => {
            return Err(Error::new(
                sig.inputs.span(),
                "service functions take `&self` first",
            ));
        }
    }
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(typed) = input else {
            return Err(Error::new(input.span(), "unexpected `self`"));
        };
        let Pat::Ident(pat) = &*typed.pat else {
            return Err(Error::new(
                typed.pat.span(),
                "service parameters are plain names (`a: i64`)",
            ));
        };
        params.push((pat.ident.clone(), (*typed.ty).clone()));
    }
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let (ok, app_error) = match result_parts(&output) {
        Some((ok, error)) => {
            let is_handler_error = matches!(&error, Type::Path(p)
                if p.path.segments.last().is_some_and(|s| s.ident == "HandlerError"));
            (ok, (!is_handler_error).then_some(error))
        }
        None => (output.clone(), None),
    };

    // `#[at(name = "...")]`, taken off the method.
    let mut wire_name = sig.ident.to_string();
    let mut kept = Vec::new();
    for attr in f.attrs.drain(..) {
        if attr.path().is_ident("at") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let name: LitStr = meta.value()?.parse()?;
                    wire_name = name.value();
                    if wire_name.starts_with("rpc.") {
                        return Err(Error::new(
                            name.span(),
                            "names beginning with `rpc.` belong to the protocol (contract section 7)",
                        ));
                    }
                    Ok(())
                } else {
                    Err(meta.error("expected `name = \"...\"`"))
                }
            })?;
        } else {
            kept.push(attr);
        }
    }
    f.attrs = kept;
    let docs: Vec<Attribute> = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    let doc = first_doc_paragraph(&docs);

    sig.asyncness = None;
    sig.output = syn::parse_quote!(
        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    );
    Ok(Function {
        method: sig.ident.clone(),
        wire_name,
        doc,
        docs,
        params,
        output,
        ok,
        app_error,
        sig: sig.clone(),
    })
}

/// `T` and `E` of a `Result<T, E>` return type.
fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    Some((types.next()?, types.next()?))
}

/// The doc comment's first paragraph (up to the first blank line), its
/// lines trimmed and joined by spaces.
fn first_doc_paragraph(docs: &[Attribute]) -> String {
    let lines: Vec<String> = docs
        .iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        // An empty `///` line is an empty string: no `lines()` at all.
        .flat_map(|text| {
            let lines: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
            if lines.is_empty() {
                vec![String::new()]
            } else {
                lines
            }
        })
        .collect();
    let paragraph: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    paragraph.join(" ")
}
