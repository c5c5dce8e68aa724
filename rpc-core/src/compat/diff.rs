//! Where two forms of one method differ, in words: for the error an old
//! client gets, and for the breaking-change check.

use super::form::{Field, Form, MethodForm, Variant, VariantForm};

/// What the two sides compared are called in the sentences.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sides {
    pub(crate) ours: &'static str,
    pub(crate) theirs: &'static str,
}

/// A client's form against a server's.
pub(crate) const CLIENT_SERVER: Sides = Sides {
    ours: "the client",
    theirs: "the server",
};

/// A descriptor checked in before against the one built now.
pub(crate) const OLD_NEW: Sides = Sides {
    ours: "the old version",
    theirs: "the new version",
};

/// Every difference between `ours` and `theirs`, each a sentence naming
/// where it is; empty when they are the same shape. At most `limit`.
pub(crate) fn differences(ours: &MethodForm, theirs: &MethodForm, sides: Sides, limit: usize) -> Vec<String> {
    let mut diff = Diff {
        sides,
        place: Vec::new(),
        found: Vec::new(),
        limit,
    };
    diff.args(&ours.args, &theirs.args);
    match (&ours.input, &theirs.input) {
        (Some(a), Some(b)) => diff.within("the item of the stream the client sends".to_owned(), |diff| {
            diff.form(a, b)
        }),
        (None, None) => {}
        (a, _) => {
            let (takes, not) = match a.is_some() {
                true => (sides.ours, sides.theirs),
                false => (sides.theirs, sides.ours),
            };
            diff.say(format!("{takes} takes a stream from the client, {not} does not"));
        }
    }
    if ours.output != theirs.output {
        diff.say(format!(
            "{} returns a stream, {} one value",
            if ours.output { sides.ours } else { sides.theirs },
            if ours.output { sides.theirs } else { sides.ours },
        ));
    }
    let result = match ours.output && theirs.output {
        true => "the item of the stream the server returns",
        false => "the result",
    };
    diff.within(result.to_owned(), |diff| diff.form(&ours.result, &theirs.result));
    diff.found
}

struct Diff {
    sides: Sides,
    /// Where the comparison is, outermost first.
    place: Vec<String>,
    found: Vec<String>,
    limit: usize,
}

impl Diff {
    fn full(&self) -> bool {
        self.found.len() >= self.limit
    }

    fn say(&mut self, what: String) {
        if self.full() {
            return;
        }
        let sentence = match self.place.is_empty() {
            true => what,
            false => format!("{}: {what}", self.place.join(", ")),
        };
        self.found.push(sentence);
    }

    fn within(&mut self, place: String, compare: impl FnOnce(&mut Diff)) {
        if self.full() {
            return;
        }
        self.place.push(place);
        compare(self);
        self.place.pop();
    }

    fn has(&mut self, ours: &Form, theirs: &Form) {
        let Sides { ours: a, theirs: b } = self.sides;
        let (x, y) = (ours.describe(), theirs.describe());
        match x == y {
            // Alike by name, not by shape (a type met again at another
            // depth, say).
            true => self.say(format!("{a} and {b} have differently shaped `{x}`")),
            false => self.say(format!("{a} has {x}, {b} has {y}")),
        }
    }

    fn args(&mut self, ours: &[Field], theirs: &[Field]) {
        self.named_list("argument", None, ours, theirs, |name| {
            format!("argument `{name}`")
        });
    }

    /// Fields or arguments, compared place by place.
    fn named_list(
        &mut self,
        what: &str,
        of: Option<&str>,
        ours: &[Field],
        theirs: &[Field],
        place: impl Fn(&str) -> String,
    ) {
        let Sides { ours: a, theirs: b } = self.sides;
        let of = of.map(|name| format!(" of `{name}`")).unwrap_or_default();
        for (index, (x, y)) in ours.iter().zip(theirs).enumerate() {
            if x.name != y.name {
                self.say(format!(
                    "{what} {}{of} is `{}` in {a} and `{}` in {b}",
                    index + 1,
                    x.name,
                    y.name
                ));
                continue;
            }
            self.within(place(&x.name), |diff| diff.form(&x.form, &y.form));
        }
        for extra in theirs.iter().skip(ours.len()) {
            self.say(format!("{b} has {what} `{}`{of} that {a} lacks", extra.name));
        }
        for extra in ours.iter().skip(theirs.len()) {
            self.say(format!("{a} has {what} `{}`{of} that {b} lacks", extra.name));
        }
    }

