//! [`Errors`]: every mistake in a trait, collected with its span, so the
//! user sees all of them in one go.

use proc_macro2::Span;

/// Collects errors so the user sees all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records `message` about the code at `span`.
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let err = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    /// How many errors are recorded.
    pub(crate) fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |err| err.clone().into_iter().count())
    }

    /// `Ok(value)` if nothing was recorded, every error otherwise.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, syn::Error> {
        match self.0 {
            Some(err) => Err(err),
            None => Ok(value),
        }
    }
}
