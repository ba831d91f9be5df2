"""An agent's multicast DNS (RFC 6762): it resolves the peer's ``.local`` host candidates and
answers for the agent's own (:class:`trice.MdnsMode`).

One UDP socket on port 5353, shared with whatever else on the host speaks mDNS (it binds
with ``SO_REUSEADDR`` and ``SO_REUSEPORT``, as Pion and aioice do), joined to 224.0.0.251
on each interface the agent's filters accept and sending only there.  What comes from
outside those interfaces' links is dropped (RFC 6762 §11): the socket is bound to every
address, and a host address named under ``QUERY_AND_GATHER`` is told only on its own link
(unicast replies go only to a source on the link asked from).
It is opened once needed: when host gathering names a candidate, or when the first
``.local`` candidate comes.
Its task (:meth:`Mdns.serve`) reads the socket, in the agent's nursery, and closes it when
the agent closes.

IPv4 only, as Pion's: the records themselves may be AAAA (a name of an IPv6 host candidate),
carried over IPv4.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
import struct
import sys
import uuid
from collections.abc import Callable

import trio

from trice._config import NetworkConfig
from trice._errors import MdnsDecodeError
from trice._trio._gather import interface_of, mdns_interfaces
from trice._trio._log import TRACE, logger
from trice._trio._transport import READ_BATCH
from trice.ice._gathering import address_problem
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


#: How long answers for the agent's names say to keep them (RFC 6762 §10: host records).
ANSWER_TTL = 120
#: The TTL of an answer to a legacy unicast query (RFC 6762 §6.7: at most 10 s).
LEGACY_TTL = 10
#: The least time between two multicasts of the same name's answer on a link (RFC 6762 §6).
ANSWER_INTERVAL = 1.0
#: The most unicast answers (to legacy and QU queries) in a second, all sources together: a
#: query with a forged source cannot turn the agent into a reflector.
UNICAST_PER_SECOND = 10
#: The first interval between queries for a name; it doubles (RFC 6762 §5.2).
QUERY_INTERVAL = 1.0
_LINUX = sys.platform.startswith("linux")
#: Linux's IP_MULTICAST_ALL and IP_PKTINFO (Python 3.11 names neither; other systems lack
#: the first, and have the second under other numbers).
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: interface index, local, destination
_GROUP = socket.inet_aton(MDNS_IPV4_GROUP)

#: A link: the address the socket joined the group on, that interface's network, and its
#: index (0 if unknown).
Link = tuple[str, ipaddress.IPv4Network, int]


class Mdns:
    """An agent's mDNS socket and what it knows: its own names, the peer's names being
    resolved and those found.  Made by :func:`open_mdns`.

    It also keeps the agent's bookkeeping of the ``.local`` candidates being resolved (their
    count, the ICE generation they belong to, their cancel scopes, and an end-of-candidates
    held back until they are done: see ``Agent.add_remote_candidate``), so that an agent
    that never meets mDNS holds one empty slot for all of it.
    """

    __slots__ = (
        "_answered",
        "_asked",
        "_closed",
        "_found",
        "_links",
        "_name_links",
        "_now",
        "_sock",
        "_unicast",
        "_waiting",
        "end_held",
        "generation",
        "ignored",
        "malformed",
        "names",
        "resolving",
        "scopes",
    )

    def __init__(self, sock: socket.socket, links: list[Link], now: Callable[[], float]):
        self._sock = sock
        self._links = links
        self._now = now
        self._closed = False
        #: The agent's own names (normalized) and the address each stands for.
        self.names: dict[str, str] = {}
        # The link of each name's address: where it is answered for, and nowhere else.
        self._name_links: dict[str, Link | None] = {}
        # Names being resolved: the events of the tasks waiting for each.
        self._waiting: dict[str, list[trio.Event]] = {}
        # When a query for each name being resolved last went, and the interval to the next
        # (one schedule a name, however many candidates wait for it).
        self._asked: dict[str, tuple[float, float]] = {}
        # Names found: their addresses, and until when they hold (the records' TTL).
        self._found: dict[str, tuple[tuple[str, ...], float]] = {}
        # When each of our names was last multicast on each link (RFC 6762 §6).
        self._answered: dict[tuple[str, str], float] = {}
        # The second the unicast answers are counted in, and the count.
        self._unicast = (-math.inf, 0)
        self.malformed = 0
        #: Datagrams from off the links, and records that name no usable address, dropped.
        self.ignored = 0
        #: ``.local`` candidates of the peer being resolved now.
        self.resolving = 0
        #: The agent's ICE generation (it changes at each restart): a name resolved for an
        #: earlier one is not added.
        self.generation = 0
        #: The cancel scopes of the resolutions running (a restart cancels them).
        self.scopes: set[trio.CancelScope] = set()
        #: An end-of-candidates came while names were being resolved: the agent passes it on
        #: once they are done.
        self.end_held = False

    @property
    def interfaces(self) -> list[str]:
        """The IPv4 addresses of the interfaces it joined the group on, and sends from."""
        return [link[0] for link in self._links]

    def close(self) -> None:
        """Say goodbye for the agent's names (TTL 0, RFC 6762 §10.1) and close the socket."""
        if self._closed:
            return
        self._closed = True
        for name, address in self.names.items():
            link = self._name_links.get(name)
            if link is not None:
                self._multicast(encode_answer(name, [address], ttl=0), [link])
        self._sock.close()

    def name(self, address: str) -> str:
        """A new random ``<uuid>.local`` name of this agent's, standing for ``address``, and
        answered for on that address's link only (none: the name is never answered)."""
        name = f"{uuid.uuid4()}.local"
        self.names[name] = address
        self._name_links[name] = self._link_of_own(address)
        return name

    def _link_of_own(self, address: str) -> Link | None:
        """The link of one of the host's own addresses: an IPv4 one by its network, an IPv6
        one by its interface."""
        if ":" not in address:
            return self._link_of(address)
        interface = interface_of(address)
        if interface is None:
            return None
        try:
            return self._link_at(socket.if_nametoindex(interface))
        except OSError:
            return None

    def forget_resolutions(self) -> None:
        """An ICE restart: the names being resolved were the old generation's."""
        self.generation += 1
        self.resolving = 0
        self.end_held = False
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()
        self._found.clear()  # (the peer may have moved: what it restarts with is asked anew)

    # ------------------------------------------------------------------ resolving

    async def resolve(self, name: str) -> tuple[str, ...]:
        """The addresses ``name`` stands for, asked for on every interface at once and again
        1, 3, 7... s later until an answer comes (the caller bounds the wait)."""
        # Asked for as written (Pion's responder matches names with their case, where RFC
        # 6762 §16 says without), and known by the normalized name.
        query = encode_query(name)
        name = normalize_name(name)
        found = self._found.get(name)
        if found is not None and found[1] > self._now():
            return found[0]
        event = trio.Event()
        self._waiting.setdefault(name, []).append(event)
        try:
            while not event.is_set():
                now = self._now()
                last, interval = self._asked.get(name, (-math.inf, QUERY_INTERVAL / 2))
                due = last + interval
                if now >= due:
                    interval *= 2  # (1 s first: the default above is half of it)
                    self._asked[name] = (now, interval)
                    self._multicast(query, self._links)
                    due = now + interval
                with trio.move_on_at(due):
                    await event.wait()
        finally:
            events = self._waiting[name]
            events.remove(event)
            if not events:
                del self._waiting[name]
                self._asked.pop(name, None)
        # (Gone again if a goodbye, or an ICE restart, came before this task ran: no answer.)
        found = self._found.get(name)
        return found[0] if found is not None else ()

    # ------------------------------------------------------------------ the socket

    async def serve(self) -> None:
        """Read the socket until cancelled (then close it): answer queries for our names,
        and take answers for names being resolved."""
        sock = self._sock
        space = socket.CMSG_SPACE(_PKTINFO.size)
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)  # (also where others get their turn)
                for _ in range(READ_BATCH):
                    try:
                        if not _LINUX:
                            data, source = sock.recvfrom(9000)
                            self.on_datagram(data, source)
                            continue
                        data, ancillary, _, source = sock.recvmsg(9000, space)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # (an ICMP error for an earlier send, say)
                        logger.debug("mDNS: %s", exc)
                        continue
                    for level, kind, value in ancillary:
                        if (
                            level == socket.IPPROTO_IP
                            and kind == _IP_PKTINFO
                            and len(value) >= _PKTINFO.size
                        ):
                            index, _, destination = _PKTINFO.unpack_from(value)
                            if destination == _GROUP:
                                self.on_datagram(data, source, group_on=index)
                                break
                    else:
                        self.on_datagram(data, source)
        finally:
            self.close()

    def _link_at(self, index: int) -> Link | None:
        """The joined link of interface index ``index``, or ``None``."""
        for link in self._links:
            if link[2] == index:
                return link
        return None

    def _link_of(self, address: str) -> Link | None:
        """The link ``address`` is on, of those the socket joined; ``None`` if none."""
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return None
        for link in self._links:
            if ip in link[1]:
                return link
        return None

    def on_datagram(
        self, data: bytes, source: tuple[str, int], group_on: int | None = None
    ) -> None:
        """A datagram from ``source``: sent to the group and taken in on the interface of
        index ``group_on`` (Linux says so), or else sent to one of the host's addresses.
        Only the first kind, from a joined interface, or the second from the network of one,
        is on our links (RFC 6762 §11); a multicast one may come from any source address
        (Pion's, on ``lo``, come from 0.0.0.0)."""
        link = self._link_of(source[0]) if group_on is None else self._link_at(group_on)
        if link is None:  # (RFC 6762 §11: off the link; unicast to one of our addresses)
            self.ignored += 1
            logger.log(TRACE, "mDNS: datagram from %s, off our links, dropped", source[0])
            return
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
        # Known answers (RFC 6762 §7.1, the answer section): the querier has them, with half
        # their TTL or more.
        known = {
            (record.name, record.address)
            for record in message.records[: message.answer_records]
            if record.ttl >= ANSWER_TTL // 2
        }
        # Unicast goes only to a source on the link asked from (RFC 6762 §11), and at most
        # once a message (the answer to its first question it gets one for).
        on_link = group_on is None or self._link_of(source[0]) == link
        unicast: bytes | None = None
        for question in message.questions:
            address = names.get(question.name)
            if address is None or (question.name, address) in known:
                continue
            if question.qtype not in (ANY, TYPE_AAAA if ":" in address else TYPE_A):
                continue
            if self._name_links.get(question.name) != link:
                continue  # (its address is not on this link: not told here)
            if source[1] != MDNS_PORT:
                # A legacy unicast query (RFC 6762 §6.7): one reply, with its ID and
                # question, by unicast.
                if on_link and unicast is None:
                    unicast = encode_answer(
                        question.name,
                        [address],
                        ttl=LEGACY_TTL,
                        message_id=message.id,
                        question=question,
                    )
                continue
            answer = encode_answer(question.name, [address], ttl=ANSWER_TTL)
            key = (question.name, link[0])
            now = self._now()
            if now - self._answered.get(key, -math.inf) < ANSWER_INTERVAL:
                # Multicast a moment ago; a querier that asked for a unicast answer (the QU
                # bit, RFC 6762 §5.4), or asked us directly (§5.5), gets one.
                if (question.unicast_response or group_on is None) and on_link:
                    unicast = unicast or answer
                continue
            self._answered[key] = now
            logger.debug("mDNS: answering for %s (asked by %s)", question.name, source[0])
            self._multicast(answer, [link])  # (on the link asked from, not the others)
        if unicast is not None and self._may_unicast():
            self._send(unicast, source)

    def _may_unicast(self) -> bool:
        """Whether a unicast answer may go now (at most ``UNICAST_PER_SECOND`` a second)."""
        start, count = self._unicast
        now = self._now()
        if now - start >= 1.0:
            start, count = now, 0
        if count >= UNICAST_PER_SECOND:
            return False
        self._unicast = (start, count + 1)
        return True

    def _take_answers(self, records: tuple[Record, ...]) -> None:
        """Answers: for names being resolved, or already found (a cache-flush record
        updates what is kept, a goodbye removes it); the rest are not kept."""
        found: dict[str, list[str]] = {}
        ttls: dict[str, int] = {}
        waiting = self._waiting
        kept = self._found
        for record in records:
            name = record.name
            if name not in waiting and name not in kept:
                continue
            if not record.ttl:  # a goodbye (RFC 6762 §10.1): the name is going away
                kept.pop(name, None)
                continue
            if address_problem(record.address, 1, ipv6=None) is not None:
                self.ignored += 1  # (0.0.0.0, a multicast address: no one to check)
                continue
            if name not in waiting and not record.cache_flush:
                continue  # (a shared record adds to what is kept: no change to make)
            found.setdefault(name, []).append(record.address)
            ttls[name] = min(ttls.get(name, ANSWER_TTL), record.ttl)
        now = self._now()
        for stale in [n for n, (_, until) in kept.items() if until <= now]:
            del kept[stale]
        for name, addresses in found.items():
            # IPv4 first: the family more peers can reach.
            addresses.sort(key=lambda a: ":" in a)
            kept[name] = (tuple(addresses), now + ttls[name])
            logger.debug("mDNS: %s is %s", name, ", ".join(addresses))
            for event in waiting.get(name, ()):
                event.set()

    def _multicast(self, data: bytes, links: list[Link]) -> None:
        """Send ``data`` to the group from each of ``links`` (best effort: mDNS asks again,
        and a full socket buffer here means a flood, not a loss to recover)."""
        sock = self._sock
        for address, _, _ in links:
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
    links = mdns_interfaces(network)
    if not links:
        logger.warning("mDNS: no interface with an IPv4 address passes the filters; mDNS off")
        return None
    sock = None
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", MDNS_PORT))
        if _LINUX:  # only the groups this socket joined, on the interfaces it joined them on
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)  # (RFC 6762 §11, unicast too)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        joined = []
        if _LINUX:  # the interface and destination of each datagram (see serve)
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        for interface, address, network_ in links:
            membership = _GROUP + socket.inet_aton(address)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                logger.debug("mDNS: cannot join the group on %s: %s", address, exc)
                continue
            try:
                index = socket.if_nametoindex(interface)
            except OSError:
                index = 0
            joined.append((address, network_, index))
        if not joined:
            raise OSError("could not join 224.0.0.251 on any interface")
        sock.setblocking(False)
    except OSError as exc:
        if sock is not None:
            sock.close()
        logger.warning("mDNS: cannot open port %d: %s; mDNS off", MDNS_PORT, exc)
        return None
    return Mdns(sock, joined, now)
