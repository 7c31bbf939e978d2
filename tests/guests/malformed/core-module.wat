;; A valid core WebAssembly module, not a component: the host must refuse it
;; with an error saying a component is expected (for example "this is a core
;; module; build the step for wasm32-wasip2"), not crash or try to run it.
;; core-module.wasm is this file assembled by hand (39 bytes).
(module
  (func (export "answer") (result i32)
    i32.const 42))
