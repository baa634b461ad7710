// A service function whose error type is no AppError: the client cannot
// map error replies back to it.
#[derive(Debug)]
struct Broken;

#[at_host::service]
trait Store {
    async fn get(&self, key: String) -> Result<i64, Broken>;
}

fn main() {}
