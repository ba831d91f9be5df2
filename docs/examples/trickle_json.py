"""Trickle ICE over a signaling channel, in both wire formats.

Alice writes SDP attribute lines (RFC 8839 ``a=ice-ufrag``, ``a=ice-pwd``, ``a=candidate``,
RFC 8840 ``a=end-of-candidates``); Bob writes JSON (his parameters, then W3C
``RTCIceCandidateInit`` objects, then the end-of-candidates object with an empty candidate).
Each side sends as soon as something is gathered and calls ``connect()`` right away, before it
knows anything about the peer.  The signaling channel here shuffles messages (keeping only
end-of-candidates last): candidates may come before the parameters, and it still works.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


# -- the two wire formats --------------------------------------------------------------------


def to_sdp_lines(event: trice.Event, agent: trice.Agent) -> list[str]:
    """Alice's format: SDP attribute lines."""
    if isinstance(event, trice.GatheringStateChanged):
        if event.state is trice.GatheringState.GATHERING:
            params = agent.local_parameters
            return [f"a=ice-ufrag:{params.ufrag}", f"a=ice-pwd:{params.pwd}"]
        if event.state is trice.GatheringState.COMPLETE:
            return ["a=end-of-candidates"]
    if isinstance(event, trice.CandidateGathered):
        return ["a=" + event.candidate.to_sdp()]
    return []


def to_json_messages(event: trice.Event, agent: trice.Agent) -> list[str]:
    """Bob's format: JSON objects, as a browser's RTCIceCandidate.toJSON() writes them."""
    if isinstance(event, trice.GatheringStateChanged):
        if event.state is trice.GatheringState.GATHERING:
            params = agent.local_parameters
            return [json.dumps({"ufrag": params.ufrag, "pwd": params.pwd})]
        if event.state is trice.GatheringState.COMPLETE:
            ufrag = agent.local_parameters.ufrag  # (its generation: see the restart guide)
            end = trice.end_of_candidates_json(
                sdp_mid="0", sdp_mline_index=0, username_fragment=ufrag
            )
            return [json.dumps(end)]
    if isinstance(event, trice.CandidateGathered):
        # (A browser needs sdpMid or sdpMLineIndex: the media section the candidate is for.)
        init = event.candidate.to_json(sdp_mid="0", sdp_mline_index=0)
        return [json.dumps(init)]
    return []


class Receiver:
    """Feeds whatever arrives, in either format, to an agent."""

    def __init__(self, agent: trice.Agent) -> None:
        self.agent = agent
        self.ufrag: str | None = None
        self.pwd: str | None = None

    def feed(self, message: str) -> None:
        if message.startswith("{"):
            obj = json.loads(message)
            if "ufrag" in obj:
                self.agent.set_remote_parameters(obj["ufrag"], obj["pwd"])
            else:
                # None for {"candidate": ""}: end-of-candidates, of the generation its
                # usernameFragment names (if it names one).
                self.agent.add_remote_candidate(
                    trice.Candidate.from_json(obj),
                    username_fragment=obj.get("usernameFragment"),
                )
        elif message.startswith("a=ice-ufrag:"):
            self.ufrag = message.removeprefix("a=ice-ufrag:")
        elif message.startswith("a=ice-pwd:"):
            self.pwd = message.removeprefix("a=ice-pwd:")
        elif message == "a=end-of-candidates":
            self.agent.add_remote_candidate(None)
        elif message.startswith("a=candidate:"):
            self.agent.add_remote_candidate(trice.Candidate.from_sdp(message))
        if self.ufrag and self.pwd:
            self.agent.set_remote_parameters(self.ufrag, self.pwd)
            self.ufrag = self.pwd = None


# -- a signaling channel that reorders -------------------------------------------------------


async def shuffling_relay(
    inbox: trio.MemoryReceiveChannel[str], deliver: Receiver, rng: random.Random, log: list[str]
) -> None:
    """Hold messages until end-of-candidates, then deliver them shuffled (that one last)."""
    held: list[str] = []
    async for message in inbox:
        if message == "a=end-of-candidates" or '"candidate": ""' in message:
            rng.shuffle(held)
            for item in [*held, message]:
                log.append(item)
                deliver.feed(item)
            held.clear()
        else:
            held.append(message)


async def announce(
    agent: trice.Agent,
    outbox: trio.MemorySendChannel[str],
    encode: Callable[[trice.Event, trice.Agent], list[str]],
) -> None:
    """Send each gathered candidate as soon as the agent reports it (trickle, RFC 8838).

    Subscribing replays what already happened, so nothing gathered before this task started
    is missed.
    """
    async with agent.subscribe() as events:
        async for event in events:
            for message in encode(event, agent):
                await outbox.send(message)
            if isinstance(event, trice.GatheringStateChanged) and (
                event.state is trice.GatheringState.COMPLETE
            ):
                return


async def main() -> None:
    rng = random.Random(8838)
    config = trice.AgentConfig(network=LOOPBACK)
    alice_log: list[str] = []
    async with (
        trice.open_agent(config, controlling=True) as alice,
        trice.open_agent(config, controlling=False) as bob,
        trio.open_nursery() as nursery,
    ):
        to_bob_send, to_bob_recv = trio.open_memory_channel[str](64)
        to_alice_send, to_alice_recv = trio.open_memory_channel[str](64)
        nursery.start_soon(shuffling_relay, to_bob_recv, Receiver(bob), rng, alice_log)
        nursery.start_soon(shuffling_relay, to_alice_recv, Receiver(alice), rng, [])
        nursery.start_soon(announce, alice, to_bob_send, to_sdp_lines)
        nursery.start_soon(announce, bob, to_alice_send, to_json_messages)

        connections: dict[str, trice.Connection] = {}

        async def connect(name: str, agent: trice.Agent) -> None:
            connections[name] = await agent.connect()  # before any candidate has arrived

        with trio.fail_after(10):
            async with trio.open_nursery() as connecting:
                connecting.start_soon(connect, "alice", alice)
                connecting.start_soon(connect, "bob", bob)
        print("bob heard, in this order:")
        for line in alice_log:
            print("   ", line)
        await connections["alice"].send(b"trickled")
        print("trickle: connected, bob got", await connections["bob"].receive())
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
