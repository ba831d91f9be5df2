"""ICE over TCP (RFC 6544): Alice may only open TCP connections, Bob may only accept them.

Alice gathers an active ICE-TCP candidate, Bob a passive one (a listening socket), and
neither gathers UDP candidates, as if a firewall let nothing but TCP through: the connection
is Alice's TCP connection to Bob's listener, and the datagrams go over it.  On loopback only.
"""

from __future__ import annotations

import trio

import trice


def loopback(tcp: trice.TcpType) -> trice.NetworkConfig:
    """Loopback only, with an ICE-TCP host candidate of the kind given and no UDP one."""
    return trice.NetworkConfig(
        ip_filter=lambda ip: ip.is_loopback,
        include_loopback=True,
        ipv6=False,
        tcp_candidates=(tcp,),
        udp=False,
    )


def signal(here: trice.Agent, there: trice.Agent) -> None:
    """Tell ``here`` what signaling would have carried from ``there``."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


def show(pair: trice.CandidatePair) -> str:
    local, remote = pair.local, pair.remote
    return (
        f"{local.type.value} {local.address}:{local.port} -> "
        f"{remote.type.value} {remote.address}:{remote.port} over {local.protocol}"
    )


async def main() -> None:
    async with (
        trice.open_agent(
            trice.AgentConfig(network=loopback(trice.TcpType.ACTIVE)), controlling=True
        ) as alice,
        trice.open_agent(
            trice.AgentConfig(network=loopback(trice.TcpType.PASSIVE)), controlling=False
        ) as bob,
    ):
        await alice.wait_gathering_complete()
        await bob.wait_gathering_complete()
        for name, agent in (("alice", alice), ("bob", bob)):
            for candidate in agent.local_candidates:
                print(f"{name} gathered:", candidate.to_sdp())
        signal(alice, bob)
        signal(bob, alice)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.connect)
                to_alice = await bob.connect()
            to_bob = await alice.connect()
            print("alice's pair:", show(to_bob.selected_pair))
            print("bob's pair:  ", show(to_alice.selected_pair))
            await to_bob.send(b"hello over TCP")
            print("bob got:", (await to_alice.receive()).decode())
            await to_alice.send(b"hello back")
            print("alice got:", (await to_bob.receive()).decode())
        stats = bob.statistics()
        print(
            f"bob's listener: {stats.tcp_accepted} accepted, {stats.tcp_refused} refused, "
            f"{stats.tcp_unproven} closed unproven"
        )


if __name__ == "__main__":
    trio.run(main)
