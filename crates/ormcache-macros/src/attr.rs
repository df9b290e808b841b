//! Parsing `#[cached(...)]`'s options.
//!
//! Every option is real Rust (an expression, a literal or a bare switch), and every
//! mistake is an error at the token that makes it: an unknown or duplicate option,
//! `key` together with `skip`, `none_ttl` without `cache_none = true`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitBool, LitStr, Token, bracketed, parenthesized};

mod kw {
    syn::custom_keyword!(cache);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(key_prefix);
    syn::custom_keyword!(key);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(skip_all);
    syn::custom_keyword!(tags);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(early_refresh);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(none_ttl);
}

/// The options this attribute knows, for the "unknown option" error.
const OPTIONS: &str = "`cache`, `ttl`, `key_prefix`, `key`, `skip`, `skip_all`, `tags`, \
                       `lock`, `early_refresh`, `cache_none`, `none_ttl`";

/// The default refresh-ahead fraction of a bare `early_refresh`.
const DEFAULT_EARLY_REFRESH: f64 = 0.2;

/// Which arguments stay out of the default key.
pub(crate) enum Skip {
    /// `skip_all`.
    All,
    /// `skip(a, b)`.
    Some(Vec<Ident>),
}

/// The parsed `#[cached(...)]` arguments.
pub(crate) struct Args {
    /// `cache = <expr>`.
    pub(crate) cache: Expr,
    /// `ttl = <expr>`.
    pub(crate) ttl: Option<Expr>,
    /// `key_prefix = "..."`.
    pub(crate) key_prefix: Option<LitStr>,
    /// `key = <expr>`.
    pub(crate) key: Option<Expr>,
    /// `skip(..)` / `skip_all`.
    pub(crate) skip: Option<Skip>,
    /// `tags = [..]`.
    pub(crate) tags: Vec<Expr>,
    /// `lock` / `lock = <bool>`.
    pub(crate) lock: bool,
    /// `early_refresh` / `early_refresh = <fraction>`.
    pub(crate) early_refresh: Option<Expr>,
    /// `cache_none = <bool>`, with the span of `cache_none`.
    pub(crate) cache_none: Option<(Span, bool)>,
    /// `none_ttl = <expr>`.
    pub(crate) none_ttl: Option<Expr>,
}

/// An option seen once, with where it was written.
struct Slot<T> {
    value: Option<(Span, T)>,
    name: &'static str,
}

impl<T> Slot<T> {
    fn new(name: &'static str) -> Self {
        Self { value: None, name }
    }

