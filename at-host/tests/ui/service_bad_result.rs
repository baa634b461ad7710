// A service function whose result cannot travel (not Serialize or
// Deserialize): the error points at the return type.
struct Opaque;

#[at_host::service]
trait Store {
    async fn get(&self, key: String) -> Opaque;
}

fn main() {}
