"""GStreamer webrtcbin (libnice ICE) as a WHIP publisher or a WHEP player, for callbox's
interop tests. libnice sends consent/keepalive checks only every ~25 s while media flows,
so this client is dropped by a server that counts only STUN as a sign of life.

    webrtcbin_client.py publish URL TOKEN SECONDS
    webrtcbin_client.py play URL TOKEN SECONDS

Prints one JSON line per second: {"t": seconds, "state": connection state, "frames": video
frames decoded (play) or sent (publish)}, then {"done": true, "failed": bool}.
Run it with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-plugins-bad-1.0,
gstreamer1.0-nice).
"""

import json
import sys
import time
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PUBLISH = (
    "webrtcbin name=w bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! "
    "identity name=count ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=300 ! "
    "video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 pt=102 ! "
    "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000 ! w. "
    "audiotestsrc is-live=true wave=silence ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt=111 ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! w."
)


def post(url, token, sdp):
    req = urllib.request.Request(url, data=sdp.encode(), method="POST")
    req.add_header("Content-Type", "application/sdp")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def main():
    mode, url, token, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    Gst.init(None)
    loop = GLib.MainLoop()
    frames = [0]
    failed = [False]
    if mode == "publish":
        pipe = Gst.parse_launch(PUBLISH)
        w = pipe.get_by_name("w")

        def counted(_identity, _buf):
            frames[0] += 1

        pipe.get_by_name("count").connect("handoff", counted)
    else:
        pipe = Gst.Pipeline.new("play")
        w = Gst.ElementFactory.make("webrtcbin", "w")
        w.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        pipe.add(w)
        for caps in (
            "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
            "packetization-mode=(string)1,profile-level-id=(string)42e01f",
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000",
        ):
            w.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, Gst.Caps.from_string(caps))

        def on_pad(_w, pad):
            if pad.direction != Gst.PadDirection.SRC:
                return
            name = pad.get_current_caps().to_string()
            if "video" in name:
                desc = "rtph264depay ! avdec_h264 ! identity name=frames signal-handoffs=true ! fakesink sync=false"
            else:
                desc = "rtpopusdepay ! opusdec ! fakesink sync=false"
            branch = Gst.parse_bin_from_description("queue ! " + desc, True)
            pipe.add(branch)
            branch.sync_state_with_parent()
            pad.link(branch.get_static_pad("sink"))
            ident = branch.get_by_name("frames")
            if ident is not None:
                ident.connect("handoff", lambda *_: frames.__setitem__(0, frames[0] + 1))

        w.connect("pad-added", on_pad)

    def on_gathered(*_):
        if w.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        offer = w.get_property("local-description").sdp.as_text()
        answer = post(url, token, offer)
        _, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        w.emit("set-remote-description", desc, Gst.Promise.new())

    w.connect("notify::ice-gathering-state", on_gathered)

    def on_offer(promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        w.emit("set-local-description", offer, Gst.Promise.new())

    def negotiate(_w):
        w.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    w.connect("on-negotiation-needed", negotiate)
    pipe.set_state(Gst.State.PLAYING)
    start = time.monotonic()

    def tick():
        state = w.get_property("connection-state").value_nick
        if state == "failed":
            failed[0] = True
        print(json.dumps({"t": round(time.monotonic() - start, 1), "state": state, "frames": frames[0]}), flush=True)
        if time.monotonic() - start >= seconds:
            loop.quit()
            return False
        return True

    GLib.timeout_add(1000, tick)
    loop.run()
    print(json.dumps({"done": True, "failed": failed[0]}), flush=True)
    pipe.set_state(Gst.State.NULL)


if __name__ == "__main__":
    main()
