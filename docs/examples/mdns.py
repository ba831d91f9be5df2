"""Multicast DNS names for host candidates: Alice signals ``<uuid>.local`` names, not her
addresses; Bob resolves them with an mDNS query, as he would a browser's.

Both agents gather on loopback only, so the mDNS queries and answers go out on ``lo`` alone.
"""

from __future__ import annotations

import trio

import trice


def loopback(mdns: trice.MdnsMode) -> trice.NetworkConfig:
    """Loopback only (and so mDNS on loopback only), with the mDNS mode given."""
    return trice.NetworkConfig(
        ip_filter=lambda ip: ip.is_loopback,
        include_loopback=True,
        ipv6=False,
        mdns=mdns,
    )


def signal(here: trice.Agent, there: trice.Agent) -> None:
    """Tell ``here`` what signaling would have carried from ``there``."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)  # (held while a name is being resolved)


async def main() -> None:
    hidden = trice.AgentConfig(network=loopback(trice.MdnsMode.QUERY_AND_GATHER))
    plain = trice.AgentConfig(network=loopback(trice.MdnsMode.QUERY_ONLY))  # the default
    async with (
        trice.open_agent(hidden, controlling=True) as alice,
        trice.open_agent(plain, controlling=False) as bob,
    ):
        await alice.wait_gathering_complete()
        await bob.wait_gathering_complete()
        name = alice.local_candidates[0].address
        print("alice signals:", alice.local_candidates[0].to_sdp().replace(name, "<uuid>.local"))
        print("bob signals:  ", bob.local_candidates[0].to_sdp())
        async with bob.subscribe() as events:
            signal(alice, bob)
            signal(bob, alice)
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(alice.connect)
                    await bob.connect()
                # Alice's check may reach Bob before the answer to his query: then he learns
                # her address as a peer-reflexive candidate first, and her signalled one takes
                # its place once resolved, the selected pair said anew.
                async for event in events:
                    if isinstance(event, trice.SelectedPairChanged):
                        remote = event.pair.remote
                        if remote.type is trice.CandidateType.HOST:
                            break
        print(f"mdns: bob's pair is alice's {remote.type.value} candidate at {remote.address}")


if __name__ == "__main__":
    trio.run(main)
