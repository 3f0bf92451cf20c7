//! Link the system libbcg729 (Debian: libbcg729-dev). `BCG729_LIB_DIR` adds a search
//! path (cross builds).
fn main() {
    println!("cargo:rerun-if-env-changed=BCG729_LIB_DIR");
    if let Ok(dir) = std::env::var("BCG729_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
    }
    println!("cargo:rustc-link-lib=bcg729");
}
