"""Two processes connect: on two machines, or here on one.

Each process runs one agent.  They signal over a TCP connection that one of them listens for
(in an application, this is the signaling server, a WebSocket or an SDP offer/answer) as
JSON lines: the parameters first, then each candidate as soon as it is gathered (trickle
ICE), then end-of-candidates.  Each side calls ``connect()`` at once, while the signals still
flow, and they go on flowing beside the session.  Once connected, each sends a line over
ICE and prints the other's.

On two machines, where UDP can pass between them::

    python two_processes.py listen 0.0.0.0 9000
    python two_processes.py dial 192.0.2.10 9000

Across NATs, give both a STUN server (``--stun stun:stun.example.org:3478``); where that is
not enough (a symmetric NAT, UDP blocked: see the NATs guide), a TURN server too (``--turn
turn:turn.example.org --username U``, and its password in ``$TRICE_TURN_CREDENTIAL``, as
``trice gather`` takes it).  Run without arguments, it starts both
sides as processes of its own on loopback, each gathering on loopback only, and prints
what they printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import trio

import trice

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


#: The longest signaling line taken (a peer that sends no newline holds no more than this).
MAX_LINE = 65536


class Signals:
    """JSON lines over a byte stream: the signaling channel."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.pending = b""

    async def send(self, message: dict[str, object]) -> None:
        await self.stream.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, object]:
        """The next message: EOFError once the peer hung up, ValueError for a bad line."""
        while b"\n" not in self.pending:
            if len(self.pending) > MAX_LINE:
                raise ValueError(f"a signaling line longer than {MAX_LINE} bytes")
            try:
                data = await self.stream.receive_some()
            except trio.BrokenResourceError:  # (reset: the peer went with our lines unread)
                data = b""
            if not data:
                raise EOFError("the peer hung up")
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        message = json.loads(line)  # (json.JSONDecodeError is a ValueError)
        if not isinstance(message, dict):
            raise ValueError(f"a signaling line that is not a JSON object: {line[:80]!r}")
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
    """The peer's parameters, then its candidates up to its end-of-candidates (one ordered
    stream from one peer: the parameters cannot be overtaken here).  The peer hanging up
    is an error only before a pair is selected: once connected, it may well leave before
    its gathering is complete."""
    try:
        first = await signals.receive()
        agent.set_remote_parameters(str(first["ufrag"]), str(first["pwd"]))
        while True:
            message = await signals.receive()
            candidate = trice.Candidate.from_json(message)  # (None: end-of-candidates)
            ufrag = message.get("usernameFragment")  # (its ICE generation, if it names one)
            agent.add_remote_candidate(candidate, username_fragment=str(ufrag) if ufrag else None)
            if candidate is None:
                return
    except EOFError:
        if agent.selected_pair is None:
            raise


async def side(stream: trio.abc.Stream, name: str, config: trice.AgentConfig) -> None:
    """One process's agent: signal over ``stream``, connect, swap a line."""
    signals = Signals(stream)
    controlling = name == "dial"  # (the side that starts controls, as an SDP offerer does)
    async with (
        stream,
        trice.open_agent(config, controlling=controlling) as agent,
        trio.open_nursery() as nursery,
    ):
        # Signaling goes on beside connect() and what follows it: a peer that is slow to
        # finish gathering, or never says end-of-candidates, holds nothing up.
        nursery.start_soon(send_ours, agent, signals)
        nursery.start_soon(take_theirs, agent, signals)
        with trio.fail_after(30):  # (past ICE's own limit: IceFailedError comes first)
            conn = await agent.connect()
        # (Our end of the pair: the peer's may still be peer-reflexive, its check having
        # come before the candidate it came from.)
        print(f"{name}: connected from our {conn.selected_pair.local.type.value} candidate")
        await conn.send(f"hello from the {name} side".encode())
        with trio.fail_after(5):
            print(f"{name}: got {(await conn.receive()).decode()!r}")
        # Both lines were sent before either side leaves: the peer's is here, ours went
        # out before we read it.  Leaving stops the signaling and closes its stream, the
        # agent, its sockets and its tasks.
        nursery.cancel_scope.cancel()


async def listen(host: str, port: int, config: trice.AgentConfig) -> None:
    first, *others = await trio.open_tcp_listeners(port, host=host)
    for other in others:  # (a name of both families: one listener is enough for a peer)
        await other.aclose()
    address = first.socket.getsockname()
    print(f"listen: signaling on {address[0]}:{address[1]}", flush=True)
    async with first:
        stream = await first.accept()
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
        try:
            assert listener.stdout is not None
            first = listener.stdout.readline()  # "listen: signaling on 127.0.0.1:PORT"
            if not first.startswith("listen: signaling on "):
                sys.exit("two_processes: the listening side did not start")
            print(first, end="")
            port = first.rsplit(":", 1)[1].strip()
            dialer = subprocess.run(
                [*script, "dial", "127.0.0.1", port, "--loopback"],
                stdout=subprocess.PIPE,
                text=True,
                timeout=30,
                check=False,
            )
            if dialer.returncode:
                listener.kill()  # (it would wait for a peer that is not coming)
            rest, _ = listener.communicate(timeout=30)
        finally:
            if listener.poll() is None:  # (a side failed and left it waiting: end it)
                listener.kill()
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
    parser.add_argument("--turn", action="append", default=[], help="a turn: or turns: URL")
    parser.add_argument("--username", help="TURN user name ($TRICE_TURN_CREDENTIAL: password)")
    parser.add_argument("--loopback", action="store_true", help="gather on loopback only")
    args = parser.parse_args()
    try:
        servers = [trice.IceServer(url) for url in args.stun]
        if args.turn:
            password = os.environ.get("TRICE_TURN_CREDENTIAL")
            servers.append(trice.IceServer(args.turn, args.username, password))
    except trice.ConfigError as exc:
        parser.error(str(exc))
    config = trice.AgentConfig(
        network=LOOPBACK if args.loopback else trice.NetworkConfig(), ice_servers=servers
    )
    try:
        trio.run(listen if args.role == "listen" else dial, args.host, args.port, config)
    except BaseException as exc:  # (out of our nurseries: in exception groups)
        sys.exit(why(args.role, exc))


def why(role: str, exc: BaseException) -> str | int:
    """A failure, as one line for the user (or Ctrl-C, as the shell's 130); re-raises
    what is none of the expected failures: a bug has its traceback."""
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    if isinstance(leaf, KeyboardInterrupt):
        return 130
    if isinstance(leaf, (trice.IceFailedError, trio.TooSlowError)):
        return f"{role}: no connection ({leaf or 'timed out'}; a TURN server may help)"
    if isinstance(leaf, (EOFError, OSError, ValueError, KeyError, trice.TriceError)):
        return f"{role}: {type(leaf).__name__}: {leaf}"
    raise exc


if __name__ == "__main__":
    main()
