//! `sqlx::migrate!` embeds the migrations when the crate compiles, but cargo does not know it
//! reads them: without this, an edited or added migration would not rebuild the crate and tests
//! would run against the old schema.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
