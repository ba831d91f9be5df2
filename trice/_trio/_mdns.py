"""An agent's multicast DNS (RFC 6762): it resolves the peer's ``.local`` host candidates and
answers for the agent's own (:class:`trice.MdnsMode`).

One UDP socket on port 5353, shared with whatever else on the host speaks mDNS (it binds
with ``SO_REUSEADDR`` and ``SO_REUSEPORT``, as Pion and aioice do), joined to 224.0.0.251
on each interface the agent's filters accept and sending only there.  It is opened once
needed: when host gathering names a candidate, or when the first ``.local`` candidate comes.
Its task (:meth:`Mdns.serve`) reads the socket, in the agent's nursery, and closes it when
the agent closes.

IPv4 only, as Pion's: the records themselves may be AAAA (a name of an IPv6 host candidate),
carried over IPv4.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import uuid
from collections.abc import Callable

import trio

from trice._config import NetworkConfig
from trice._errors import MdnsDecodeError
from trice._trio._gather import mdns_interfaces
from trice._trio._log import TRACE
from trice.mdns import (
    ANY,
    MDNS_IPV4_GROUP,
    MDNS_PORT,
    TYPE_A,
    TYPE_AAAA,
    Record,
    decode_message,
    encode_answer,
    encode_query,
    normalize_name,
)

__all__ = ["Mdns", "open_mdns"]

logger = logging.getLogger("trice")

#: How long answers for the agent's names say to keep them (RFC 6762 §10: host records).
ANSWER_TTL = 120
#: The TTL of an answer to a legacy unicast query (RFC 6762 §6.7: at most 10 s).
LEGACY_TTL = 10
#: The least time between two multicasts of the same name's answer (RFC 6762 §6).
ANSWER_INTERVAL = 1.0
#: The first interval between queries for a name; it doubles (RFC 6762 §5.2).
QUERY_INTERVAL = 1.0
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # (Linux's; Python may not name it)


class Mdns:
    """An agent's mDNS socket and what it knows: its own names, the peer's names being
    resolved and those found.  Made by :func:`open_mdns`.

    It also keeps the agent's count of ``.local`` candidates being resolved, the ICE
    generation they belong to, and an end-of-candidates held back until they are done (see
    ``Agent.add_remote_candidate``): one object, made on need, for all of mDNS.
    """

    __slots__ = (
        "_answered",
        "_found",
        "_interfaces",
        "_now",
        "_sock",
        "_waiting",
        "end_held",
        "generation",
        "malformed",
        "names",
        "resolving",
    )

    def __init__(self, sock: socket.socket, interfaces: list[str], now: Callable[[], float]):
        self._sock = sock
        self._interfaces = interfaces
        self._now = now
        #: The agent's own names (normalized) and the address each stands for.
        self.names: dict[str, str] = {}
        # Names being resolved: the events of the tasks waiting for each.
        self._waiting: dict[str, list[trio.Event]] = {}
        # Names found: their addresses, and until when they hold (the records' TTL).
        self._found: dict[str, tuple[tuple[str, ...], float]] = {}
        # When each of our names was last multicast (RFC 6762 §6's one a second).
        self._answered: dict[str, float] = {}
        self.malformed = 0
        #: ``.local`` candidates of the peer being resolved now.
        self.resolving = 0
        #: The agent's ICE generation (it changes at each restart): a name resolved for an
        #: earlier one is not added.
        self.generation = 0
        #: An end-of-candidates came while names were being resolved: the agent passes it on
        #: once they are done.
        self.end_held = False

    @property
    def interfaces(self) -> list[str]:
        """The IPv4 addresses of the interfaces it joined the group on, and sends from."""
        return self._interfaces

    def close(self) -> None:
        self._sock.close()

    def name(self, address: str) -> str:
        """A new random ``<uuid>.local`` name of this agent's, standing for ``address``."""
        name = f"{uuid.uuid4()}.local"
        self.names[name] = address
        return name

    # ------------------------------------------------------------------ resolving

    async def resolve(self, name: str) -> tuple[str, ...]:
        """The addresses ``name`` stands for, asked for on every interface at once and again
        1, 3, 7... s later until an answer comes (the caller bounds the wait)."""
        # Asked for as written (Pion's responder matches names with their case, where RFC
        # 6762 §16 says without), and known by the normalized name.
        query = encode_query(name[:-1] if name.endswith(".") else name)
        name = normalize_name(name)
        found = self._found.get(name)
        if found is not None and found[1] > self._now():
            return found[0]
        event = trio.Event()
        self._waiting.setdefault(name, []).append(event)
        try:
            interval = QUERY_INTERVAL
            while not event.is_set():
                self._multicast(query)
                with trio.move_on_after(interval):
                    await event.wait()
                interval *= 2
        finally:
            events = self._waiting[name]
            events.remove(event)
            if not events:
                del self._waiting[name]
        return self._found[name][0]

    # ------------------------------------------------------------------ the socket

    async def serve(self) -> None:
        """Read the socket until cancelled (then close it): answer queries for our names,
        and take answers for names being resolved."""
        sock = self._sock
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                while True:
                    try:
                        data, source = sock.recvfrom(9000)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # (an ICMP error for an earlier send, say)
                        logger.debug("mDNS: %s", exc)
                        continue
                    self.on_datagram(data, source)
        finally:
            sock.close()

    def on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            message = decode_message(data)
        except MdnsDecodeError as exc:
            self.malformed += 1
            logger.log(TRACE, "mDNS: malformed message from %s dropped: %s", source, exc)
            return
        if message.opcode or message.rcode:
            return  # (RFC 6762 §18.3, §18.11)
        if message.is_response:
            self._take_answers(message.records)
            return
        names = self.names
        if not names:
            return
        for question in message.questions:
            address = names.get(question.name)
            if address is None:
                continue
            if question.qtype not in (ANY, TYPE_AAAA if ":" in address else TYPE_A):
                continue
            if source[1] != MDNS_PORT:  # a legacy unicast query (RFC 6762 §6.7)
                reply = encode_answer(
                    question.name,
                    [address],
                    ttl=LEGACY_TTL,
                    message_id=message.id,
                    question=question,
                )
                self._send(reply, source)
                continue
            now = self._now()
            if now - self._answered.get(question.name, -math.inf) < ANSWER_INTERVAL:
                continue
            self._answered[question.name] = now
            logger.debug("mDNS: answering for %s (asked by %s)", question.name, source[0])
            self._multicast(encode_answer(question.name, [address], ttl=ANSWER_TTL))

    def _take_answers(self, records: tuple[Record, ...]) -> None:
        found: dict[str, list[str]] = {}
        ttls: dict[str, int] = {}
        waiting = self._waiting
        for record in records:
            name = record.name
            if name not in waiting or not record.ttl:
                continue  # (TTL 0: a goodbye, RFC 6762 §10.1: the name is going away)
            found.setdefault(name, []).append(record.address)
            ttls[name] = min(ttls.get(name, 1 << 31), record.ttl)
        now = self._now()
        for name, addresses in found.items():
            # IPv4 first: the family more peers can reach.
            addresses.sort(key=lambda a: ":" in a)
            self._found[name] = (tuple(addresses), now + ttls[name])
            logger.debug("mDNS: %s is %s", name, ", ".join(addresses))
            for event in waiting.get(name, ()):
                event.set()

    def _multicast(self, data: bytes) -> None:
        """Send ``data`` to the group, once from each interface (best effort: mDNS asks
        again, and a full socket buffer here means a flood, not a loss to recover)."""
        sock = self._sock
        for address in self._interfaces:
            try:
                interface = socket.inet_aton(address)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
                sock.sendto(data, (MDNS_IPV4_GROUP, MDNS_PORT))
            except OSError as exc:
                logger.debug("mDNS: cannot send from %s: %s", address, exc)

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        try:
            self._sock.sendto(data, destination)
        except OSError as exc:
            logger.debug("mDNS: cannot send to %s: %s", destination, exc)


def open_mdns(network: NetworkConfig, now: Callable[[], float]) -> Mdns | None:
    """An :class:`Mdns` on the interfaces ``network`` accepts, or ``None`` (logged) if none
    has an IPv4 address or the socket cannot be made."""
    interfaces = mdns_interfaces(network)
    if not interfaces:
        logger.warning("mDNS: no interface with an IPv4 address passes the filters; mDNS off")
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", MDNS_PORT))
        # Only the groups this socket joined, on the interfaces it joined them on.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        joined = []
        for address in interfaces:
            membership = socket.inet_aton(MDNS_IPV4_GROUP) + socket.inet_aton(address)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                logger.debug("mDNS: cannot join the group on %s: %s", address, exc)
                continue
            joined.append(address)
        if not joined:
            raise OSError("could not join 224.0.0.251 on any interface")
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        logger.warning("mDNS: cannot open port %d: %s; mDNS off", MDNS_PORT, exc)
        return None
    return Mdns(sock, joined, now)
