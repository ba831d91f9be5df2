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
import trio, trio.testing, trice
from loopback import connect_both, loopback_config, signal, wait_for_state

def destroy(kind, address, port):
    done = subprocess.run(["ss", "-K", kind, "-a", "src", address, "sport", "=", f":{{port}}"],
                          capture_output=True, text=True)
    if done.returncode != 0 or str(port) not in done.stdout:
        print(json.dumps({{"skip": done.stderr or done.stdout}}), flush=True)
        sys.exit(0)

async def exchange(ca, cb):
    \"\"\"Five datagrams each way, one at a time: what each end received (the one
    ECONNABORTED, the system's word that it shut the socket down, meets a read, or a send,
    whose datagram is dropped then).\"\"\"
    got = {{"a": [], "b": []}}
    for i in range(5):
        await ca.send(b"%d" % i)
        await cb.send(b"%d" % i)
        for name, conn in (("a", ca), ("b", cb)):
            with trio.move_on_after(1):
                got[name].append(int(await conn.receive()))
    return got
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
    config = loopback_config(ipv6=False)
    async with trice.open_agent(config, controlling=True) as a, \\
            trice.open_agent(config, controlling=False) as b:
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (host,) = a.local_candidates
        destroy("-u", host.address, host.port)
        got = await exchange(ca, cb)
        sock = next(iter(a._transports.values())).sock
        print(json.dumps({
            "got": got, "state": a.connection_state.value,
            "refused": a.statistics().send_refused, "port": [host.port, sock.getsockname()[1]],
        }))

trio.run(main)
"""


def test_a_host_socket_the_system_shut_down_keeps_its_port_and_its_pair() -> None:
    """``ss -K`` on the selected pair's UDP host socket: the socket keeps its port, which
    it named when it bound (Linux takes back only a port it chose itself), and the pair
    carries data both ways as before.  Bound to port 0, the socket lost its port, its next
    send took another, and the agent stayed ``completed`` sending from a port it never
    signalled, while the peer's data went where nothing listened (the p35pass2 review)."""
    result = _run(_UDP_HOST)
    assert result["got"]["a"] == [0, 1, 2, 3, 4]
    assert result["got"]["b"] in ([0, 1, 2, 3, 4], [1, 2, 3, 4])
    assert result["refused"] == 5 - len(result["got"]["b"])
    assert result["state"] == "completed"
    before, after = result["port"]
    assert before == after


_UDP_MUX = """
async def main():
    async with trice.open_udp_mux("127.0.0.1") as mux:
        config = loopback_config(ipv6=False)
        async with trice.open_agent(config, controlling=False, mux=mux) as a, \\
                trice.open_agent(config, controlling=True) as b:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            ca, cb = await connect_both(a, b)
            port = mux.local_address[1]
            destroy("-u", "127.0.0.1", port)
            got = await exchange(ca, cb)
            print(json.dumps({
                "got": got, "closed": mux.closed, "state": a.connection_state.value,
                "refused": a.statistics().send_refused, "port": [port, mux.sock.getsockname()[1]],
            }))

trio.run(main)
"""


def test_a_udp_mux_whose_socket_the_system_shut_down_keeps_its_port() -> None:
    """``ss -K`` on a UDP mux's socket, bound to port 0 by its opener: it keeps the port
    it named when it bound, and its agents' pairs carry data as before (it lost its port,
    and its agents went deaf, the p35pass2 review)."""
    result = _run(_UDP_MUX)
    assert result["got"]["a"] == [0, 1, 2, 3, 4]
    assert result["got"]["b"] in ([0, 1, 2, 3, 4], [1, 2, 3, 4])
    assert result["closed"] is False
    assert result["state"] == "completed"
    before, after = result["port"]
    assert before == after


_RELAY = """
from coturn import PASSWORD, USER, run_coturn
from trice._trio._relay import RelayTransport

async def main():
    with run_coturn() as server:
        turn = trice.IceServer(f"turn:127.0.0.1:{server.port}", USER, PASSWORD)
        relayed = loopback_config(
            ipv6=False, ice_servers=[turn], transport_policy=trice.TransportPolicy.RELAY
        )
        async with trice.open_agent(relayed, controlling=True) as a, \\
                trice.open_agent(loopback_config(ipv6=False), controlling=False) as b:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            ca, cb = await connect_both(a, b)
            (relay,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
            sock = relay._conn.sock
            before = sock.getsockname()[1]
            destroy("-u", "127.0.0.1", before)
            got = await exchange(ca, cb)
            print(json.dumps({
                "got": got, "state": a.connection_state.value,
                "port": [before, sock.getsockname()[1]],
                "server": sock.getpeername()[1] == server.port,
            }))

trio.run(main)
"""


def test_a_turn_clients_socket_the_system_shut_down_keeps_its_port_and_server() -> None:
    """``ss -K`` on the UDP socket a relay-only agent's TURN client uses: the system forgets
    the server it was connected to (its next sends said EDESTADDRREQ, dropped: the relayed
    pair went deaf both ways till consent ran out, the p35pass4 review), and would take back
    a port it chose.  The socket names its port when it binds, and is connected to the
    server again: the allocation's 5-tuple stays, and the pair carries data as before."""
    if shutil.which("turnserver") is None:
        pytest.skip("needs coturn (turnserver)")
    result = _run(_RELAY)
    assert len(result["got"]["a"]) >= 4 and len(result["got"]["b"]) >= 4, result
    assert result["state"] == "completed"
    before, after = result["port"]
    assert before == after
    assert result["server"] is True


_TCP_MUX = """
async def main():
    out = {}
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        destroy("-t", *mux.local_address)
        await trio.testing.wait_all_tasks_blocked()  # (its accept loop heard of it)
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
