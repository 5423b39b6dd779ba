//! The `ringdb` command line.

fn main() {
    println!("ringdb");
}
