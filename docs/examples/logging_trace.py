"""Logging: the ``trice`` logger, at DEBUG for state changes and TRACE for every check.

``trice.TRACE`` (5) sits below DEBUG: each check sent and each STUN message received.  The
``trice -v`` and ``trice -vv`` command-line flags turn on DEBUG and TRACE the same way.
"""

from __future__ import annotations

import logging
import sys

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


def signal(here: trice.Agent, there: trice.Agent) -> None:
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        signal(b, a)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.connect)
                await a.connect()
    print("logging: connected")


if __name__ == "__main__":
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)-5s %(name)s %(message)s"))
    log = logging.getLogger("trice")
    log.addHandler(handler)
    log.setLevel(trice.TRACE)  # or logging.DEBUG for state changes only
    trio.run(main)
