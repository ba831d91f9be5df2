"""Testing an application that uses trice: two agents on loopback, in virtual time.

The same body as a pytest-trio test takes the ``autojump_clock`` fixture; here ``trio.run``
is given the clock itself.  Consent running out (some 30 s) takes milliseconds.
"""

from __future__ import annotations

import time

import trio
import trio.testing

import trice

# Loopback only: a test never gathers on the machine's real interfaces.
LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


def signal(here: trice.Agent, there: trice.Agent) -> None:
    """What the application's signaling would carry, handed over in memory."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    async with trice.open_agent(config, controlling=True) as alice:
        async with trice.open_agent(config, controlling=False) as bob:
            await alice.wait_gathering_complete()
            await bob.wait_gathering_complete()
            signal(alice, bob)
            signal(bob, alice)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bob.connect)
                connection = await alice.connect()
            await connection.send(b"ping")
            print("bob got:", await (await bob.connect()).receive())
        # Bob is gone: alice's consent runs out (RFC 7675), in virtual time.
        virtual, wall = trio.current_time(), time.monotonic()
        async with alice.subscribe() as events:
            async for event in events:
                if event == trice.ConnectionStateChanged(trice.ConnectionState.FAILED):
                    break
        took = trio.current_time() - virtual
        print(f"alice: failed {took:.0f} virtual seconds after bob left")
        print("in less than 5 s of real time:", time.monotonic() - wall < 5)


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