    fn form(&mut self, ours: &Form, theirs: &Form) {
        if self.full() || ours == theirs {
            return;
        }
        match (ours, theirs) {
            (Form::Option(x), Form::Option(y)) => {
                self.within("inside the `Option`".to_owned(), |diff| diff.form(x, y))
            }
            (Form::Seq(x), Form::Seq(y)) => {
                self.within("the items of a `Vec`".to_owned(), |diff| diff.form(x, y))
            }
            (Form::Map { key: k1, value: v1 }, Form::Map { key: k2, value: v2 }) => {
                self.within("the keys of a map".to_owned(), |diff| diff.form(k1, k2));
                self.within("the values of a map".to_owned(), |diff| diff.form(v1, v2));
            }
            (Form::Tuple(x), Form::Tuple(y)) if x.len() == y.len() => {
                for (index, (x, y)) in x.iter().zip(y).enumerate() {
                    self.within(format!("element {} of a tuple", index + 1), |diff| {
                        diff.form(x, y)
                    });
                }
            }
            (Form::Array { item: x, len: n }, Form::Array { item: y, len: m }) if n == m => {
                self.within("the items of an array".to_owned(), |diff| diff.form(x, y));
            }
            (Form::Struct { name, fields: x }, Form::Struct { fields: y, .. }) => {
                let of = name.clone();
                self.named_list("field", Some(&of), x, y, |field| format!("field `{of}.{field}`"));
            }
            (Form::Enum { name, variants: x }, Form::Enum { variants: y, .. }) => self.variants(name, x, y),
            // Arrays and tuples of the same items are one shape.
            (Form::Array { item, len }, Form::Tuple(items))
            | (Form::Tuple(items), Form::Array { item, len })
                if items.len() as u64 == *len && items.iter().all(|x| x == &**item) => {}
            // The same type met again inside itself, by any name.
            (Form::Recursive { depth: x, .. }, Form::Recursive { depth: y, .. }) if x == y => {}
            _ => self.has(ours, theirs),
        }
    }

    fn variants(&mut self, name: &str, ours: &[Variant], theirs: &[Variant]) {
        let Sides { ours: a, theirs: b } = self.sides;
        for (index, (x, y)) in ours.iter().zip(theirs).enumerate() {
            if x.name != y.name {
                self.say(format!(
                    "variant {} of `{name}` is `{}` in {a} and `{}` in {b}",
                    index + 1,
                    x.name,
                    y.name
                ));
                continue;
            }
            let place = format!("variant `{name}::{}`", x.name);
            match (&x.form, &y.form) {
                (VariantForm::Unit, VariantForm::Unit) => {}
                (VariantForm::NewType(x), VariantForm::NewType(y)) => {
                    self.within(place, |diff| diff.form(x, y))
                }
                (VariantForm::Tuple(x), VariantForm::Tuple(y)) => {
                    self.within(place, |diff| {
                        diff.form(&Form::Tuple(x.clone()), &Form::Tuple(y.clone()))
                    });
                }
                (VariantForm::Struct(x), VariantForm::Struct(y)) => self.within(place, |diff| {
                    diff.named_list("field", None, x, y, |field| format!("field `{field}`"));
                }),
                (x, y) => self.within(place, |diff| {
                    diff.say(format!("{a} holds {}, {b} holds {}", holds(x), holds(y)));
                }),
            }
        }
        for extra in theirs.iter().skip(ours.len()) {
            self.say(format!("{b} has variant `{name}::{}` that {a} lacks", extra.name));
        }
        for extra in ours.iter().skip(theirs.len()) {
            self.say(format!("{a} has variant `{name}::{}` that {b} lacks", extra.name));
        }
    }
}

fn holds(form: &VariantForm) -> String {
    match form {
        VariantForm::Unit => "nothing".to_owned(),
        VariantForm::NewType(inner) => inner.describe(),
        VariantForm::Tuple(items) => Form::Tuple(items.clone()).describe(),
        VariantForm::Struct(fields) => {
            let names: Vec<&str> = fields.iter().map(|field| field.name.as_str()).collect();
            format!("{{ {} }}", names.join(", "))
        }
    }
}
