//! The one `bindgen!` of the `plait:step/step` world on the host side.
//!
//! Everything else in the host uses the types generated here; the SDK and the
//! guests generate theirs from the same `wit/` folder.

// The generated items carry the WIT doc comments where WIT has them, but not
// every generated helper does.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plait:step/step",
    exports: { default: async },
    imports: {
        // `log` may end the step: the record past the log volume limit traps.
        "plait:step/host.log": trappable,
        // Loading and running a model block on files and CPU: they run on
        // a blocking thread while the step's future waits (and can be
        // dropped by its timeout). A handle missing from the resource
        // table is a host bug, hence trappable.
        "plait:step/inference.load": async | trappable,
        "plait:step/inference.[method]model.run": async | trappable,
        "plait:step/inference.[method]model.read-file": async | trappable,
        "plait:step/inference.[method]model.inputs": trappable,
        "plait:step/inference.[drop]model": trappable,
    },
    with: {
        "plait:step/inference.model": crate::capabilities::inference::ModelHandle,
    },
});
