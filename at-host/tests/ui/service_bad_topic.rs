// A topic's name is 1 to 64 of A-Z a-z 0-9 - _ . / and not rpc.*, and a
// topic method takes only &self.
#[at_host::service]
trait Sensors {
    #[at(topic = "no spaces")]
    fn reading(&self) -> at_host::Topic;
}

#[at_host::service]
trait Async {
    #[at(topic)]
    async fn reading(&self) -> at_host::Topic;
}

fn main() {}
