//! The macro as users meet it: every refused shape fails with its message
//! pinned in a `.stderr` file, and every accepted shape compiles and runs.
//! Regenerate the messages with `TRYBUILD=overwrite cargo test --test ui`.
#![allow(missing_docs)]

#[test]
fn macro_shapes() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
