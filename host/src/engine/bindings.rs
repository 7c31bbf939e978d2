//! The one `bindgen!` of the `plait:step/step` world on the host side.
//!
//! Everything else in the host uses the types generated here; the SDK and the
//! guests generate theirs from the same `wit/` folder.

// The generated items carry the WIT doc comments where WIT has them, but not
// every generated helper does.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plait:step/step",
    exports: { default: async },
    // `log` may end the step: the record past the log volume limit traps.
    imports: { "plait:step/host.log": trappable },
});
