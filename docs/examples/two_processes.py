"""Two processes connect: on two machines, or here on one.

Each process runs one agent.  They signal over a TCP connection that one of them listens for
(in an application, this is the signaling server, a WebSocket or an SDP offer/answer) as
JSON lines: the parameters first, then each candidate as soon as it is gathered (trickle
ICE), then end-of-candidates.  Each side calls ``connect()`` at once, while the signals still
flow.  Once connected, each sends a line over ICE and prints the other's.

On two machines, where UDP can pass between them::

    python two_processes.py listen 0.0.0.0 9000
    python two_processes.py dial 192.0.2.10 9000

Across NATs, give both a STUN server (``--stun stun:stun.example.org:3478``), and a TURN
server where UDP cannot pass (see the NATs guide).  Run without arguments, it starts both
sides as processes of its own on loopback, each gathering on loopback only, and prints
what they printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


class Signals:
    """JSON lines over a byte stream: the signaling channel."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.pending = b""

    async def send(self, message: dict[str, object]) -> None:
        await self.stream.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, object]:
        while b"\n" not in self.pending:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError("the peer hung up before it finished signaling")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        message: dict[str, object] = json.loads(line)
        return message


async def send_ours(agent: trice.Agent, signals: Signals) -> None:
    """Our parameters, then each candidate as it is gathered, then end-of-candidates."""
    ufrag, pwd = agent.local_parameters.ufrag, agent.local_parameters.pwd
    await signals.send({"ufrag": ufrag, "pwd": pwd})
    async with agent.subscribe() as events:  # (it replays what was gathered before)
        async for event in events:
            if isinstance(event, trice.CandidateGathered):
                await signals.send(event.candidate.to_json(username_fragment=ufrag))
            elif (
                isinstance(event, trice.GatheringStateChanged)
                and event.state is trice.GatheringState.COMPLETE
            ):
                await signals.send(trice.end_of_candidates_json(username_fragment=ufrag))
                return


async def take_theirs(agent: trice.Agent, signals: Signals) -> None:
    """The peer's parameters and candidates, up to its end-of-candidates."""
    first = await signals.receive()
    agent.set_remote_parameters(str(first["ufrag"]), str(first["pwd"]))
    while True:
        message = await signals.receive()
        candidate = trice.Candidate.from_json(message)  # (None: end-of-candidates)
        agent.add_remote_candidate(candidate)
        if candidate is None:
            return


async def side(stream: trio.abc.Stream, name: str, config: trice.AgentConfig) -> None:
    """One process's agent: signal over ``stream``, connect, swap a line."""
    signals = Signals(stream)
    controlling = name == "dial"  # (the side that starts controls, as an SDP offerer does)
    async with trice.open_agent(config, controlling=controlling) as agent:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_ours, agent, signals)
            nursery.start_soon(take_theirs, agent, signals)
            with trio.fail_after(10):
                conn = await agent.connect()
        pair = conn.selected_pair
        print(f"{name}: connected, {pair.local.type.value} -> {pair.remote.type.value}")
        await conn.send(f"hello from the {name} side".encode())
        with trio.fail_after(5):
            print(f"{name}: got {(await conn.receive()).decode()!r}")
        # Both lines were sent before either side leaves: the peer's is here, ours went
        # out before we read it.  Leaving closes the agent, its sockets and its tasks.
    await stream.aclose()


async def listen(host: str, port: int, config: trice.AgentConfig) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    address = listeners[0].socket.getsockname()
    print(f"listen: signaling on {address[0]}:{address[1]}", flush=True)
    stream = await listeners[0].accept()
    for listener in listeners:
        await listener.aclose()
    await side(stream, "listen", config)


async def dial(host: str, port: int, config: trice.AgentConfig) -> None:
    stream = await trio.open_tcp_stream(host, port)
    await side(stream, "dial", config)


def both_here() -> None:
    """Both sides as processes of this script, on loopback."""
    script = [sys.executable, __file__]
    with subprocess.Popen(
        [*script, "listen", "127.0.0.1", "0", "--loopback"], stdout=subprocess.PIPE, text=True
    ) as listener:
        assert listener.stdout is not None
        first = listener.stdout.readline()  # "listen: signaling on 127.0.0.1:PORT"
        print(first, end="")
        port = first.rsplit(":", 1)[1].strip()
        dialer = subprocess.run(
            [*script, "dial", "127.0.0.1", port, "--loopback"],
            stdout=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
        rest, _ = listener.communicate(timeout=30)
    print(rest + dialer.stdout, end="")
    if listener.returncode or dialer.returncode:
        sys.exit("two_processes: a side failed")


def main() -> None:
    if len(sys.argv) == 1:
        both_here()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["listen", "dial"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--stun", action="append", default=[], help="a stun: URL")
    parser.add_argument("--loopback", action="store_true", help="gather on loopback only")
    args = parser.parse_args()
    servers = [trice.IceServer(url) for url in args.stun]
    config = trice.AgentConfig(
        network=LOOPBACK if args.loopback else trice.NetworkConfig(), ice_servers=servers
    )
    trio.run(listen if args.role == "listen" else dial, args.host, args.port, config)


if __name__ == "__main__":
    main()
