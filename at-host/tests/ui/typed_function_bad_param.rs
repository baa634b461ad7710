// A typed host function whose parameter is not an argument type.
struct Opaque;

fn main() {
    let _ = at_host::Server::builder().function("f", |_: Opaque| 1i64);
}
