"""A firewall on the agent's own host: datagrams its kernel refuses to send.

Run in a network namespace of the test's own (root only, as the NAT lab), where an nftables
rule on the output hook drops what one agent sends to the other: ``sendto`` then fails with
EPERM, as it does behind a host firewall that rejects a destination.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from natlab import lone_namespace, require_natlab

pytestmark = pytest.mark.natlab

TESTS = Path(__file__).resolve().parent  # (the script imports the loopback helpers)

# Two agents on the namespace's loopback connect; then a rule drops what goes to b's port,
# and a sends 20 datagrams with send() and 5 with send_nowait().
# (Each script's start: the warnings of trice's logger, kept in ``warnings``.)
PRELUDE = """
import contextlib, json, logging, subprocess, trio, trice
from loopback import connect_both, loopback_config, signal

warnings = []

class Warnings(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())

logging.getLogger("trice").addHandler(Warnings())
"""

REFUSED = (
    PRELUDE
    + """

async def main():
    async with contextlib.AsyncExitStack() as stack:
        mux = None
        if ON_A_MUX:
            mux = await stack.enter_async_context(trice.open_udp_mux("127.0.0.1"))
        opened = trice.open_agent(loopback_config(), controlling=True, mux=mux)
        a = await stack.enter_async_context(opened)
        b = await stack.enter_async_context(trice.open_agent(loopback_config(), controlling=False))
        with trio.fail_after(10):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
        signal(a, b)
        to_b, _ = await connect_both(a, b)
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
)


@pytest.mark.parametrize("on_a_mux", [False, True], ids=["own socket", "UDP mux"])
def test_datagrams_the_kernel_refuses_are_counted_and_said_once(on_a_mux: bool) -> None:
    """Behind a host firewall, every datagram the agent sends is refused by its kernel
    (EPERM): counted in ``send_refused`` (as sent too: dropped on the way, as a network
    drops them; ``send_nowait`` says ``True`` as ``send`` returns), and one warning says
    so, not one a datagram.  (They were counted as sent, and nothing said why nothing
    arrived; ``send_nowait`` said ``False``, as for a full buffer.)  The same for an agent
    on a UDP mux, whose datagrams leave from the mux's socket."""
    require_natlab(turn=False)
    with lone_namespace("firewall") as ns:
        code = REFUSED.replace("ON_A_MUX", str(on_a_mux))
        script = ["env", f"PYTHONPATH={TESTS}", sys.executable, "-c", code]
        result = json.loads(ns.check_output(script, timeout=60))
    assert result["refused"] >= 25
    assert result["sent"] == 25
    assert result["nowait"] == [True] * 5
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "Operation not permitted" in result["warnings"][0]


# An agent on a UDP mux asks a STUN server through the mux's socket, to a port the
# firewall refuses.
STUN_REFUSED = (
    PRELUDE
    + """

async def main():
    rules = "table inet refuse {\\n chain out {\\n type filter hook output priority 0;\\n"
    rules += " udp dport 3478 drop\\n }\\n}\\n"
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    config = loopback_config(
        ice_servers=[trice.IceServer("stun:127.0.0.1:3478")],
        timing=trice.Timing(gather_timeout=1.0),
    )
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(config, controlling=True, mux=mux) as agent,
    ):
        with trio.fail_after(10):
            await agent.wait_gathering_complete()
        print(json.dumps({
            "refused": agent.statistics().send_refused,
            "warnings": [w for w in warnings if "refused" in w],
        }))

trio.run(main)
"""
)


def test_a_stun_request_a_mux_sends_for_an_agent_is_counted_when_refused() -> None:
    """A UDP mux asks the STUN server for its agents, from its own socket: a request the
    firewall refuses is counted for the agent that asked, and said once, as for an agent on
    a socket of its own (gathering timed out without a word)."""
    require_natlab(turn=False)
    with lone_namespace("firewall") as ns:
        script = ["env", f"PYTHONPATH={TESTS}", sys.executable, "-c", STUN_REFUSED]
        result = json.loads(ns.check_output(script, timeout=60))
    assert result["refused"] >= 1
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "Operation not permitted" in result["warnings"][0]
