"""The ICE part of an SDP offer/answer with a browser's RTCPeerConnection.

trice is the ICE agent; the rest of the SDP (DTLS fingerprint and setup role, SCTP or RTP)
is the application's.  Here a browser offers a data channel and a trice agent answers: it
reads the ICE lines of the offer (a canned one, as Chromium 156 wrote it on loopback in
``tests/test_chromium_interop.py``), writes the ICE lines of its answer, and trickles its
candidates as the browser's ``addIceCandidate`` takes them.  No browser is started and
nothing is sent: the agent gathers on loopback, then closes.
"""

from __future__ import annotations

import dataclasses
import json

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)

#: A browser's offer (one data channel, BUNDLE), as ``pc.localDescription.sdp`` gives it.
CHROMIUM_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4215775240449105457 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=candidate:3018817251 1 udp 2122260223 127.0.0.1 36496 typ host"
        " generation 0 ufrag sXkS network-id 1 network-cost 50",
        "a=candidate:2348401727 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"
        " generation 0 ufrag sXkS network-id 1 network-cost 50",
        "a=ice-ufrag:sXkS",
        "a=ice-pwd:hK4Pn3Gm2mTRt8DlLcTOVbyG",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "a=mid:0",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        "",
    ]
)

#: A candidate the browser trickled later (``event.candidate.toJSON()``): a server-reflexive
#: one, its related address hidden as browsers do.
CHROMIUM_TRICKLED = json.dumps(
    {
        "candidate": "candidate:4106577299 1 udp 1677729535 203.0.113.7 36496 typ srflx"
        " raddr 0.0.0.0 rport 0 generation 0 ufrag sXkS network-id 1 network-cost 50",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "sXkS",
    }
)


@dataclasses.dataclass
class BrowserIce:
    """The ICE part of the browser's SDP (its first media section: one with BUNDLE)."""

    ufrag: str
    pwd: str
    candidates: list[trice.Candidate]
    ended: bool  # a=end-of-candidates (Chromium writes it only after a null candidate)


def read_ice(sdp: str) -> BrowserIce:
    values: dict[str, str] = {}
    candidates: list[trice.Candidate] = []
    ended = False
    media = 0
    for line in sdp.splitlines():
        if line.startswith("m="):
            media += 1
            if media > 1:
                break
        elif line.startswith(("a=ice-ufrag:", "a=ice-pwd:")):
            name, _, value = line[2:].partition(":")
            values[name] = value
        elif line.startswith("a=candidate:"):
            candidates.append(trice.Candidate.from_sdp(line))
        elif line == "a=end-of-candidates":
            ended = True
    return BrowserIce(values["ice-ufrag"], values["ice-pwd"], candidates, ended)


def ice_lines(agent: trice.Agent, *, end: bool = False) -> list[str]:
    """The ICE lines of trice's answer, for its media section (``a=ice-lite``, were the
    agent lite, would go at session level)."""
    params = agent.local_parameters
    lines = [f"a=ice-ufrag:{params.ufrag}", f"a=ice-pwd:{params.pwd}", "a=ice-options:trickle"]
    lines += [f"a={candidate.to_sdp()}" for candidate in agent.local_candidates]
    return [*lines, "a=end-of-candidates"] if end else lines


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    # The offerer controls (JSEP): a trice agent that answers is controlled.
    async with trice.open_agent(config, controlling=False) as agent:
        browser = read_ice(CHROMIUM_OFFER)
        agent.set_remote_parameters(browser.ufrag, browser.pwd)
        for candidate in browser.candidates:
            agent.add_remote_candidate(candidate)
            kind = f"{candidate.type.value} {candidate.protocol} {candidate.address}"
            print(f"offer: {kind}:{candidate.port} {dict(candidate.extensions)}")
        if browser.ended:
            agent.add_remote_candidate(None)

        # Later, over the signaling channel: a candidate the browser trickled.
        init = json.loads(CHROMIUM_TRICKLED)
        trickled = trice.Candidate.from_json(init)  # (None for its end-of-candidates)
        agent.add_remote_candidate(trickled, username_fragment=init.get("usernameFragment"))
        if trickled is not None:
            related = f"{trickled.related_address}:{trickled.related_port}"
            print(f"trickled: {trickled.type.value} ufrag {trickled.ufrag} raddr {related}")

        # The answer, once gathering is done (or at once, and trickle the candidates).
        await agent.wait_gathering_complete()
        print("answer:")
        for line in ice_lines(agent, end=True):
            print("   ", line)
        # Or trickled, as the browser's addIceCandidate() takes them.
        ufrag = agent.local_parameters.ufrag
        for candidate in agent.local_candidates:
            init = candidate.to_json(sdp_mid="0", sdp_mline_index=0, username_fragment=ufrag)
            print("to the browser:", sorted(init))
        print("browser_sdp: remote candidates held:", len(agent.remote_candidates))


if __name__ == "__main__":
    trio.run(main)
