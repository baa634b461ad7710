// A parameter type that is neither serialisable (for the client) nor an
// argument type (for the server).
struct Opaque;

#[at_host::service]
trait Store {
    async fn put(&self, item: Opaque) -> bool;
}

fn main() {}
