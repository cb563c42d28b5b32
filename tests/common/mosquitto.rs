//! A real `mosquitto` broker started by the test on loopback (plain and TLS listeners), and a
//! `mosquitto_sub` that records every message it sees.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The broker process, killed on drop.
pub struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The plain listener's port.
    pub port: u16,
    /// The TLS listener's port.
    pub tls_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn mosquitto() -> &'static str {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto is not installed (scripts/install-deps.sh installs it; the MQTT tests need a real broker)")
}

impl Broker {
    /// A broker whose TLS listener serves `cert`/`key` (for `localhost`).
    pub fn start(cert: &std::path::Path, key: &std::path::Path) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nlistener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\npersistence false\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let mut b = Broker { child: None, dir, port, tls_port };
        b.restart();
        b
    }

    /// Starts (again) on the same ports; waits until both accept.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto())
            .args(["-c", self.dir.path().join("mosquitto.conf").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.port, self.tls_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not listen on {port}: {}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the broker (kill -9: as a crash or a power cut of the broker's host).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Publishes `payload` to `topic` (plain listener).
    pub fn publish(&self, topic: &str, payload: &str) {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", topic, "-m", payload])
            .status()
            .unwrap();
        assert!(st.success(), "mosquitto_pub failed");
    }

    /// A subscriber to every topic.
    pub fn subscribe(&self) -> Sub {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-v", "-t", "#"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                l.lock().unwrap().push(line);
            }
        });
        Sub { child, lines }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a subscriber saw: one `topic payload` line per message.
pub struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line `topic payload` is seen (payload: exactly, or `*` for any).
    pub async fn wait(&self, topic: &str, payload: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let found = self
                .lines()
                .into_iter()
                .find(|l| l.split_once(' ').is_some_and(|(t, p)| t == topic && (payload == "*" || p == payload)));
            if let Some(l) = found {
                return l;
            }
            assert!(Instant::now() < deadline, "no {topic} {payload} on the broker; saw {:#?}", self.lines());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
