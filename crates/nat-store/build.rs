// Cargo cannot notice a new migration file by itself: rebuild when the migrations change, since
// `sqlx::migrate!` embeds them at compile time.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
