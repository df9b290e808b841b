//! Code generation: the rewritten function and its two companions.
//!
//! ```text
//! async fn f(args) -> R {
//!     let cache = <handle of the `cache` expression>;
//!     let key = <key for args>;            // None: the call runs uncached
//!     let options = ComputeOptions::new().ttl(..).lock(..).refresh_ahead(..).tags(..);
//!     __private::{cached, try_cached, cached_option}(&cache, key, options, move || async move { <body> }).await
//! }
//! fn f_cache_key(&args) -> Option<String> { <key for args> }
//! async fn f_invalidate(args) -> ormcache::Result<bool> { cache.delete(<key for args>) }
//! ```

use std::collections::HashSet;

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    AttrStyle, FnArg, GenericParam, Generics, Ident, ItemFn, Pat, ReturnType, Type, WherePredicate,
};

use crate::attr::{Args, Skip};

/// serde implements `Serialize` for tuples of up to 16 elements.
const MAX_HASHED_ARGS: usize = 16;

/// A named, typed argument of the function.
struct Param {
    ident: Ident,
    ty: Type,
}

/// What the function returns, which decides the `__private` entry point.
enum Returns {
    /// `T`: `cached`.
    Plain,
    /// `Result<T, E>` (any path ending in `Result`): `try_cached`.
    Result,
    /// `Option<T>` (any path ending in `Option`): `cached_option`.
    Option,
}

