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
//! Namespace names carry the process ID and a counter; dropping the [`Lab`] removes them,
//! and [`Lab::new`] first sweeps those left by processes that no longer run. Needs root
//! (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

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
        rules.push_str(" }\n");
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
        match fault {
            Fault::Cut => {}
            Fault::CutUdp => args.extend(["meta", "l4proto", "udp"]),
            Fault::CutTcp => args.extend(["meta", "l4proto", "tcp"]),
            Fault::Loss(p) => {
                pct = p.min(100).to_string();
                args.extend(["numgen", "random", "mod", "100", "<", &pct]);
            }
        }
        args.push("drop");
        run(Command::new("ip").args(&args)).map(|_| ())
    }

    /// Removes every fault from the host's link.
    pub fn clear(&self, name: &str) -> Result<(), LabError> {
        let chain = format!("h{}", self.host(name).index);
        run(Command::new("ip").args(["netns", "exec", &self.router, "nft", "flush", "chain", "inet", TABLE, &chain]))
            .map(|_| ())
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
