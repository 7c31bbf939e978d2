//! Write Plait workflow steps in Rust.
//!
//! A Plait step is a WebAssembly component implementing the `plait:step/step`
//! WIT world (see `wit/step.wit`). This crate hides the WIT bindings behind a
//! small typed API: implement [`Step`] for a type, call [`export_step!`] once,
//! and build the crate as a `cdylib` with
//! `cargo build --release --target wasm32-wasip2`. The result is a component
//! the Plait host can run.
//!
//! The host hands a step one JSON document and a set of named binary
//! [`Blob`]s. The SDK deserializes the document into [`Step::Input`],
//! serializes [`Step::Output`] back to JSON, and turns every failure into a
//! [`StepError`] that tells the host whether retrying can help. A document
//! that does not match [`Step::Input`] is a fatal error naming the offending
//! field, so a step never has to validate the JSON shape by hand.
//!
//! Steps are plain Rust and can be unit-tested natively, without a
//! WebAssembly runtime, through [`testing`].
//!
//! # Example
//!
//! ```
//! use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
//! use serde::{Deserialize, Serialize};
//!
//! /// Greets whoever the input names.
//! pub struct Greet;
//!
//! /// The input document: `{"name": "Ada"}`.
//! #[derive(Deserialize)]
//! pub struct Request {
//!     name: String,
//! }
//!
//! /// The output document: `{"message": "Hello, Ada!"}`.
//! #[derive(Serialize)]
//! pub struct Greeting {
//!     message: String,
//! }
//!
//! impl Step for Greet {
//!     type Input = Request;
//!     type Output = Greeting;
//!
//!     fn info() -> StepInfo {
//!         StepInfo::new("greet", "1.0.0")
//!             .description("Greets whoever the input names.")
//!             .config("greeting", "The word to greet with; `Hello` when unset.", false)
//!     }
//!
//!     fn run(ctx: &Context, input: Input<Request>) -> Result<Output<Greeting>, StepError> {
//!         let greeting = ctx.config("greeting").unwrap_or_else(|| "Hello".to_owned());
//!         ctx.log(plait_sdk::Level::Info, "greeting", &[("name", &input.data.name)]);
//!         let message = format!("{greeting}, {}!", input.data.name);
//!         Ok(Greeting { message }.into())
//!     }
//! }
//!
//! // Exports the step as the component's `describe` and `run`. Off
//! // wasm32 (as in this doc test) it only checks that `Greet` is a `Step`.
//! plait_sdk::export_step!(Greet);
//!
//! // The same step, run natively through the same JSON path as in wasm:
//! let test = plait_sdk::testing::TestContext::new().config("greeting", "Hi");
//! let input = serde_json::json!({"name": "Ada"});
//! let (output, _blobs) = plait_sdk::testing::run::<Greet>(&test.build(), input, vec![])?;
//! assert_eq!(output, serde_json::json!({"message": "Hi, Ada!"}));
//! assert_eq!(test.logs()[0].field("name"), Some("Ada"));
//! # Ok::<(), StepError>(())
//! ```

// Lets the generated WIT bindings name this crate by the same absolute path
// (`plait_sdk::...`) both here and in the downstream crate that expands
// `export_step!`.
extern crate self as plait_sdk;

mod blob;
mod context;
mod error;
pub mod inference;
mod info;
mod payload;
mod runtime;
pub mod testing;

pub use blob::{Blob, Blobs};
pub use context::{Context, Invocation, Level};
pub use error::{ErrorKind, StepError};
pub use info::{Grant, StepInfo};
pub use payload::{Input, Output};

/// A Plait workflow step.
///
/// The host creates a fresh component instance for every invocation, so a
/// step has no `self`: everything it knows comes from the [`Context`] and its
/// [`Input`]. Export an implementation with [`export_step!`].
pub trait Step {
    /// The input JSON document. A document that does not deserialize into
    /// this type fails the invocation with a fatal [`StepError`] naming the
    /// offending field; use [`serde_json::Value`] to accept any document, or
    /// [`serde::de::IgnoredAny`] to ignore it.
    type Input: serde::de::DeserializeOwned;

    /// The output JSON document.
    type Output: serde::Serialize;

    /// What the step says about itself: returned by the component's
    /// `describe` export. It must not depend on input or configuration.
    fn info() -> StepInfo;

    /// Runs the step once.
    ///
    /// Return [`StepError::retryable`] for a transient failure and
    /// [`StepError::fatal`] when the input or configuration is wrong. A panic
    /// is a trap: the host records it as a bug in the step.
    fn run(ctx: &Context, input: Input<Self::Input>) -> Result<Output<Self::Output>, StepError>;
}

/// Exports a [`Step`] implementation as the component's `describe` and `run`.
///
/// Call it once, at the root of a `cdylib` crate, with the step's type:
/// `plait_sdk::export_step!(MyStep);`. On `wasm32` it generates the WIT
/// exports; on any other target (native unit tests, doc tests, `cargo
/// clippy`) it only checks at compile time that the type implements
/// [`Step`], so the crate builds everywhere.
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // The wit-bindgen export macro takes a plain identifier, so the
            // generic adapter gets a local name first.
            type PlaitStepExport = $crate::__private::Adapter<$step>;
            $crate::__private::bindings::export!(
                PlaitStepExport with_types_in $crate::__private::bindings
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_step::<$step>();
    };
}

/// Implementation details used by [`export_step!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::{Adapter, assert_step};

    /// The `wit-bindgen` runtime, under a path the generated bindings can
    /// name from a downstream crate that does not depend on `wit-bindgen`.
    pub use wit_bindgen::rt as wit_bindgen_rt;

    /// Bindings generated from `wit/step.wit`.
    #[allow(missing_docs, unused_qualifications, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plait:step/step",
            pub_export_macro: true,
            default_bindings_module: "plait_sdk::__private::bindings",
            runtime_path: "plait_sdk::__private::wit_bindgen_rt",
        });
    }
}