pub(crate) fn expand(args: &Args, item: ItemFn) -> syn::Result<TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let fn_name = &sig.ident;
    let name_str = fn_name.unraw().to_string();

    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            "`#[cached]` applies to `async fn` only: the cached value is loaded and \
             stored asynchronously",
        ));
    }

    // Arguments: a receiver (never hashed) and named, typed parameters.
    let mut receiver = false;
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => receiver = true,
            FnArg::Typed(pat_type) => match &*pat_type.pat {
                Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => params.push(Param {
                    ident: p.ident.clone(),
                    ty: (*pat_type.ty).clone(),
                }),
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "`#[cached]` needs every argument bound to a name (`name: Type`), \
                         so that it can be hashed, skipped and passed to the companions; \
                         destructure it in the body",
                    ));
                }
            },
        }
    }

    // `skip(..)` names must be parameters.
    let skipped: HashSet<String> = match &args.skip {
        None => HashSet::new(),
        Some(Skip::All) => params.iter().map(|p| p.ident.to_string()).collect(),
        Some(Skip::Some(names)) => {
            for name in names {
                let exists = if name == "self" {
                    receiver
                } else {
                    params.iter().any(|p| p.ident == *name)
                };
                if !exists {
                    return Err(syn::Error::new(
                        name.span(),
                        format!(
                            "attempting to skip `{name}`, which is not a parameter of `{name_str}`"
                        ),
                    ));
                }
            }
            names.iter().map(ToString::to_string).collect()
        }
    };

    let ret_ty: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let returns = classify(&ret_ty);

    if let Some((span, _)) = args.cache_none
        && !matches!(returns, Returns::Option)
    {
        let mut e = syn::Error::new(
            span,
            "`cache_none` applies to functions returning `Option<T>`",
        );
        e.combine(syn::Error::new_spanned(
            &ret_ty,
            format!("`{name_str}` returns this type, which is not an `Option`"),
        ));
        return Err(e);
    }

    // The arguments the key sees (by reference): all of them for `key = ..`, the
    // unskipped ones for the default key.
    let key_params: Vec<&Param> = if args.key.is_some() {
        params.iter().collect()
    } else {
        params
            .iter()
            .filter(|p| !skipped.contains(&p.ident.to_string()))
            .collect()
    };
    if args.key.is_none() && key_params.len() > MAX_HASHED_ARGS {
        return Err(syn::Error::new(
            key_params[MAX_HASHED_ARGS].ident.span(),
            format!(
                "`#[cached]` hashes at most {MAX_HASHED_ARGS} arguments; `skip` some \
                 or give `key = ...`"
            ),
        ));
    }

    let def = Span::mixed_site();
    let cache_var = Ident::new("__ormcache_cache", def);
    let key_var = Ident::new("__ormcache_key", def);
    let options_var = Ident::new("__ormcache_options", def);

    let key_code = key_code(
        args,
        &key_params,
        receiver,
        &name_str,
        sig.paren_token.span.join(),
    );
    let shadow: Vec<TokenStream> = key_params
        .iter()
        .map(|p| {
            let ident = &p.ident;
            quote!(#[allow(unused_variables)] let #ident = &#ident;)
        })
        .collect();
    let cache_handle = cache_handle(&args.cache, &cache_var);

    // Options.
    let mut options = quote!(::ormcache::__private::ComputeOptions::new());
    if let Some(ttl) = &args.ttl {
        options.extend(quote_spanned!(ttl.span()=> .ttl(::ormcache::__private::ttl(#ttl))));
    }
    if args.lock {
        options.extend(quote!(.lock(true)));
    }
    if let Some(fraction) = &args.early_refresh {
        options.extend(quote_spanned!(fraction.span()=> .refresh_ahead(#fraction)));
    }
    if !args.tags.is_empty() {
        let tags = args
            .tags
            .iter()
            .map(|t| quote_spanned!(t.span()=> ::std::string::ToString::to_string(&(#t))));
        options.extend(quote!(.tags([#(#tags),*])));
    }

    // The entry point, spanned to the first token of the return type: "not
    // serializable" / "not `Clone`" errors point there. The call and the `.await`
    // (whose obligations rustc reports at the `await` keyword) share that one span,
    // so that rustc reports each unmet bound once.
    let first = first_span(&sig.output);
    let entry = match returns {
        Returns::Plain => "cached",
        Returns::Result => "try_cached",
        Returns::Option => "cached_option",
    };
    let entry = Ident::new(entry, first);
    let mut call_args = quote!(&#cache_var, #key_var, #options_var,);
    if matches!(returns, Returns::Option) {
        let cache_none = args.cache_none.is_some_and(|(_, on)| on);
        let none_ttl = args.none_ttl.as_ref().map_or_else(
            || quote!(::std::option::Option::None),
            |t| quote_spanned!(t.span()=> ::std::option::Option::Some(::ormcache::__private::ttl(#t))),
        );
        call_args.extend(quote!(#cache_none, #none_ttl,));
    }
    call_args.extend(loader(&ret_ty, &block));
    let mut call_args = Group::new(Delimiter::Parenthesis, call_args);
    call_args.set_span(first);
    let dot = quote_spanned!(first=> .);
    let await_kw = quote_spanned!(first=> await);
    let dot_await = quote!(#dot #await_kw);
    let call = quote_spanned!(first=> ::ormcache::__private::);
    let call = quote!(#call #entry #call_args #dot_await);

    let (outer_attrs, inner_attrs): (Vec<_>, Vec<_>) = attrs
        .iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));
    let cfg_attrs: Vec<_> = outer_attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();

    let function = quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #cache_handle
            let #key_var: ::std::option::Option<::std::string::String> = { #(#shadow)* #key_code };
            let #options_var = #options;
            #call
        }
    };

    // Companions.
    let generics = &sig.generics;
    let where_clause = &generics.where_clause;
    let self_ref = receiver.then(|| quote!(&self,));
    let cfg = quote!(#(#cfg_attrs)*);
    let span = fn_name.span();

    let key_fn = format_ident!("{}_cache_key", fn_name, span = span);
    let key_fn_doc = format!(
        " The cache key under which `{name_str}` stores its result for these arguments, \
         or `None` if they do not serialize (the call then runs uncached).\n\n \
         Generated by `#[cached]`."
    );
    let key_fn_params = key_params.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote!(#ident: &#ty)
    });
    let key_generics = prune_generics(generics, key_params.iter().map(|p| &p.ty));
    let key_where = &key_generics.where_clause;

    let invalidate_fn = format_ident!("{}_invalidate", fn_name, span = span);
    let invalidate_doc = format!(
        " Removes the cached result of `{name_str}` for these arguments (the same \
         arguments as `{name_str}`: the `cache` expression may use any of them); \
         whether there was one.\n\n \
         Generated by `#[cached]`.\n\n \
         # Errors\n\n \
         As `Cache::delete` of the cache."
    );
    let all_params = params.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote!(#ident: #ty)
    });

    Ok(quote! {
        #function

        #cfg
        #[doc = #key_fn_doc]
        #[must_use]
        #[allow(unused_variables, clippy::trivially_copy_pass_by_ref, clippy::unused_self)]
        #vis fn #key_fn #key_generics (#self_ref #(#key_fn_params),*)
            -> ::std::option::Option<::std::string::String> #key_where
        {
            #key_code
        }

        #cfg
        #[doc = #invalidate_doc]
        #[allow(
            unused_variables,
            clippy::needless_pass_by_value,
            clippy::too_many_arguments,
            clippy::unused_self
        )]
        #vis async fn #invalidate_fn #generics (#self_ref #(#all_params),*)
            -> ::ormcache::Result<bool> #where_clause
        {
            #cache_handle
            let #key_var: ::std::option::Option<::std::string::String> = { #(#shadow)* #key_code };
            match #key_var {
                ::std::option::Option::Some(key) => {
                    ::ormcache::__private::Cache::delete(&#cache_var, &key).await
                }
                ::std::option::Option::None => ::std::result::Result::Ok(false),
            }
        }
    })
}

/// `Result<T, E>` / `Option<T>` / anything else, by the last path segment as
/// written.
fn classify(ty: &Type) -> Returns {
    if let Type::Path(path) = peel(ty)
        && path.qself.is_none()
        && let Some(last) = path.path.segments.last()
    {
        if last.ident == "Result" {
            return Returns::Result;
        }
        if last.ident == "Option" {
            return Returns::Option;
        }
    }
    Returns::Plain
}

/// The span of the first token of the return type (the attribute's when there is
/// none).
fn first_span(output: &ReturnType) -> Span {
    match output {
        ReturnType::Default => Span::call_site(),
        ReturnType::Type(_, ty) => ty
            .to_token_stream()
            .into_iter()
            .next()
            .map_or_else(Span::call_site, |t| t.span()),
    }
}

fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => peel(&g.elem),
        Type::Paren(p) => peel(&p.elem),
        other => other,
    }
}

/// The expression that computes the key (`Option<String>`), with the key arguments
/// in scope as references.
fn key_code(
    args: &Args,
    key_params: &[&Param],
    receiver: bool,
    name_str: &str,
    args_span: Span,
) -> TokenStream {
    let prefix = args.key_prefix.as_ref();
    if let Some(key) = &args.key {
        let key = quote_spanned!(key.span()=> (#key));
        return match prefix {
            Some(prefix) => quote! {
                ::std::option::Option::Some(::std::format!("{}:{}", #prefix, #key))
            },
            None => quote! {
                ::std::option::Option::Some(::std::string::ToString::to_string(&#key))
            },
        };
    }
    let prefix = prefix.map_or_else(
        || quote!(::std::option::Option::None),
        |p| quote!(::std::option::Option::Some(#p)),
    );
    let path = if receiver {
        quote!(&::std::format!("{}::{}", ::std::any::type_name::<Self>(), #name_str))
    } else {
        quote!(::std::concat!(::std::module_path!(), "::", #name_str))
    };
    let names = key_params.iter().map(|p| &p.ident);
    let hash = Ident::new("__ormcache_hash", Span::mixed_site());
    // Spanned to the parameter list: "not serializable" errors point there.
    let hash_call = quote_spanned!(args_span=> ::ormcache::__private::stable_hash(&(#(#names,)*)));
    quote! {
        #hash_call.map(|#hash| ::ormcache::__private::default_key(#prefix, #path, &#hash))
    }
}

/// Binds `var` to a handle (a clone) of the `cache` expression's cache. The cache is
/// reached by a method call, so that auto-deref finds the `Cache` inside a
/// `LazyLock`, an `Arc` or a reference; the clone ends the borrow at once, so the
/// expression may borrow arguments or `self` that the loader then moves.
fn cache_handle(cache: &syn::Expr, var: &Ident) -> TokenStream {
    let call = quote_spanned!(cache.span()=> (#cache).__ormcache_cache());
    quote! {
        trait __OrmcacheCache {
            fn __ormcache_cache(&self) -> &Self;
        }
        impl<C: ::ormcache::__private::Cache> __OrmcacheCache for C {
            fn __ormcache_cache(&self) -> &Self {
                self
            }
        }
        let #var = ::std::clone::Clone::clone(#call);
    }
}

/// The loader closure: the original body in an `async move` block.
fn loader(ret_ty: &Type, block: &syn::Block) -> TokenStream {
    let ret = Ident::new("__ormcache_ret", Span::mixed_site());
    // The unreachable `return` pins the async block's output type, so that `?` in
    // the body infers its error type (as tracing's `#[instrument]` does).
    quote! {
        move || async move {
            #[allow(
                unknown_lints,
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::let_with_type_underscore,
                clippy::needless_return,
                clippy::unreachable
            )]
            if false {
                let #ret: #ret_ty = loop {};
                return #ret;
            }
            #block
        }
    }
}

/// The generics of a companion that only takes `types`: type and const parameters
/// none of them mention (directly or through bounds) are dropped, so that calls
/// infer every parameter; lifetimes are kept.
fn prune_generics<'a>(generics: &Generics, types: impl Iterator<Item = &'a Type>) -> Generics {
    let declared: HashSet<String> = generics
        .params
        .iter()
        .filter_map(|p| match p {
            GenericParam::Type(t) => Some(t.ident.to_string()),
            GenericParam::Const(c) => Some(c.ident.to_string()),
            GenericParam::Lifetime(_) => None,
        })
        .collect();
    let mentioned_in = |tokens: TokenStream| -> HashSet<String> {
        let mut found = HashSet::new();
        collect_idents(tokens, &mut found);
        found.retain(|i| declared.contains(i));
        found
    };

    let mut kept: HashSet<String> = HashSet::new();
    for ty in types {
        kept.extend(mentioned_in(ty.to_token_stream()));
    }
    // Close over bounds: a kept parameter keeps what its bounds mention.
    loop {
        let before = kept.len();
        for p in &generics.params {
            if let GenericParam::Type(t) = p
                && kept.contains(&t.ident.to_string())
            {
                kept.extend(mentioned_in(t.bounds.to_token_stream()));
            }
        }
        if let Some(w) = &generics.where_clause {
            for pred in &w.predicates {
                if let WherePredicate::Type(t) = pred {
                    let bounded = mentioned_in(t.bounded_ty.to_token_stream());
                    if bounded.iter().any(|i| kept.contains(i)) {
                        kept.extend(mentioned_in(pred.to_token_stream()));
                    }
                }
            }
        }
        if kept.len() == before {
            break;
        }
    }

    let mut pruned = generics.clone();
    pruned.params = generics
        .params
        .iter()
        .filter(|p| match p {
            GenericParam::Type(t) => kept.contains(&t.ident.to_string()),
            GenericParam::Const(c) => kept.contains(&c.ident.to_string()),
            GenericParam::Lifetime(_) => true,
        })
        .cloned()
        .collect();
    if let Some(w) = &mut pruned.where_clause {
        w.predicates = w
            .predicates
            .iter()
            .filter(|pred| {
                mentioned_in(pred.to_token_stream())
                    .iter()
                    .all(|i| kept.contains(i))
            })
            .cloned()
            .collect();
    }
    pruned
}

fn collect_idents(tokens: TokenStream, out: &mut HashSet<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            TokenTree::Group(g) => collect_idents(g.stream(), out),
            TokenTree::Punct(_) | TokenTree::Literal(_) => {}
        }
    }
}
