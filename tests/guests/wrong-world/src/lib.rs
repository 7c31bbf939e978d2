//! Test guest `wrong-world`: a valid component of another world,
//! `other:thing/plugin@1.0.0`, exporting only `hello: func() -> string`.
//!
//! The host must refuse it with a clear error saying the component does not
//! implement `plait:step/step` (no `describe` or `run` export), rather than
//! failing obscurely at instantiation or call time.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "other:thing/plugin",
    });
}

/// Implements the `other:thing/plugin` world.
pub struct Plugin;

impl bindings::Guest for Plugin {
    fn hello() -> String {
        "hello from another world".to_owned()
    }
}

bindings::export!(Plugin with_types_in bindings);
