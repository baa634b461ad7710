//! A real MQTT broker for the section 11 tests: Debian's `mosquitto`,
//! started by the test on a port it picks, with a config file the test
//! writes (anonymous, or a password file and an ACL), stopped on drop, and
//! restartable on the same port (the "broker went away" tests).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::PATIENCE;
use crate::firmware::free_port;

/// The ACL lines of contract 11.1 rule 10 (Mosquitto `pattern` lines: `%c`
/// is the client id, which with ACLs is the AT name).
pub const CONTRACT_ACL: &str = "pattern write at/+/req/%c\n\
pattern read at/%c/req/#\n\
pattern write at/%c/rep/#\n\
pattern read at/+/rep/%c\n\
pattern write at/%c/status\n\
pattern read at/+/status\n";

/// How the broker lets clients in.
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    /// `(user, password)` pairs; none: anonymous clients are let in.
    pub users: Vec<(String, String)>,
    /// ACL file text (`pattern`/`user`/`topic` lines); none: no ACL.
    pub acl: Option<String>,
}

/// A running Mosquitto on 127.0.0.1; killed (and its files removed) on drop.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// Why a test cannot have a broker here, if it cannot (`mosquitto` is not
/// installed): hand it to [`crate::skip`].
pub fn missing_broker() -> Option<String> {
    let found = Command::new(mosquitto())
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    match found {
        true => None,
        false => Some(
            "mosquitto is not installed (Debian: apt-get install --no-install-recommends mosquitto)"
                .into(),
        ),
    }
}

/// The broker binary: `mosquitto` on the PATH, else Debian's `/usr/sbin`.
fn mosquitto() -> PathBuf {
    let sbin = Path::new("/usr/sbin/mosquitto");
    match sbin.exists() {
        true => sbin.to_owned(),
        false => PathBuf::from("mosquitto"),
    }
}

impl Broker {
    /// Starts an anonymous broker on a free port, or `None` (after
    /// [`crate::skip`]) when Mosquitto is not installed.
    pub fn start() -> Option<Broker> {
        Broker::start_with(BrokerConfig::default())
    }

    /// Starts a broker with `config` on a free port, or `None` (after
    /// [`crate::skip`]) when Mosquitto is not installed.
    pub fn start_with(config: BrokerConfig) -> Option<Broker> {
        if let Some(why) = missing_broker() {
            crate::skip(&why);
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("at-broker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut conf = format!("listener {port} 127.0.0.1\npersistence false\n");
        if config.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwd = dir.join("passwd");
            std::fs::write(&passwd, "").expect("password file");
            for (user, password) in &config.users {
                let status = Command::new("mosquitto_passwd")
                    .args(["-b"])
                    .arg(&passwd)
                    .args([user, password])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd failed");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwd.display()
            ));
        }
        if let Some(acl) = &config.acl {
            let file = dir.join("acl");
            std::fs::write(&file, acl).expect("acl file");
            conf.push_str(&format!("acl_file {}\n", file.display()));
        }
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("broker config");
        let mut broker = Broker {
            child: None,
            port,
            dir,
        };
        broker.restart();
        Some(broker)
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker (clients see their connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (stopping it first if it
    /// runs), and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let until = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "mosquitto did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
