"""Errors: usage errors where the mistake is made, protocol failures where they matter.

Shows a malformed candidate (CandidateError and its ``field``), a call in the wrong state
(StateError), ICE failing against a peer that never answers (IceFailedError from
``connect()``), and how ``open_agent`` lets the body's own exception out unwrapped.
"""

from __future__ import annotations

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)
# Give up on a silent peer quickly: 3 sends, 50 then 100 ms apart, and half a second for a
# late peer's checks (RFC 8863's PAC timer: by default as long as ``failed_timeout``, 30 s).
QUICK = trice.Timing(rto=0.05, rto_max=0.1, max_binding_requests=3, pac_timeout=0.5)


async def main() -> None:
    # 1. A malformed line from signaling: raised where it is parsed, naming the field.
    try:
        trice.Candidate.from_sdp("candidate:1 1 udp 2130706431 10.0.0.2 99999 typ host")
    except trice.CandidateError as exc:
        print(f"CandidateError (field={exc.field!r}): {exc}")

    async with trice.open_agent(
        trice.AgentConfig(network=LOOPBACK, timing=QUICK), controlling=True
    ) as agent:
        await agent.wait_gathering_complete()
        # A peer that gathered one candidate on a port where nobody listens.
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            silent_port = sock.getsockname()[1]
        agent.set_remote_parameters("peer", "p" * 22)
        agent.add_remote_candidate(
            trice.Candidate.from_sdp(
                f"candidate:1 1 udp 2130706431 127.0.0.1 {silent_port} typ host"
            )
        )
        agent.add_remote_candidate(None)

        # 2. A usage error in the wrong state: a candidate after end-of-candidates.
        try:
            agent.add_remote_candidate(
                trice.Candidate.from_sdp("candidate:2 1 udp 1 127.0.0.1 9 typ host")
            )
        except trice.StateError as exc:
            print(f"StateError: {exc}")

        # 3. A protocol failure: no pair works.
        try:
            await agent.connect()
        except trice.IceFailedError as exc:
            print(f"IceFailedError: {exc} (state {agent.connection_state.value})")

        # 4. Garbage from the network is counted and dropped, never raised: a packet that
        #    looks like STUN (first byte 0-3, magic cookie) but whose length field lies.
        local = agent.local_candidates[0]
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
            await sock.sendto(
                b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12), local.transport_address
            )
        with trio.fail_after(5):
            while agent.statistics().malformed_dropped == 0:  # noqa: ASYNC110 (counters: poll)
                await trio.sleep(0.01)
        print("malformed STUN counted, not raised:", agent.statistics().malformed_dropped)

    # 5. The body's own exception comes out of open_agent as itself, not in an ExceptionGroup.
    try:
        async with trice.open_agent(trice.AgentConfig(network=LOOPBACK), controlling=True):
            raise KeyError("from the body")
    except KeyError as exc:
        print(f"the body's exception, unwrapped: KeyError({exc})")
    print("errors: done")


if __name__ == "__main__":
    trio.run(main)
