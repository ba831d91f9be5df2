"""A firewall on the agent's own host: datagrams its kernel refuses to send.

Run in a network namespace of the test's own (root only, as the NAT lab), where an nftables
rule on the output hook drops what one agent sends to the other: ``sendto`` then fails with
EPERM, as it does behind a host firewall that rejects a destination.
"""

from __future__ import annotations

import json
import sys

import pytest

from natlab import lone_namespace, require_natlab

pytestmark = pytest.mark.natlab

# Two agents on the namespace's loopback connect; then a rule drops what goes to b's port,
# and a sends 20 datagrams with send() and 5 with send_nowait().
REFUSED = """
import json, logging, subprocess, trio, trice

warnings = []

class Warnings(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())

logging.getLogger("trice").addHandler(Warnings())

async def main():
    network = trice.NetworkConfig(
        interface_filter=lambda name: name == "lo", include_loopback=True, ipv6=False
    )
    config = trice.AgentConfig(network=network)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        for here, there in ((a, b), (b, a)):
            here.set_remote_parameters(there.local_parameters.ufrag, there.local_parameters.pwd)
            for candidate in there.local_candidates:
                here.add_remote_candidate(candidate)
            here.add_remote_candidate(None)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.connect)
                to_b = await a.connect()
        port = to_b.selected_pair.remote.port
        rules = "table inet refuse {\\n chain out {\\n type filter hook output priority 0;\\n"
        rules += f" udp dport {port} drop\\n }}\\n}}\\n"
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        before = a.statistics()
        for i in range(20):
            await to_b.send(b"datagram %d" % i)
        nowait = [to_b.send_nowait(b"more") for _ in range(5)]
        after = a.statistics()
        print(json.dumps({
            "refused": after.send_refused - before.send_refused,
            "sent": after.datagrams_sent - before.datagrams_sent,
            "nowait": nowait,
            "warnings": [w for w in warnings if "refused" in w],
        }))

trio.run(main)
"""


def test_datagrams_the_kernel_refuses_are_counted_and_said_once() -> None:
    """Behind a host firewall, every datagram the agent sends is refused by its kernel
    (EPERM): counted in ``send_refused`` (as sent too: dropped on the way, as a network
    drops them; ``send_nowait`` says ``True`` as ``send`` returns), and one warning says
    so, not one a datagram.  (They were counted as sent, and nothing said why nothing
    arrived; ``send_nowait`` said ``False``, as for a full buffer.)"""
    require_natlab(turn=False)
    with lone_namespace("firewall") as ns:
        result = json.loads(ns.check_output([sys.executable, "-c", REFUSED], timeout=60))
    assert result["refused"] >= 25
    assert result["sent"] == 25
    assert result["nowait"] == [True] * 5
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "Operation not permitted" in result["warnings"][0]
