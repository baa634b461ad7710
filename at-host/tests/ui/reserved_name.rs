// A function named rpc.*: the protocol owns those names.
#[at_host::service]
trait Sneaky {
    #[at(name = "rpc.ping")]
    async fn ping(&self) -> bool;
}

fn main() {}
