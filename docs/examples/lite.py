"""ICE-lite (RFC 8445 §2.5): a lite agent answers checks and accepts nomination, nothing more.

A lite agent has host candidates only and sends no checks of its own; a server with a public
address can use it to be reachable cheaply.  The full agent learns ``lite=True`` from
signaling and takes the controlling role, whatever it was opened with.
"""

from __future__ import annotations

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


async def main() -> None:
    async with (
        # Both ask to be controlled; the full agent will switch when it learns the peer is lite.
        trice.open_agent(trice.AgentConfig(network=LOOPBACK), controlling=False) as full,
        trice.open_agent(trice.AgentConfig(network=LOOPBACK, lite=True), controlling=True) as lite,
    ):
        await full.wait_gathering_complete()
        await lite.wait_gathering_complete()
        assert lite.local_parameters.lite and not lite.controlling

        # Signaling carries the lite flag (SDP: a session-level "a=ice-lite" line).
        params = lite.local_parameters
        full.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        for candidate in lite.local_candidates:
            full.add_remote_candidate(candidate)
        full.add_remote_candidate(None)
        params = full.local_parameters
        lite.set_remote_parameters(params.ufrag, params.pwd)
        for candidate in full.local_candidates:
            lite.add_remote_candidate(candidate)
        lite.add_remote_candidate(None)
        print(f"controlling: full agent {full.controlling}, lite agent {lite.controlling}")

        connections: dict[str, trice.Connection] = {}

        async def connect(name: str, agent: trice.Agent) -> None:
            connections[name] = await agent.connect()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect, "full", full)
                nursery.start_soon(connect, "lite", lite)
        await connections["full"].send(b"hi lite")
        print("lite got:", await connections["lite"].receive())
        print("checks sent by the lite agent:", lite.statistics().checks_sent)
        # With no checks of its own, the lite agent is done once it has its pair (§8.2).
        print("lite:", lite.connection_state.value)


if __name__ == "__main__":
    trio.run(main)
