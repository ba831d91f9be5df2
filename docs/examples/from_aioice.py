"""Coming from aioice: the usual two-``Connection`` exchange, written with trice.

With aioice one would write (asyncio)::

    alice = aioice.Connection(ice_controlling=True)
    bob = aioice.Connection(ice_controlling=False)
    await alice.gather_candidates()
    await bob.gather_candidates()
    # signaling: remote_username / remote_password, then each candidate, then None
    bob.remote_username, bob.remote_password = alice.local_username, alice.local_password
    for c in alice.local_candidates:
        await bob.add_remote_candidate(aioice.Candidate.from_sdp(c.to_sdp()))
    await bob.add_remote_candidate(None)
    ...  # and the same the other way round
    await asyncio.gather(alice.connect(), bob.connect())
    await alice.send(b"ping")
    print(await bob.recv())
    await alice.close()
    await bob.close()

Here is the same with trice (trio), on loopback only.  Signaling carries SDP attribute lines
as aiortc would put them in its SDP: ``"a=" + candidate.to_sdp()``, since trice's
``to_sdp()`` already starts with ``candidate:``.
"""

from __future__ import annotations

import trio

import trice

# Loopback only (aioice never gathers on loopback; trice does when asked to).
LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback,
    include_loopback=True,
    ipv6=False,
)


def offer(agent: trice.Agent) -> list[str]:
    """What signaling carries from ``agent``: SDP attribute lines."""
    params = agent.local_parameters  # (aioice: local_username, local_password)
    lines = [f"a=ice-ufrag:{params.ufrag}", f"a=ice-pwd:{params.pwd}"]
    lines += ["a=" + candidate.to_sdp() for candidate in agent.local_candidates]
    lines.append("a=end-of-candidates")
    return lines


def answer(agent: trice.Agent, lines: list[str]) -> None:
    """Give ``agent`` the peer's lines (aioice: remote_username, remote_password and
    ``await add_remote_candidate(...)``; in trice these are plain calls, not coroutines)."""
    ufrag = pwd = ""
    for line in lines:
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.removeprefix("a=ice-ufrag:")
        elif line.startswith("a=ice-pwd:"):
            pwd = line.removeprefix("a=ice-pwd:")
    agent.set_remote_parameters(ufrag, pwd)  # (and lite=True for an ICE-lite peer)
    for line in lines:
        if line.startswith("a=candidate:"):
            # (from_sdp takes the line with or without "a=" and "candidate:")
            agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        elif line == "a=end-of-candidates":
            agent.add_remote_candidate(None)  # as aioice's add_remote_candidate(None)


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    # aioice.Connection(ice_controlling=...) + gather_candidates(): gathering starts here.
    async with (
        trice.open_agent(config, controlling=True) as alice,
        trice.open_agent(config, controlling=False) as bob,
    ):
        await alice.wait_gathering_complete()
        await bob.wait_gathering_complete()
        alice_lines, bob_lines = offer(alice), offer(bob)
        for line in alice_lines:
            print("alice signals:", line)
        answer(bob, alice_lines)
        answer(alice, bob_lines)

        # aioice: asyncio.gather(alice.connect(), bob.connect()); here connect() returns
        # the connection that carries the data.
        connections: dict[str, trice.Connection] = {}

        async def connect(name: str, agent: trice.Agent) -> None:
            connections[name] = await agent.connect()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect, "alice", alice)
                nursery.start_soon(connect, "bob", bob)
        to_bob, to_alice = connections["alice"], connections["bob"]
        pair = to_bob.selected_pair  # (aioice has no public equivalent)
        print(f"selected: {pair.local.address} -> {pair.remote.address}")

        # aioice: send() / recv()
        await to_bob.send(b"ping")
        print("bob got:", (await to_alice.receive()).decode())
        await to_alice.send(b"pong")
        print("alice got:", (await to_bob.receive()).decode())
    # aioice: close(); here leaving the block closed both agents.  Where aioice raises
    # ConnectionError, a closed connection raises trio.ClosedResourceError.
    try:
        await to_bob.send(b"too late")
    except trio.ClosedResourceError:
        print("send after close: trio.ClosedResourceError")
    print("alice's state:", alice.connection_state.value)


if __name__ == "__main__":
    trio.run(main)
