"""The pure STUN codec from another event loop: a Binding exchange over asyncio.

:mod:`trice.stun` does no I/O and reads no clock, so the same code serves trio, asyncio, a
thread, or a test with virtual time.  Here an asyncio "ICE peer" answers a connectivity check
the way RFC 8445 §7.3 says: it decodes the request, verifies MESSAGE-INTEGRITY with the
short-term key, reads the ICE attributes, and answers with XOR-MAPPED-ADDRESS; the client
retransmits on :class:`trice.stun.RetransmissionSchedule` with asyncio's clock.
"""

from __future__ import annotations

import asyncio
from typing import cast

from trice import stun

SERVER_PWD = "VOkJxbRl1RmTxUk/WvJxBt"  # the answering side's ice-pwd
KEY = stun.short_term_key(SERVER_PWD)


class CheckResponder(asyncio.DatagramProtocol):
    """Answers Binding requests signed with ``KEY``; ignores everything else."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not stun.is_stun(data):  # RFC 7983 demultiplexing: not ours
            return
        try:
            request = stun.decode(data)  # header, lengths, FINGERPRINT
        except stun.StunDecodeError:
            return  # garbage from the network is dropped, never raised
        if request.message_class is not stun.MessageClass.REQUEST:
            return
        if not request.verify_integrity(KEY):
            reply = request.error_response(401, "Unauthorized").encode(fingerprint=True)
        else:
            priority = request.get(stun.Priority)
            nominated = request.get(stun.UseCandidate) is not None
            print(
                f"responder: check from {addr[0]}:{addr[1]}, "
                f"priority {priority.value if priority else None}, nominated={nominated}"
            )
            reply = request.success_response(stun.XorMappedAddress(addr[0], addr[1])).encode(
                integrity_key=KEY, fingerprint=True
            )
        self.transport.sendto(reply, addr)


class CheckClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(CheckResponder, local_addr=("127.0.0.1", 0))
    client_transport, client = await loop.create_datagram_endpoint(
        CheckClient, local_addr=("127.0.0.1", 0)
    )
    try:
        request = stun.Message(
            stun.Method.BINDING,
            stun.MessageClass.REQUEST,
            attributes=(
                stun.Username("evtj:h6vY"),  # remote-ufrag:local-ufrag
                stun.Priority(1845494271),
                stun.IceControlling(0x932FF9B151263B36),
                stun.UseCandidate(),
            ),
        )
        data = request.encode(integrity_key=KEY, fingerprint=True)
        destination = server.get_extra_info("sockname")[:2]

        # Retransmissions (RFC 8489 §6.2.1): the schedule only does arithmetic on our clock.
        schedule = stun.RetransmissionSchedule(rto=0.1)
        deadline: float | None = schedule.start(loop.time())
        reply = None
        while deadline is not None and reply is None:
            client_transport.sendto(data, destination)
            try:
                raw = await asyncio.wait_for(client.replies.get(), deadline - loop.time())
            except asyncio.TimeoutError:
                deadline = schedule.on_timeout(loop.time())
                continue
            message = stun.decode(raw)
            if message.transaction_id == request.transaction_id:
                reply = message
        if reply is None:
            raise SystemExit("the check timed out")

        assert reply.message_class is stun.MessageClass.SUCCESS
        assert reply.verify_integrity(KEY), "a response must be signed with the same key"
        mapped = reply.get(stun.XorMappedAddress)
        assert mapped is not None
        here = client_transport.get_extra_info("sockname")
        assert (mapped.address, mapped.port) == (here[0], here[1])
        print(f"client: the responder saw us at {mapped.address}:{mapped.port}")

        # And what a malformed packet gives: StunDecodeError, never anything else.
        try:
            stun.decode(data[:-3])
        except stun.StunDecodeError as exc:
            print(f"client: truncated message refused: {exc}")
    finally:
        client_transport.close()
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
