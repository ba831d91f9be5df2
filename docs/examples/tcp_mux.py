"""One TCP port for many agents: a server's agents share a UDP mux and a TCP mux.

Each of the server's agents signals the same two candidates, a UDP one at the UDP mux's
address and a passive ICE-TCP one at the TCP mux's; the TCP mux hands each connection to
the agent its first check asks for.  The clients here offer only an active TCP candidate
(as if their network let only TCP out).  On loopback here; on a server, bind both muxes to
the server's address and fixed ports (443 for TCP gets through most firewalls).
"""

from __future__ import annotations

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)
CLIENT = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback,
    include_loopback=True,
    ipv6=False,
    tcp_candidates=(trice.TcpType.ACTIVE,),
)


def signal(here: trice.Agent, there: trice.Agent, *, tcp_only: bool = False) -> None:
    """Tell ``here`` what signaling would have carried from ``there``."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        if candidate.protocol == "tcp" or not tcp_only:
            here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def serve_one(muxes: tuple[trice.UdpMux, trice.TcpMux], name: str) -> None:
    """One client and its agent on the server's muxes: connect, and echo one datagram."""
    async with (
        trice.open_agent(
            trice.AgentConfig(network=LOOPBACK), controlling=False, mux=muxes
        ) as server,
        trice.open_agent(trice.AgentConfig(network=CLIENT), controlling=True) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        signal(server, client, tcp_only=True)  # (no UDP gets through for this client)
        signal(client, server, tcp_only=True)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.connect)
                to_server = await client.connect()
            to_client = await server.connect()
            await to_server.send(f"hello from {name}".encode())
            await to_client.send(b"echo: " + await to_client.receive())
            print(f"{name} got:", (await to_server.receive()).decode())
            pair = to_client.selected_pair
            print(f"  over {pair.local.protocol} at {pair.local.address}:{pair.local.port}")


async def main() -> None:
    async with trice.open_udp_mux("127.0.0.1") as udp, trice.open_tcp_mux("127.0.0.1") as tcp:
        async with trio.open_nursery() as nursery:
            for name in ("alice", "bob", "carol"):
                nursery.start_soon(serve_one, (udp, tcp), name)
        print("the TCP mux's port:", tcp.local_address[1])
        stats = tcp.statistics()
        print(f"connections routed: {stats.routed}, unroutable: {stats.unroutable}")


if __name__ == "__main__":
    trio.run(main)
