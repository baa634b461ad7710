// A struct parameter that serde cannot read (no Deserialize): the error
// points at that parameter's type, in a trait with good ones around it.
#[derive(serde::Serialize)]
struct Reading {
    celsius: f64,
}

#[at_host::service]
trait Station {
    async fn put(&self, sensor: String, reading: Reading, tags: Vec<String>) -> bool;
}

fn main() {}
