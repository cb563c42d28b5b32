//! Recovery figures over many network cuts: the real server and two `callbox peer`s (a
//! "door" and a "flat", each publishing and playing the other) in network namespaces behind
//! a router (`callbox_faultnet`); the door's link is cut for a random 0.5-10 s, then
//! restored, again and again. For each cut: the time from the restore until both sides
//! render the other's video again (a `video_resume` or `first_frame` line after the restore;
//! zero when a side never stalled). Then cuts longer than the grace period (a full re-login).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callbox_faultnet::{Fault, Lab};
use serde_json::Value;

use super::secret;
use callbox::server::DEV_APP_ID as DEMO_APP_ID;

pub(super) type Lines = Arc<Mutex<Vec<(Instant, Value)>>>;

pub(super) struct Kill(pub(super) Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Figures of one run.
pub struct CutFigures {
    /// Restore to both sides rendering again, per cut that recovered.
    pub recovered: Vec<Duration>,
    /// Cuts after which a side did not render again within 30 s.
    pub stuck: usize,
}

fn spawn_lines(mut cmd: Command, lines: &Lines, log: &std::path::Path) -> anyhow::Result<Kill> {
    let log = std::fs::File::create(log)?;
    cmd.env("RUST_LOG", "info,callbox=debug");
    let mut child = cmd.stdout(Stdio::piped()).stderr(log).stdin(Stdio::piped()).spawn()?;
    let out = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                lines.lock().map(|mut l| l.push((Instant::now(), v))).ok();
            }
        }
    });
    Ok(Kill(child))
}

/// When `lines` shows `stream` rendering again after `since`: None if not (yet).
pub(super) fn rendered_after(lines: &Lines, stream: &str, since: Instant, cut_from: Instant) -> Option<Instant> {
    let l = lines.lock().ok()?;
    let stalled = l.iter().any(|(t, v)| *t >= cut_from && v["event"] == "video_stall" && v["stream_id"] == stream);
    let back = l.iter().find(|(t, v)| {
        *t >= since && (v["event"] == "video_resume" || v["event"] == "first_frame") && v["stream_id"] == stream
    });
    match back {
        Some((t, _)) => Some(*t),
        None if !stalled && since.elapsed() > Duration::from_secs(1) => Some(since),
        None => None,
    }
}

/// Runs `cuts` cuts of 0.5-10 s with `grace_secs` of grace (or, with `fixed`, cuts of that
/// length) and returns the figures.
/// A lab with "server", "door" and "flat" namespaces and the real server running in the
/// first (grace `grace_secs`); its signalling URL and the directory for logs.
pub(super) struct ServerLab {
    // Field order is drop order: the processes before their namespaces.
    _server: Kill,
    _turn: Option<(Kill, super::tls::TestPki)>,
    pub(super) lab: Lab,
    url: String,
    logs: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

/// The secret the bench's server and its coturn share.
const TURN_SECRET: &str = "callbox-bench-turn";

impl ServerLab {
    pub(super) fn start(name: &str, grace_secs: u64) -> anyhow::Result<ServerLab> {
        ServerLab::start_with(name, grace_secs, false)
    }

    /// With `turn`, a fourth namespace runs coturn (TURN over TLS on 443, with a test CA
    /// the peers trust) and the server hands out credentials for it.
    fn start_with(name: &str, grace_secs: u64, turn: bool) -> anyhow::Result<ServerLab> {
        let lab =
            if turn { Lab::new(&["server", "door", "flat", "turn"])? } else { Lab::new(&["server", "door", "flat"])? };
        let ip = lab.host("server").addr;
        let id = format!("callbox-bench-{name}-{}-{grace_secs}", std::process::id());
        let logs = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&logs)?;
        println!("  logs in {}", logs.display());
        let (turn_keys, turn) = if turn {
            let tip = lab.host("turn").addr.to_string();
            let pki = super::tls::TestPki::for_names(&id, &[&tip])?;
            let conf = logs.join("turnserver.conf");
            std::fs::write(&conf, "")?;
            let mut c = lab.command("turn", "turnserver");
            c.arg("-c").arg(&conf);
            c.args(["-n", "--no-cli", "--log-file", "stdout", "--simple-log", "--fingerprint", "--realm", "callbox"]);
            c.args([
                "--listening-ip",
                &tip,
                "--relay-ip",
                &tip,
                "--listening-port",
                "3478",
                "--tls-listening-port",
                "443",
            ]);
            c.args(["--use-auth-secret", "--static-auth-secret", TURN_SECRET]);
            c.arg("--cert").arg(&pki.cert).arg("--pkey").arg(&pki.key);
            let k = spawn_lines(c, &Arc::default(), &logs.join("turn.log"))?;
            let keys = format!("turn_urls = [\"turns:{tip}:443?transport=tcp\"]\nturn_secret = \"{TURN_SECRET}\"\n");
            (keys, Some((k, pki)))
        } else {
            (String::new(), None)
        };
        let cfg = std::env::temp_dir().join(format!("{id}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[[apps]]\napp_id = {DEMO_APP_ID}\nsecret = \"{}\"\n[session]\ngrace_secs = {grace_secs}\n[media]\nbind = \"{ip}\"\nport = 7882\n{turn_keys}",
                secret()
            ),
        )?;
        let mut server = lab.command("server", crate::callbox_exe()?);
        server.env_remove("CALLBOX_BIN");
        server.args(["server", "--config", cfg.to_str().unwrap_or_default(), "--listen", &format!("{ip}:7880")]);
        let server = spawn_lines(server, &Arc::default(), &logs.join("server.log"))?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(ServerLab { _server: server, _turn: turn, lab, url: format!("ws://{ip}:7880"), logs, cfg })
    }