    /// Records the option, or an error at `span` if it was already given.
    fn set(&mut self, span: Span, value: T) -> syn::Result<()> {
        if self.value.is_some() {
            return Err(syn::Error::new(
                span,
                format!("duplicate `{}` option", self.name),
            ));
        }
        self.value = Some((span, value));
        Ok(())
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut cache = Slot::new("cache");
        let mut ttl = Slot::new("ttl");
        let mut key_prefix = Slot::new("key_prefix");
        let mut key = Slot::new("key");
        let mut skip = Slot::new("skip");
        let mut tags = Slot::new("tags");
        let mut lock = Slot::new("lock");
        let mut early_refresh = Slot::new("early_refresh");
        let mut cache_none = Slot::new("cache_none");
        let mut none_ttl = Slot::new("none_ttl");

        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::cache) {
                let kw = input.parse::<kw::cache>()?;
                input.parse::<Token![=]>()?;
                cache.set(kw.span, input.parse::<Expr>()?)?;
            } else if lookahead.peek(kw::ttl) {
                let kw = input.parse::<kw::ttl>()?;
                input.parse::<Token![=]>()?;
                ttl.set(kw.span, input.parse::<Expr>()?)?;
            } else if lookahead.peek(kw::key_prefix) {
                let kw = input.parse::<kw::key_prefix>()?;
                input.parse::<Token![=]>()?;
                key_prefix.set(kw.span, input.parse::<LitStr>()?)?;
            } else if lookahead.peek(kw::key) {
                let kw = input.parse::<kw::key>()?;
                input.parse::<Token![=]>()?;
                key.set(kw.span, input.parse::<Expr>()?)?;
            } else if lookahead.peek(kw::skip) {
                let kw = input.parse::<kw::skip>()?;
                let content;
                parenthesized!(content in input);
                // `Ident::parse_any` so that `skip(self)` reads (self is never hashed
                // anyway).
                let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                    &content,
                    Ident::parse_any,
                )?;
                let names: Vec<Ident> = names.into_iter().collect();
                for (i, name) in names.iter().enumerate() {
                    if names[..i].contains(name) {
                        return Err(syn::Error::new(
                            name.span(),
                            format!("`{name}` is skipped twice"),
                        ));
                    }
                }
                skip.set(kw.span, Skip::Some(names))
                    .map_err(|_| only_one_skip(kw.span))?;
            } else if lookahead.peek(kw::skip_all) {
                let kw = input.parse::<kw::skip_all>()?;
                skip.set(kw.span, Skip::All)
                    .map_err(|_| only_one_skip(kw.span))?;
            } else if lookahead.peek(kw::tags) {
                let kw = input.parse::<kw::tags>()?;
                input.parse::<Token![=]>()?;
                let content;
                bracketed!(content in input);
                let list = Punctuated::<Expr, Token![,]>::parse_terminated(&content)?;
                tags.set(kw.span, list.into_iter().collect::<Vec<_>>())?;
            } else if lookahead.peek(kw::lock) {
                let kw = input.parse::<kw::lock>()?;
                let on = if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    input.parse::<LitBool>()?.value
                } else {
                    true
                };
                lock.set(kw.span, on)?;
            } else if lookahead.peek(kw::early_refresh) {
                let kw = input.parse::<kw::early_refresh>()?;
                let fraction = if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    let expr = input.parse::<Expr>()?;
                    check_fraction(&expr)?;
                    expr
                } else {
                    syn::parse_quote_spanned!(kw.span=> #DEFAULT_EARLY_REFRESH)
                };
                early_refresh.set(kw.span, fraction)?;
            } else if lookahead.peek(kw::cache_none) {
                let kw = input.parse::<kw::cache_none>()?;
                input.parse::<Token![=]>()?;
                cache_none.set(kw.span, input.parse::<LitBool>()?.value)?;
            } else if lookahead.peek(kw::none_ttl) {
                let kw = input.parse::<kw::none_ttl>()?;
                input.parse::<Token![=]>()?;
                none_ttl.set(kw.span, input.parse::<Expr>()?)?;
            } else if input.peek(Ident::peek_any) {
                let unknown = input.call(Ident::parse_any)?;
                return Err(syn::Error::new(
                    unknown.span(),
                    format!("unknown option `{unknown}`; expected one of {OPTIONS}"),
                ));
            } else {
                return Err(lookahead.error());
            }

            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }

        if let (Some((span, _)), Some((key_span, _))) = (&skip.value, &key.value) {
            let mut e = syn::Error::new(
                *span,
                "`skip` and `skip_all` leave arguments out of the default key; \
                 with `key = ...` there is no default key",
            );
            e.combine(syn::Error::new(*key_span, "the explicit key is given here"));
            return Err(e);
        }
        if let Some((span, _)) = &none_ttl.value
            && !matches!(cache_none.value, Some((_, true)))
        {
            return Err(syn::Error::new(
                *span,
                "`none_ttl` needs `cache_none = true`: without it a `None` is not cached",
            ));
        }
        let Some((_, cache)) = cache.value else {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing `cache = <expr>`: which cache stores the results \
                 (any `ormcache::Cache`, e.g. `cache = CACHE` or `cache = self.cache`)",
            ));
        };

        Ok(Self {
            cache,
            ttl: ttl.value.map(|(_, v)| v),
            key_prefix: key_prefix.value.map(|(_, v)| v),
            key: key.value.map(|(_, v)| v),
            skip: skip.value.map(|(_, v)| v),
            tags: tags.value.map(|(_, v)| v).unwrap_or_default(),
            lock: lock.value.is_some_and(|(_, v)| v),
            early_refresh: early_refresh.value.map(|(_, v)| v),
            cache_none: cache_none.value,
            none_ttl: none_ttl.value.map(|(_, v)| v),
        })
    }
}

fn only_one_skip(span: Span) -> syn::Error {
    syn::Error::new(span, "expected only one `skip(...)` or `skip_all`")
}

/// A literal refresh-ahead fraction must lie in (0, 1].
fn check_fraction(expr: &Expr) -> syn::Result<()> {
    if let Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Float(f),
        ..
    }) = expr
    {
        let v: f64 = f.base10_parse()?;
        if !(v > 0.0 && v <= 1.0) {
            return Err(syn::Error::new(
                f.span(),
                "`early_refresh` is the fraction of the TTL left when a hit is \
                 refreshed: between 0 and 1 (e.g. 0.2)",
            ));
        }
    } else if let Expr::Lit(lit) = expr {
        return Err(syn::Error::new(
            lit.span(),
            "expected a fraction of the TTL between 0 and 1, e.g. `early_refresh = 0.2`",
        ));
    }
    Ok(())
}
