//! A small network of Linux network namespaces for the fault tier and the fault benchmark:
//! every party (server, device, peer) in a namespace of its own, each joined to a "router"
//! namespace by a veth pair, and faults applied on the router's forward hook with nftables,
//! so both ends see silent loss, as on a real cut (no `netem` on these kernels).
//!
//! ```text
//!   host "server" 10.203.1.2 ── r1 ┐
//!   host "device" 10.203.2.2 ── r2 ┼ router (forwarding, table inet callbox_fault)
//!   host "peer"   10.203.3.2 ── r3 ┘
//! ```
//!
//! Delay and jitter (no `netem` either) come from a user-space UDP relay in the router
//! namespace ([`Lab::delay_udp`]): the router rewrites a host's UDP towards one port of
//! another host to the relay (DNAT), which holds every datagram for its delay each way;
//! connection tracking makes the replies look as if they came from the real address.
//!
//! Namespace names carry the process ID and a counter; dropping the [`Lab`] removes them,
//! and [`Lab::new`] first sweeps those left by processes that no longer run. Needs root
//! (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "cbf";
const TABLE: &str = "callbox_fault";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What can go wrong while building the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed.
        stderr: String,
    },
    /// A command could not be started (not installed?).
    #[error("cannot run `{0}`: {1}")]
    Spawn(String, std::io::Error),
}

/// A fault on one host's link, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Everything dropped.
    Cut,
    /// UDP dropped (media), TCP passes.
    CutUdp,
    /// TCP dropped (signalling), UDP passes.
    CutTcp,
    /// Each packet dropped with this probability, in percent.
    Loss(u8),
    /// Each packet the host sends (its uplink only) dropped with this probability, percent.
    LossUp(u8),
    /// TCP to or from this port dropped (a server's ICE-TCP port, say).
    CutTcpPort(u16),
}

/// Which way a cap applies, from the host's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the host sends.
    Up,
    /// What the host receives.
    Down,
}

/// One party's namespace.
#[derive(Debug, Clone)]
pub struct Host {
    /// The party's name in the lab ("server", "device", ...).
    pub name: String,
    /// The namespace's name.
    pub netns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    index: usize,
}

/// The namespaces and links of one test. See the module docs.
#[derive(Debug)]
pub struct Lab {
    router: String,
    hosts: Vec<Host>,
}

