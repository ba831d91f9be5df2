"""A mux behind a NAT: the mux asks the STUN server for all its agents.

Three agents open on one mux, with a STUN server.  The mux sends one Binding request, from
its own socket, and each agent gets a srflx candidate at the public address it learns.

To run on loopback, this example brings its own STUN server. It answers as a server on the
far side of a NAT would: with a documentation address (203.0.113.7) and the mux's port as
the mapping.  In real use, give a real STUN server's URL and bind the mux to the server's
address.
"""

from __future__ import annotations

import trio

import trice
from trice import stun

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)
PUBLIC = "203.0.113.7"  # what a NAT in front of the mux would show (documentation range)


async def stun_server(sock: trio.socket.SocketType, asked: list[bytes]) -> None:
    """Answer Binding requests with PUBLIC and the source's port as the mapped address."""
    while True:
        data, source = await sock.recvfrom(2048)
        request = stun.decode(data)
        asked.append(request.transaction_id)
        answer = request.success_response(stun.XorMappedAddress(PUBLIC, source[1]))
        await sock.sendto(answer.encode(fingerprint=True), source)


async def main() -> None:
    asked: list[bytes] = []
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        url = f"stun:127.0.0.1:{sock.getsockname()[1]}"
        config = trice.AgentConfig(network=LOOPBACK, ice_servers=[trice.IceServer(url)])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, sock, asked)
            async with trice.open_udp_mux("127.0.0.1") as mux:
                for name in ("alice", "bob", "carol"):
                    async with trice.open_agent(config, controlling=False, mux=mux) as agent:
                        await agent.wait_gathering_complete()
                        for c in agent.local_candidates:
                            related = f" (raddr {c.related_address})" if c.related_address else ""
                            print(f"{name}: {c.type.value} {c.address}{related}")
            nursery.cancel_scope.cancel()
    print(f"requests to the STUN server: {len(asked)}")


if __name__ == "__main__":
    trio.run(main)
