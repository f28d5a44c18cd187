//! The `uniffi-bindgen` command, built from the same uniffi version as `reflow-bindings`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
