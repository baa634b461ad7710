// Service functions are async.
#[at_host::service]
trait Blocking {
    fn get(&self) -> i64;
}

fn main() {}
