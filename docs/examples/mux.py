"""One UDP port for many agents: a server's agents share a mux, its clients do not.

A server that talks to many peers (a media server, a game server) opens one mux and opens
each peer's agent on it: every agent signals the same host candidate, and the mux hands each
datagram to the agent it is for.  On loopback here; on a server, bind the mux to the
server's address and a fixed port (and give a 1:1 NAT's public address in
``NetworkConfig.external_addresses``).
"""

from __future__ import annotations

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


def signal(here: trice.Agent, there: trice.Agent) -> None:
    """Tell ``here`` what signaling would have carried from ``there``."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def serve_one(mux: trice.UdpMux, name: str, ports: list[int]) -> None:
    """One client and its agent on the server's mux: connect, and echo one datagram."""
    config = trice.AgentConfig(network=LOOPBACK)
    async with (
        trice.open_agent(config, controlling=False, mux=mux) as server,
        trice.open_agent(config, controlling=True) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        ports.append(server.local_candidates[0].port)  # (the mux's port, for every client)
        signal(server, client)
        signal(client, server)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.connect)
                to_server = await client.connect()
            to_client = await server.connect()
            await to_server.send(f"hello from {name}".encode())
            await to_client.send(b"echo: " + await to_client.receive())
            print(f"{name} got:", (await to_server.receive()).decode())


async def main() -> None:
    async with trice.open_udp_mux("127.0.0.1") as mux:
        ports: list[int] = []
        async with trio.open_nursery() as nursery:
            for name in ("alice", "bob", "carol"):
                nursery.start_soon(serve_one, mux, name, ports)
        print("one port for all:", set(ports) == {mux.local_address[1]})
        print("nothing unroutable:", mux.statistics().unroutable == 0)


if __name__ == "__main__":
    trio.run(main)
