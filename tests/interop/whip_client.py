"""An independent WHIP/WHEP peer (aiortc) for callbox's interop tests.

    whip_client.py publish URL TOKEN SECONDS   publish a moving test pattern (H.264) and silence
    whip_client.py play URL TOKEN SECONDS      play a stream, count decoded video frames

Prints one JSON line with what happened. ICE is limited to 127.0.0.1.
"""

import asyncio
import json
import sys
import urllib.error
import urllib.request

import aioice.ice

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

import av  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack  # noqa: E402


class Pattern(VideoStreamTrack):
    """320x240 frames whose brightness moves, so every frame differs."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(320, 240, "yuv420p")
        self.n += 1
        for i, plane in enumerate(frame.planes):
            value = (self.n * 7) % 256 if i == 0 else 128
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def prefer_h264(transceiver):
    caps = RTCRtpSender.getCapabilities("video")
    transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType == "video/H264"])


def post(url, token, sdp):
    req = urllib.request.Request(url, data=sdp.encode(), method="POST")
    req.add_header("Content-Type", "application/sdp")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Location"), r.read().decode()


def delete(base, location):
    req = urllib.request.Request(base + location, method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def connected(pc, limit=10.0):
    for _ in range(int(limit * 20)):
        if pc.connectionState == "connected":
            return True
        await asyncio.sleep(0.05)
    return False


async def main(mode, url, token, seconds):
    base = url.split("/whip/")[0].split("/whep/")[0]
    # No ICE servers: aiortc's default is a public STUN server, whose name lookup and
    # requests leave the machine and, without a route out, hold the offer for up to 35 s.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    result = {"mode": mode}
    frames = {"video": 0, "audio": 0}
    if mode == "publish":
        prefer_h264(pc.addTransceiver(Pattern(), direction="sendonly"))
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    else:
        prefer_h264(pc.addTransceiver("video", direction="recvonly"))
        pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            async def read():
                while True:
                    try:
                        await track.recv()
                    except Exception:
                        return
                    frames[track.kind] += 1

            asyncio.ensure_future(read())

    await pc.setLocalDescription(await pc.createOffer())
    status, location, answer = post(url, token, pc.localDescription.sdp)
    result.update(status=status, location=location)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    result["connected"] = await connected(pc)
    await asyncio.sleep(seconds)
    if mode == "play":
        video = answer.split("m=video")[1].split("m=audio")[0] if "m=video" in answer else ""
        result["video_frames"] = frames["video"]
        result["audio_frames"] = frames["audio"]
        result["video_codec"] = "H264" if "H264/90000" in video else "other"
    result["delete_status"] = delete(base, location)
    await pc.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