fn run(cmd: &mut Command) -> Result<String, LabError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| LabError::Spawn(line.clone(), e))?;
    if !out.status.success() {
        return Err(LabError::Command { cmd: line, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

impl Lab {
    /// Builds a router and one namespace per name, each with its address, a default route
    /// through the router and loopback up.
    pub fn new(names: &[&str]) -> Result<Lab, LabError> {
        sweep();
        let tag = format!("{PREFIX}{}n{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let router = format!("{tag}-router");
        ip(&["netns", "add", &router])?;
        let mut lab = Lab { router: router.clone(), hosts: Vec::new() };
        ip(&["-n", &router, "link", "set", "lo", "up"])?;
        run(Command::new("ip").args(["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]))?;
        let mut rules = format!(
            "table inet {TABLE} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n"
        );
        for (i, name) in names.iter().enumerate() {
            let index = i + 1;
            let netns = format!("{tag}-{name}");
            ip(&["netns", "add", &netns])?;
            lab.hosts.push(Host {
                name: name.to_string(),
                netns: netns.clone(),
                addr: Ipv4Addr::new(10, 203, index as u8, 2),
                index,
            });
            let rif = format!("r{index}");
            ip(&["-n", &router, "link", "add", &rif, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
            ip(&["-n", &router, "addr", "add", &format!("10.203.{index}.1/24"), "dev", &rif])?;
            ip(&["-n", &router, "link", "set", &rif, "up"])?;
            ip(&["-n", &netns, "addr", "add", &format!("10.203.{index}.2/24"), "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&["-n", &netns, "route", "add", "default", "via", &format!("10.203.{index}.1")])?;
            rules.push_str(&format!("  iifname \"{rif}\" jump h{index}\n  oifname \"{rif}\" jump h{index}\n"));
        }
        rules.push_str(" }\n chain prerouting {\n  type nat hook prerouting priority -100; policy accept;\n }\n");
        for h in &lab.hosts {
            rules.push_str(&format!(" chain h{} {{\n }}\n", h.index));
        }
        rules.push_str("}\n");
        let file = std::env::temp_dir().join(format!("{tag}.nft"));
        std::fs::write(&file, rules).map_err(|e| LabError::Spawn("write nft rules".into(), e))?;
        let loaded = run(Command::new("ip").args(["netns", "exec", &router, "nft", "-f"]).arg(&file));
        let _ = std::fs::remove_file(&file);
        loaded?;
        Ok(lab)
    }

    /// The host named `name`.
    ///
    /// # Panics
    /// If the lab has no such host (a bug in the test).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// A command that runs `program` inside the host's namespace.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(name).netns]).arg(program);
        c
    }

    /// Adds `fault` to the host's link (on top of any already there).
    pub fn apply(&self, name: &str, fault: Fault) -> Result<(), LabError> {
        let chain = format!("h{}", self.host(name).index);
        let mut args = vec!["netns", "exec", &self.router, "nft", "add", "rule", "inet", TABLE, &chain];
        let pct;
        let addr;
        match fault {
            Fault::Cut => {}
            Fault::CutUdp => args.extend(["meta", "l4proto", "udp"]),
            Fault::CutTcp => args.extend(["meta", "l4proto", "tcp"]),
            Fault::CutTcpPort(p) => {
                pct = p.to_string();
                args.extend(["tcp", "dport", &pct]);
                // Both directions: the same rule on the source port.
                let chain = format!("h{}", self.host(name).index);
                run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &self.router,
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    TABLE,
                    &chain,
                    "tcp",
                    "sport",
                    &pct,
                    "drop",
                ]))?;
            }
            Fault::Loss(p) => {
                pct = p.min(100).to_string();
                args.extend(["numgen", "random", "mod", "100", "<", &pct]);
            }
            Fault::LossUp(p) => {
                pct = p.min(100).to_string();
                addr = self.host(name).addr.to_string();
                args.extend(["ip", "saddr", &addr, "numgen", "random", "mod", "100", "<", &pct]);
            }
        }
        args.push("drop");
        run(Command::new("ip").args(&args)).map(|_| ())
    }

    /// Delays UDP from host `from` to `to`:`port` and its replies by `delay` plus up to
    /// `jitter` (uniform, so packets reorder), each way, until the returned guard is dropped.
    pub fn delay_udp(
        &self,
        from: &str,
        to: &str,
        port: u16,
        delay: Duration,
        jitter: Duration,
    ) -> Result<DelayRelay, LabError> {
        self.delay_udp_lossy(from, to, port, delay, jitter, 0)
    }

    /// The same, and the relay drops `loss_pct` % of the datagrams each way at random
    /// (relayed datagrams pass the router's own sockets, not its forward hook, so
    /// [`Fault::Loss`] does not reach them).
    pub fn delay_udp_lossy(
        &self,
        from: &str,
        to: &str,
        port: u16,
        delay: Duration,
        jitter: Duration,
        loss_pct: u8,
    ) -> Result<DelayRelay, LabError> {
        self.relay(from, to, port, "udp", move |relay_ip, target, stop| {
            let down = std::net::UdpSocket::bind(SocketAddrV4::new(relay_ip, 0)).ok()?;
            let port = down.local_addr().ok()?.port();
            Some((
                port,
                Box::new(move || relay(down, target, delay, jitter, loss_pct, &stop)) as Box<dyn FnOnce() + Send>,
            ))
        })
    }

    /// Delays TCP from host `from` to `to`:`port` (signalling) by `delay` each way, until the
    /// returned guard is dropped: the router rewrites the host's connections to a relay in
    /// its namespace that holds every chunk for `delay` before passing it on. Connections
    /// opened before stay direct.
    pub fn delay_tcp(&self, from: &str, to: &str, port: u16, delay: Duration) -> Result<DelayRelay, LabError> {
        self.relay(from, to, port, "tcp", move |relay_ip, target, stop| {
            let listener = std::net::TcpListener::bind(SocketAddrV4::new(relay_ip, 0)).ok()?;
            let port = listener.local_addr().ok()?.port();
            Some((port, Box::new(move || tcp_relay(listener, target, delay, &stop)) as Box<dyn FnOnce() + Send>))
        })
    }

    /// Starts a relay in the router's namespace (`start` binds its socket on the address
    /// the router has toward `from` and returns its port and the loop to run) and rewrites
    /// `from`'s `proto` traffic to `to`:`port` to it.
    fn relay(
        &self,
        from: &str,
        to: &str,
        port: u16,
        proto: &'static str,
        start: impl FnOnce(Ipv4Addr, SocketAddrV4, Arc<AtomicBool>) -> Option<(u16, Box<dyn FnOnce() + Send>)>
        + Send
        + 'static,
    ) -> Result<DelayRelay, LabError> {
        let (from, to) = (self.host(from).clone(), self.host(to).clone());
        let relay_ip = Ipv4Addr::new(10, 203, from.index as u8, 1);
        let netns = std::fs::File::open(format!("/var/run/netns/{}", self.router))
            .map_err(|e| LabError::Spawn(format!("open netns {}", self.router), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let target = SocketAddrV4::new(to.addr, port);
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace descriptor; the
            // sockets made afterwards belong to the router's namespace.
            let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            match joined.then(|| start(relay_ip, target, stop2)).flatten() {
                Some((port, run)) => {
                    let _ = ready_tx.send(Some(port));
                    run();
                }
                None => {
                    let _ = ready_tx.send(None);
                }
            }
        });
        let relay_port = ready_rx.recv().ok().flatten().ok_or_else(|| {
            LabError::Spawn(format!("{proto} delay relay"), std::io::Error::other("cannot start in the router"))
        })?;
        let rif = format!("r{}", from.index);
        let rule = format!(
            "add rule inet {TABLE} prerouting iifname \"{rif}\" ip daddr {} {proto} dport {port} dnat ip to {relay_ip}:{relay_port}",
            to.addr
        );
        run(Command::new("ip").args(["netns", "exec", &self.router, "nft", &rule]))?;
        Ok(DelayRelay { router: self.router.clone(), stop, thread: Some(thread) })
    }

    /// Caps the host's link at `kbit` kbit/s in `dir` with a token bucket (`tc tbf`: a
    /// 100 ms queue, then drops, as a thin DSL or LTE uplink behaves), replacing any cap
    /// there. Uplink: on the host's own interface; downlink: on the router's toward it.
    pub fn cap(&self, name: &str, dir: Direction, kbit: u32) -> Result<(), LabError> {
        let (netns, dev) = self.cap_dev(name, dir);
        let rate = format!("{kbit}kbit");
        run(Command::new("ip").args([
            "netns", "exec", &netns, "tc", "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", &rate, "burst",
            "16kb", "latency", "100ms",
        ]))
        .map(|_| ())
    }

    /// Lifts the cap [`Lab::cap`] put on the host's link in `dir`.
    pub fn uncap(&self, name: &str, dir: Direction) -> Result<(), LabError> {
        let (netns, dev) = self.cap_dev(name, dir);
        run(Command::new("ip").args(["netns", "exec", &netns, "tc", "qdisc", "del", "dev", &dev, "root"])).map(|_| ())
    }

    fn cap_dev(&self, name: &str, dir: Direction) -> (String, String) {
        let h = self.host(name);
        match dir {
            Direction::Up => (h.netns.clone(), "eth0".to_string()),
            Direction::Down => (self.router.clone(), format!("r{}", h.index)),
        }
    }

    /// Removes every fault from the host's link.
    pub fn clear(&self, name: &str) -> Result<(), LabError> {
        let chain = format!("h{}", self.host(name).index);
        run(Command::new("ip").args(["netns", "exec", &self.router, "nft", "flush", "chain", "inet", TABLE, &chain]))
            .map(|_| ())
    }
}

/// A running delay relay (see [`Lab::delay_udp`]); dropping it restores the direct path.
#[derive(Debug)]
pub struct DelayRelay {
    router: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.router,
            "nft",
            "flush",
            "chain",
            "inet",
            TABLE,
            "prerouting",
        ]));
        // Flows already rewritten keep their conntrack entry; forget them so new packets
        // take the direct path.
        let _ = run(Command::new("ip").args(["netns", "exec", &self.router, "conntrack", "-F"]));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves datagrams between the clients that reach `down` and `target`, each held for
/// `delay` plus up to `jitter`. One upstream socket per client, so replies find their way.
fn relay(
    down: std::net::UdpSocket,
    target: SocketAddrV4,
    delay: Duration,
    jitter: Duration,
    loss_pct: u8,
    stop: &AtomicBool,
) {
    let _ = down.set_nonblocking(true);
    let mut ups: Vec<(SocketAddr, std::net::UdpSocket)> = Vec::new();
    // (due, upstream index or none for downstream, destination, bytes)
    let mut queue: std::collections::VecDeque<(Instant, Option<usize>, SocketAddr, Vec<u8>)> = Default::default();
    let mut buf = vec![0u8; 2048];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // None: dropped.
    let mut hold = move || {
        if random() % 100 < u64::from(loss_pct) {
            return None;
        }
        let j = jitter.as_micros() as u64;
        Some(delay + Duration::from_micros(if j == 0 { 0 } else { random() % j }))
    };
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while let Ok((n, from)) = down.recv_from(&mut buf) {
            let i = match ups.iter().position(|(c, _)| *c == from) {
                Some(i) => i,
                None => {
                    let Ok(up) = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) else {
                        continue;
                    };
                    let _ = up.set_nonblocking(true);
                    ups.push((from, up));
                    ups.len() - 1
                }
            };
            if let Some(h) = hold() {
                queue.push_back((now + h, Some(i), SocketAddr::V4(target), buf[..n].to_vec()));
            }
        }
        for (client, up) in &ups {
            while let Ok((n, _)) = up.recv_from(&mut buf) {
                if let Some(h) = hold() {
                    queue.push_back((now + h, None, *client, buf[..n].to_vec()));
                }
            }
        }
        let now = Instant::now();
        // Jitter reorders: send whatever is due, in any position.
        queue.retain(|(due, via, to, bytes)| {
            if *due > now {
                return true;
            }
            let _ = match via {
                Some(i) => ups[*i].1.send_to(bytes, to),
                None => down.send_to(bytes, to),
            };
            false
        });
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One direction of a relayed TCP connection: chunks read, each due at its time.
#[derive(Default)]
struct Pipe {
    queue: std::collections::VecDeque<(Instant, Vec<u8>)>,
    eof: bool,
    closed: bool,
}

/// Moves the bytes of every connection accepted on `listener` to and from `target`, each
/// chunk held for `delay`.
fn tcp_relay(listener: std::net::TcpListener, target: SocketAddrV4, delay: Duration, stop: &AtomicBool) {
    use std::io::{ErrorKind, Read, Write};
    let _ = listener.set_nonblocking(true);
    // (client, upstream, client -> upstream, upstream -> client)
    let mut conns: Vec<(std::net::TcpStream, std::net::TcpStream, Pipe, Pipe)> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        while let Ok((client, _)) = listener.accept() {
            let Ok(up) = std::net::TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_secs(3)) else {
                continue;
            };
            let _ = client.set_nonblocking(true);
            let _ = up.set_nonblocking(true);
            let _ = client.set_nodelay(true);
            let _ = up.set_nodelay(true);
            conns.push((client, up, Pipe::default(), Pipe::default()));
        }
        let now = Instant::now();
        for (client, up, c2u, u2c) in &mut conns {
            for (from, pipe) in [(&mut *client, &mut *c2u), (&mut *up, &mut *u2c)] {
                while !pipe.eof {
                    match from.read(&mut buf) {
                        Ok(0) => pipe.eof = true,
                        Ok(n) => pipe.queue.push_back((now + delay, buf[..n].to_vec())),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => pipe.eof = true,
                    }
                }
            }
            for (to, pipe) in [(&mut *up, &mut *c2u), (&mut *client, &mut *u2c)] {
                while let Some((due, bytes)) = pipe.queue.front_mut() {
                    if *due > now {
                        break;
                    }
                    match to.write(bytes) {
                        Ok(n) if n == bytes.len() => {
                            pipe.queue.pop_front();
                        }
                        Ok(n) => {
                            bytes.drain(..n);
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            pipe.queue.clear();
                            pipe.eof = true;
                        }
                    }
                }
                if pipe.eof && pipe.queue.is_empty() && !pipe.closed {
                    pipe.closed = true;
                    let _ = to.shutdown(std::net::Shutdown::Write);
                }
            }
        }
        conns.retain(|(_, _, a, b)| !(a.closed && b.closed));
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "delete", &h.netns]);
        }
        let _ = ip(&["netns", "delete", &self.router]);
    }
}

/// Removes the namespaces of labs whose process no longer runs (a test killed mid-way).
pub fn sweep() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('n').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}
