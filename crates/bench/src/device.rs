//! The device daemon's footprint: `callbox device` as a child process (test pattern at
//! 640x480@30 through x264enc, fake sinks, sim GPIO) against a child server; its RSS and CPU
//! read from /proc while logged in and idle, then in a kiosk call with one peer publishing
//! 640x480@30.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use callbox::device::control::{self, Request};
use callbox::device::status::Status;
use callbox::engine::PublishChannel;
use callbox::media::MediaConfig;

use super::media::{ServerProc, engine, proc_cpu, user};
use super::secret;
use callbox::server::DEV_APP_ID as DEMO_APP_ID;

/// One phase's figures.
pub struct Footprint {
    /// What the daemon was doing.
    pub phase: &'static str,
    /// Resident set size at the end, MiB.
    pub rss_mib: f64,
    /// Peak RSS so far, MiB.
    pub peak_mib: f64,
    /// CPU over the window, fraction of one core.
    pub cpu: f64,
}

/// A `callbox device` child, killed on drop.
pub(super) struct Daemon(pub(super) Child);

/// Starts `callbox device --config cfg`, quiet.
pub(super) fn spawn(cfg: &Path) -> anyhow::Result<Daemon> {
    let child = Command::new(crate::callbox_exe()?)
        .env_remove("CALLBOX_BIN")
        .args(["device", "--config", cfg.to_str().unwrap_or_default()])
        .env("RUST_LOG", "warn")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting callbox device")?;
    Ok(Daemon(child))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Process `pid`'s RSS and peak RSS, MiB.
pub(crate) fn rss(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

pub(super) async fn wait_status(socket: &Path, what: &str, pred: impl Fn(&Status) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = control::request(socket, &Request::Status).await
            && r.status.as_ref().is_some_and(&pred)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the daemon did not reach: {what}")
}

async fn measure(pid: u32, phase: &'static str, window: Duration) -> Footprint {
    let c0 = proc_cpu(pid);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu = (proc_cpu(pid) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let (rss_mib, peak_mib) = rss(pid);
    Footprint { phase, rss_mib, peak_mib, cpu }
}

/// Idle and in-call figures over `window` each.
pub async fn footprint(window: Duration) -> anyhow::Result<Vec<Footprint>> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    let dir = std::env::temp_dir().join(format!("callbox-bench-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("control.sock");
    let cfg = dir.join("device.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nurl = \"{}\"\napp_id = {DEMO_APP_ID}\napp_sign = \"{}\"\n[room]\nroom_id = \"bench-device\"\n\
             user_id = \"kiosk\"\n[call]\nmode = \"kiosk\"\n[video]\nsource = \"test\"\nwidth = 640\nheight = 480\nfps = 30\n\
             bitrate_kbps = 1000\n[audio]\nsource = \"test\"\nsink = \"fake\"\n[display]\nsink = \"fake\"\n[media]\n\
             bind = \"127.0.0.1\"\n[gpio]\nbackend = \"sim\"\n[control]\nsocket = \"{}\"\n",
            server.url(),
            secret(),
            socket.display()
        ),
    )?;
    let daemon = spawn(&cfg)?;
    let pid = daemon.0.id();
    wait_status(&socket, "logged in", |s| s.room.state == callbox::engine::RoomState::Connected).await?;
    let idle = measure(pid, "logged in, idle", window).await;

    let mut media = MediaConfig::small();
    (media.width, media.height, media.fps, media.bitrate_kbps) = (640, 480, 30, 1000);
    let (peer, _events) = engine(&server.url(), media)?;
    peer.login_room("bench-device", user("desk"), Default::default()).await?;
    peer.start_publishing_stream("desk-main", PublishChannel::Main).await?;
    wait_status(&socket, "in a call, decoding", |s| {
        s.call == "in_call" && s.playing.iter().any(|p| p.frames_decoded > 30)
    })
    .await?;
    let call =
        measure(pid, "in a call: publishing 640x480@30 (x264enc) and playing one 640x480@30 stream", window).await;
    peer.destroy().await;
    drop(daemon);
    let bare = bare_pipeline(&dir, window).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![idle, call, bare])
}

/// The same media work without the daemon, side by side: one `gst-launch-1.0` with the
/// daemon's capture and encoders into fake sinks (test pattern and tone, 640x480@30 x264enc
/// at 1000 kbps, Opus 32 kbit/s) and a decoder fed, at its real rate, a recording of a peer's
/// 640x480@30 stream made first. No WebRTC, no SRTP, no signalling: what is left of the
/// daemon's figure is callbox's own cost. (The peer's audio is not decoded here.)
async fn bare_pipeline(dir: &Path, window: Duration) -> anyhow::Result<Footprint> {
    let rec = dir.join("peer.mkv");
    let frames = 30 * (window.as_secs() + 10);
    let record = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 ! \
         videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=30 ! h264parse ! \
         matroskamux ! filesink location={}",
        rec.display()
    );
    let ok = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(record.split_whitespace())
        .stdout(Stdio::null())
        .status()
        .context("gst-launch-1.0")?
        .success();
    anyhow::ensure!(ok, "recording the peer's stream failed");
    let run = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 ! timeoverlay ! \
         queue max-size-buffers=2 leaky=downstream ! videoscale ! videorate ! videoconvert ! \
         x264enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=30 byte-stream=true ! \
         h264parse config-interval=-1 ! rtph264pay pt=102 mtu=1200 config-interval=-1 ! fakesink sync=false \
         audiotestsrc is-live=true wave=sine freq=440 volume=0.8 ! audioconvert ! audioresample ! \
         audio/x-raw,rate=48000,channels=1 ! level interval=100000000 ! audioconvert ! \
         opusenc audio-type=voice bitrate=32000 frame-size=20 inband-fec=true ! rtpopuspay pt=111 ! fakesink sync=false \
         filesrc location={} ! matroskademux ! h264parse ! avdec_h264 ! videoconvert ! fakesink sync=true",
        rec.display()
    );
    let mut child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(run.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("gst-launch-1.0")?;
    tokio::time::sleep(Duration::from_secs(3)).await; // past start-up, as the daemon was
    let f = measure(
        child.id(),
        "for comparison, not the daemon: the bare GStreamer pipelines of that call (one gst-launch-1.0, no WebRTC)",
        window,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    Ok(f)
}
