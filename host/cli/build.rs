//! Records what `plait` is built for: the target triple (compiled component
//! code is keyed by it, `engine::HOST_TARGET`) and the cargo features, for
//! `plait --version`.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=PLAIT_TARGET={target}");
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(name, _)| name.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|name| name.to_lowercase().replace('_', "-"))
        .filter(|name| name != "default")
        .collect();
    features.sort();
    println!("cargo:rustc-env=PLAIT_FEATURES={}", features.join(", "));
    println!("cargo:rerun-if-changed=build.rs");
}
