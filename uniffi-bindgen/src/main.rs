//! `uniffi-bindgen`: generates the Kotlin and Swift bindings from the built SDK library
//! (`cargo run -p uniffi-bindgen -- generate target/debug/libtether.so --language kotlin ...`).
//! Lives in the workspace so its uniffi version is always the SDK's; `scripts/gen-bindings`
//! drives it.

fn main() {
    uniffi::uniffi_bindgen_main()
}
