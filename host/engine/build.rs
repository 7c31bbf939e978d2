//! Records the target triple the engine is built for: compiled component
//! code is keyed by it (`HOST_TARGET`).

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=PLAIT_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
