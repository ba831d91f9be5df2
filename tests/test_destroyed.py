"""Sockets the system shuts down under an agent or a mux: Linux's SOCK_DESTROY (``ss -K``), as a
network manager may use when an address goes.  A UDP socket so shut loses its port (the
kernel chose it), and its next send takes another, which no peer knows; a listening socket
takes no more connections.  Each scenario runs in a child process in a namespace of the
test's own, with only ``lo``, so that ``ss -K`` reaches nothing but the child's sockets."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from natlab import lone_namespace, require_natlab

TESTS = str(Path(__file__).resolve().parent)

#: The child's opening: ``destroy(kind, address, port)`` shuts the socket down, and says
#: whether ``ss`` could (a kernel without CONFIG_INET_DIAG_DESTROY cannot).
_PRELUDE = f"""
import json, subprocess, sys
sys.path.insert(0, {TESTS!r})
import trio, trice
from loopback import connect_both, loopback_config, signal, wait_for_state

def destroy(kind, address, port):
    done = subprocess.run(["ss", "-K", kind, "-a", "src", address, "sport", "=", f":{{port}}"],
                          capture_output=True, text=True)
    if done.returncode != 0 or str(port) not in done.stdout:
        print(json.dumps({{"skip": done.stderr or done.stdout}}), flush=True)
        sys.exit(0)
"""


def _run(script: str) -> dict[str, Any]:
    """The child's last line, as JSON (a skip if it could not shut the socket down)."""
    require_natlab(turn=False)
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    with lone_namespace("destroyed") as ns:
        out = ns.check_output([sys.executable, "-c", _PRELUDE + script], timeout=60)
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"this kernel cannot shut sockets down: {result['skip']}")
    return result


_UDP_HOST = """
async def main():
    out = {}
    config = loopback_config(ipv6=False)
    async with trice.open_agent(config, controlling=True) as a, \\
            trice.open_agent(config, controlling=False) as b:
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (host,) = a.local_candidates
        destroy("-u", host.address, host.port)
        async with a.subscribe() as events:
            with trio.fail_after(10):
                await cb.send(b"to the port signalled")
                try:
                    await ca.send(b"from a port nobody knows")
                except trio.BrokenResourceError:
                    pass  # (its read heard of it first)
                await wait_for_state(events, trice.ConnectionState.FAILED)
        try:
            await ca.send(b"after")
        except trio.BrokenResourceError as exc:
            out["send"] = str(exc)
        a.restart(regather=True)
        b.restart()
        signal(a, b)
        ca, cb = await connect_both(a, b)
        out["ports"] = [host.port, a.selected_pair.local.port]
        await cb.send(b"again")
        with trio.fail_after(5):
            out["again"] = (await ca.receive()).decode()
    print(json.dumps(out))

trio.run(main)
"""


def test_a_host_socket_the_system_shut_down_fails_its_pairs_and_a_regather_binds_anew() -> None:
    """``ss -K`` on the selected pair's UDP host socket: the agent closes it and fails its
    pairs, and ICE with them, saying why; a restart that gathers anew binds the address
    again and connects.  The socket was left as it was: unbound, its next send took another
    port, and the agent stayed ``completed``, sending from a port it never signalled while
    the peer's data went where nothing listened (the p35pass2 review)."""
    result = _run(_UDP_HOST)
    assert "the system shut the selected pair's socket down" in result["send"]
    assert result["again"] == "again"
    before, after = result["ports"]
    assert before != after  # (a socket of its own again)


_UDP_MUX = """
async def main():
    out = {}
    async with trice.open_udp_mux("127.0.0.1") as mux:
        config = loopback_config(ipv6=False)
        async with trice.open_agent(config, controlling=False, mux=mux) as a, \\
                trice.open_agent(config, controlling=True) as b:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            ca, cb = await connect_both(a, b)
            destroy("-u", *mux.local_address)
            async with a.subscribe() as events:
                with trio.fail_after(10):
                    await cb.send(b"to the mux")
                    try:
                        await ca.send(b"from a port nobody knows")
                    except trio.ClosedResourceError:
                        pass  # (the mux's read heard of it first)
                    await wait_for_state(events, trice.ConnectionState.FAILED)
            out["closed"] = mux.closed
            try:
                await ca.send(b"after")
            except trio.ClosedResourceError as exc:
                out["send"] = str(exc)
    print(json.dumps(out))

trio.run(main)
"""


def test_a_udp_mux_whose_socket_the_system_shut_down_closes() -> None:
    """``ss -K`` on a UDP mux's socket: the mux closes, and its agents' pairs on it fail,
    as when its block ends.  (The socket took another port at its next send, and the agents
    stayed ``completed``, deaf.)"""
    result = _run(_UDP_MUX)
    assert result["closed"] is True
    assert result["send"] == "the selected pair's UDP mux is closed"


_TCP_MUX = """
async def main():
    out = {}
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        destroy("-t", *mux.local_address)
        await trio.sleep(0.2)  # (its accept loop hears of it)
        try:
            async with trice.open_agent(loopback_config(), controlling=False, mux=mux):
                out["attached"] = True
        except trice.UsageError as exc:
            out["refused"] = str(exc)
    print(json.dumps(out))

trio.run(main)
"""


def test_a_tcp_mux_whose_listener_the_system_shut_down_takes_no_new_agent() -> None:
    """``ss -K`` on a TCP mux's listening socket: the mux takes no more connections, and
    refuses a new agent (UsageError), whose passive candidate no peer could reach; it took
    it, and the agent signalled the dead address."""
    result = _run(_TCP_MUX)
    assert result["refused"].startswith("the TCP mux listens no more"), result