    /// A `callbox peer` as user `host` in namespace `host`, publishing `publish` if given.
    pub(super) fn peer(&self, host: &str, publish: Option<&str>, lines: &Lines) -> anyhow::Result<Kill> {
        self.peer_with(host, publish, &[], lines)
    }

    /// The same with more arguments for `callbox peer` (`--video`, `--pattern`, ...).
    pub(super) fn peer_with(
        &self,
        host: &str,
        publish: Option<&str>,
        args: &[&str],
        lines: &Lines,
    ) -> anyhow::Result<Kill> {
        let mut c = self.lab.command(host, crate::callbox_exe()?);
        c.env_remove("CALLBOX_BIN");
        c.env("CALLBOX_APP_SECRET", secret());
        c.args(["peer", "--server", &self.url, "--user", host, "--bind", &self.lab.host(host).addr.to_string()]);
        if let Some((_, pki)) = &self._turn {
            c.arg("--ca-file").arg(&pki.ca);
        }
        if let Some(s) = publish {
            c.args(["--publish", s]);
        }
        c.args(args);
        spawn_lines(c, lines, &self.logs.join(format!("{host}.log")))
    }
}

impl Drop for ServerLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg);
    }
}

pub fn run(cuts: usize, grace_secs: u64, fixed: Option<Duration>) -> anyhow::Result<CutFigures> {
    let sl = ServerLab::start("faults", grace_secs)?;
    let lab = &sl.lab;
    let mut peers = Vec::new();
    let mut lines = Vec::new();
    for host in ["door", "flat"] {
        let l: Lines = Arc::default();
        peers.push(sl.peer(host, Some(&format!("{host}-main")), &l)?);
        lines.push(l);
    }
    let (door, flat) = (&lines[0], &lines[1]);
    let start = Instant::now();
    let up = |d: Duration| loop {
        let a = rendered_after(door, "flat-main", start, start).is_some_and(|t| t > start);
        let b = rendered_after(flat, "door-main", start, start).is_some_and(|t| t > start);
        if a && b {
            return true;
        }
        if start.elapsed() > d {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    anyhow::ensure!(up(Duration::from_secs(30)), "the first call did not come up");
    std::thread::sleep(Duration::from_secs(2));
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut figures = CutFigures { recovered: Vec::new(), stuck: 0 };
    for i in 0..cuts {
        let len = fixed.unwrap_or_else(|| Duration::from_millis(500 + rand() % 9_500));
        let cut_from = Instant::now();
        lab.apply("door", Fault::Cut)?;
        std::thread::sleep(len);
        lab.clear("door")?;
        let restored = Instant::now();
        let deadline = restored + Duration::from_secs(30);
        let took = loop {
            let a = rendered_after(door, "flat-main", restored, cut_from);
            let b = rendered_after(flat, "door-main", restored, cut_from);
            if let (Some(a), Some(b)) = (a, b) {
                break Some(a.max(b).saturating_duration_since(restored));
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match took {
            Some(d) => {
                println!(
                    "  cut {i}: {:.1} s, both sides render again {:.0} ms after the restore",
                    len.as_secs_f64(),
                    d.as_secs_f64() * 1e3
                );
                figures.recovered.push(d);
            }
            None => {
                let side = match (
                    rendered_after(door, "flat-main", restored, cut_from),
                    rendered_after(flat, "door-main", restored, cut_from),
                ) {
                    (None, None) => "neither side",
                    (None, _) => "the door (playing flat-main)",
                    _ => "the flat (playing door-main)",
                };
                println!(
                    "  cut {i}: {:.1} s, {side} did NOT render again within 30 s (restored {} s before {})",
                    len.as_secs_f64(),
                    restored.elapsed().as_secs(),
                    httpdate::fmt_http_date(std::time::SystemTime::now())
                );
                figures.stuck += 1;
            }
        }
        // Let the call settle (and the stall watch see frames) before the next cut.
        std::thread::sleep(Duration::from_millis(1500 + rand() % 1000));
    }
    drop(peers);
    Ok(figures)
}

/// The door's faults for each media path: nothing (UDP); UDP dropped (ICE-TCP); UDP and
/// TCP to the media port dropped (TURN over TLS on 443).
const PATHS: [(&str, &[Fault]); 3] =
    [("udp", &[]), ("ice-tcp", &[Fault::CutUdp]), ("turn-tls", &[Fault::CutUdp, Fault::CutTcpPort(7882)])];

/// First frame over each media path: a "flat" peer waits in the room; a "door" peer joins
/// and publishes, `n` times over each of [`PATHS`] (the server hands out TURN credentials
/// for a coturn in every case, as a deployment with TURN would). Per call: from the flat
/// learning of the stream (it starts playing at once) to the flat rendering its first
/// frame. Returns (path, times).
pub fn first_frame_by_path(n: usize) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    let sl = ServerLab::start_with("paths", 5, true)?;
    let flat: Lines = Arc::default();
    let _flat = sl.peer("flat", None, &flat)?;
    let mut out = Vec::new();
    for (path, faults) in PATHS {
        let mut times = Vec::new();
        for i in 0..n {
            for f in faults {
                sl.lab.apply("door", *f)?;
            }
            let since = Instant::now();
            let stream = format!("door-{path}-{i}");
            let door = sl.peer("door", Some(&stream), &Arc::default())?;
            let deadline = since + Duration::from_secs(20);
            let took = loop {
                let l = flat.lock().map_err(|_| anyhow::anyhow!("lines poisoned"))?;
                let at = |event: &str| {
                    l.iter()
                        .find(|(t, v)| *t >= since && v["event"] == event && v["stream_id"] == stream.as_str())
                        .map(|(t, _)| *t)
                };
                if let (Some(added), Some(first)) = (at("stream"), at("first_frame")) {
                    break Some(first.saturating_duration_since(added));
                }
                drop(l);
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            match took {
                Some(d) => times.push(d),
                None => println!("  {path} call {i}: no first frame within 20 s"),
            }
            drop(door);
            sl.lab.clear("door")?;
            std::thread::sleep(Duration::from_millis(500));
        }
        out.push((path, times));
    }
    Ok(out)
}

/// Media under 1% loss on the publisher's link, over each path: the flat's rendered frames
/// per second (from its 3 s quality reports) and its video stalls over `secs`. Returns
/// (path, mean render fps, stalls).
pub fn loss_by_path(secs: u64) -> anyhow::Result<Vec<(&'static str, f64, usize)>> {
    let sl = ServerLab::start_with("paths-loss", 5, true)?;
    let flat: Lines = Arc::default();
    let _flat = sl.peer("flat", None, &flat)?;
    let mut out = Vec::new();
    for (path, faults) in PATHS {
        for f in faults {
            sl.lab.apply("door", *f)?;
        }
        let stream = format!("door-loss-{path}");
        let door = sl.peer("door", Some(&stream), &Arc::default())?;
        let started = Instant::now();
        let up = loop {
            if rendered_after(&flat, &stream, started, started).is_some_and(|t| t > started) {
                break true;
            }
            if started.elapsed() > Duration::from_secs(20) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        anyhow::ensure!(up, "no first frame over {path}");
        sl.lab.apply("door", Fault::Loss(1))?;
        let since = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let l = flat.lock().map_err(|_| anyhow::anyhow!("lines poisoned"))?;
        let mine = |v: &Value| v["stream_id"] == stream.as_str();
        // Quality windows wholly inside the loss.
        let fps: Vec<f64> = l
            .iter()
            .filter(|(t, v)| *t >= since + Duration::from_millis(3200) && v["event"] == "quality" && mine(v))
            .filter_map(|(_, v)| v["render_fps"].as_f64())
            .collect();
        let stalls = l.iter().filter(|(t, v)| *t >= since && v["event"] == "video_stall" && mine(v)).count();
        drop(l);
        let mean = if fps.is_empty() { 0.0 } else { fps.iter().sum::<f64>() / fps.len() as f64 };
        out.push((path, mean, stalls));
        drop(door);
        sl.lab.clear("door")?;
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(out)
}
