//! Paths of Plait's test guests and reference plugins, built for
//! `wasm32-wasip2` by this crate's build script.
//!
//! The host's tests depend on this crate to get components without building
//! them by hand: every constant is the absolute path of a file that exists
//! once this crate has compiled.
//!
//! - `*_COMPONENT`: the test guests in `tests/guests`, one per crate, for
//!   example [`ECHO_COMPONENT`] and [`SLOW_COUNTER_COMPONENT`]; each crate's
//!   documentation says what the host must do with it.
//! - `*_PLUGIN`: the reference plugins in `plugins`, for example
//!   [`READ_TEXT_PLUGIN`].
//! - [`CORE_MODULE_WAT`] and [`CORE_MODULE_WASM`]: a core module, which is
//!   not a component.
//! - [`REPO_ROOT`]: the repository root, for fixtures such as `examples/`.
//!
//! [`foreach_guest!`] and [`foreach_plugin!`] call a macro once per
//! component, to generate one test per guest or plugin:
//!
//! ```
//! macro_rules! assert_exists {
//!     ($name:ident, $path:expr) => {
//!         assert!(std::path::Path::new($path).is_file(), "{}", stringify!($name));
//!     };
//! }
//! plait_test_artifacts::foreach_guest!(assert_exists);
//! plait_test_artifacts::foreach_plugin!(assert_exists);
//! ```

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    /// Every artifact starts with the component header: magic, version
    /// 0x0d, layer 1.
    fn assert_component(path: &str) {
        let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(
            bytes[..8],
            [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00],
            "{path}"
        );
    }

    #[test]
    fn every_guest_and_plugin_is_a_component() {
        let mut seen = Vec::new();
        macro_rules! check {
            ($name:ident, $path:expr) => {
                assert_component($path);
                seen.push(stringify!($name));
            };
        }
        foreach_guest!(check);
        foreach_plugin!(check);
        for expected in [
            "echo",
            "slow_counter",
            "wrong_world",
            "read_text",
            "json_reshape",
        ] {
            assert!(seen.contains(&expected), "{expected} missing from {seen:?}");
        }
    }

    #[test]
    fn constants_point_inside_the_repository() {
        for path in [ECHO_COMPONENT, NORMALIZE_TEXT_PLUGIN, CORE_MODULE_WAT] {
            assert!(path.starts_with(REPO_ROOT), "{path}");
        }
        assert!(
            std::path::Path::new(REPO_ROOT)
                .join("wit/step.wit")
                .is_file()
        );
    }

    #[test]
    fn core_module_is_not_a_component() {
        let bytes = std::fs::read(CORE_MODULE_WASM).expect("core module");
        assert_eq!(bytes[..8], [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    }
}
