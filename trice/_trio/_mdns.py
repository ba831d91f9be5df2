"""An agent's multicast DNS (RFC 6762): it resolves the peer's ``.local`` host candidates and
answers for the agent's own (:class:`trice.MdnsMode`).

One UDP socket on port 5353, shared with whatever else on the host speaks mDNS (it binds
with ``SO_REUSEADDR`` and ``SO_REUSEPORT``, as Pion and aioice do), joined to 224.0.0.251
on each interface the agent's filters accept and sending only there.  (A socket holds as
many memberships as the system lets it, on Linux ``net.ipv4.igmp_max_memberships``, 20 by
default: past them, another socket of the same kind holds the next ones, read alike.)
What comes from outside those interfaces' links is dropped (RFC 6762 §11): the socket is
bound to every address, and a host address named under ``QUERY_AND_GATHER`` is told only
on its own link (unicast replies go only to a source on the link asked from).
It is opened once needed: when host gathering names a candidate, or when the first
``.local`` candidate comes.
Its task (:meth:`Mdns.serve`) reads the socket, in the agent's nursery, and closes it when
the agent closes.

IPv4 only, as Pion's: the records themselves may be AAAA (a name of an IPv6 host candidate),
carried over IPv4.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
import uuid
from collections.abc import Callable

import trio

from trice._config import NetworkConfig
from trice._errors import LimitError, MdnsDecodeError
from trice._trio._gather import (
    MdnsLinks,
    UnreadableInterfaces,
    interface_index,
    interface_of,
    link_local_interfaces,
    machine_addresses,
    mdns_interfaces,
)
from trice._trio._log import TRACE, logger
from trice._trio._transport import READ_BATCH
from trice.mdns import MDNS_IPV4_GROUP, MDNS_PORT, encode_query, normalize_name
from trice.mdns._responder import MdnsResponder, Send

__all__ = ["Mdns", "open_mdns"]


_LINUX = sys.platform.startswith("linux")
#: Linux's IP_MULTICAST_ALL and IP_PKTINFO (Python 3.11 names neither; other systems lack
#: the first, and have the second under other numbers).
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: interface index, local, destination
_GROUP = socket.inet_aton(MDNS_IPV4_GROUP)
_MREQN = struct.Struct("=4s4si")  # struct ip_mreqn: group, local address, interface index

#: A link: the address the socket joined the group on, that interface's network, and its
#: index (0 if unknown).
Link = tuple[str, ipaddress.IPv4Network, int]


class Mdns:
    """An agent's mDNS socket and links, and the tasks waiting for names; what it decides is
    its ``MdnsResponder``'s (``trice/mdns/_responder.py``, pure).  Made by :func:`open_mdns`.

    The cancel scopes of the agent's resolutions are kept here too (an ICE restart cancels
    them); what the agent holds back while names resolve is its core's (``hold_remote``).
    """

    __slots__ = (
        "_closed",
        "_link_local",
        "_links",
        "_more",
        "_now",
        "_nursery",
        "_on",
        "_sock",
        "_waiting",
        "responder",
        "scopes",
    )

    def __init__(self, sock: socket.socket, links: list[Link], now: Callable[[], float]):
        self._sock = sock  # (it sends, and holds memberships up to the system's limit)
        # Sockets that hold the memberships past that limit, and which holds each (by the
        # interface's index, or address where it has none: see _membership).
        self._more: list[socket.socket] = []
        self._on: dict[int | str, socket.socket] = {}
        self._nursery: trio.Nursery | None = None  # (serve's: it reads the sockets)
        self._links = links
        self._now = now
        self._closed = False
        # The indexes of the interfaces that have an IPv4 link-local address (see _link_of),
        # read as the links are joined: no datagram reads the interfaces.
        self._link_local = self._link_local_indexes()
        self.responder = MdnsResponder()
        # Names being resolved: the events of the tasks waiting for each.
        self._waiting: dict[str, list[trio.Event]] = {}
        #: The cancel scopes of the resolutions running (a restart cancels them).
        self.scopes: set[trio.CancelScope] = set()

    @property
    def names(self) -> dict[str, str]:
        """The agent's own names (normalized) and the address each stands for."""
        return self.responder.names

    @property
    def malformed(self) -> int:
        return self.responder.malformed

    @property
    def ignored(self) -> int:
        """Datagrams from off the links, and records that name no usable address, dropped."""
        return self.responder.ignored

    @property
    def _found(self) -> dict[str, tuple[tuple[str, ...], float]]:
        return self.responder.found

    @property
    def interfaces(self) -> list[str]:
        """The IPv4 addresses of the interfaces it joined the group on, and sends from."""
        return [link[0] for link in self._links]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the socket is closed)."""
        return self._closed

    def close(self) -> None:
        """Say goodbye for the agent's names (TTL 0, RFC 6762 §10.1) and close the socket."""
        if self._closed:
            return
        self._closed = True
        self._send_all(self.responder.goodbyes())
        self._sock.close()
        for sock in self._more:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def name(self, address: str) -> str:
        """The ``<uuid>.local`` name of this agent's that stands for ``address``: the one
        given it before (a gathering anew), or a new random one, answered for on that
        address's link only (none: the name is never answered)."""
        for known, standing_for in self.responder.names.items():
            if standing_for == address:
                return known
        name = f"{uuid.uuid4()}.local"
        self.responder.add_name(name, address, self._link_of_own(address))
        return name

    def _link_of_own(self, address: str) -> Link | None:
        """The joined link of one of the host's own addresses: the link of its interface
        (an IPv4 address on another subnet than the one the interface was joined with is
        on that link too); failing that, an IPv4 one by its network."""
        interface = interface_of(address)
        index = 0 if interface is None else interface_index(interface)
        link = self._link_at(index) if index else None
        if link is None and ":" not in address:
            link = self._link_of(address)
        return link

    def follow_links(
        self,
        network: NetworkConfig,
        read: MdnsLinks | None = None,
    ) -> None:
        """A gathering anew: the interfaces ``network`` accepts now (``read``, if they were
        read already: :func:`mdns_interfaces`), told apart by their index (a membership
        belongs to an interface, not to an address).

        An interface still there keeps its membership (its address and network are taken
        as they are now: a renumbering); one gone is left, and one that came (a new index:
        made anew, even with the same address) is joined.  Then each of the agent's names
        is answered on the link its address is on now, nowhere if the host has it no more;
        one whose address went, or moved to another link, says goodbye on its old link
        first (RFC 6762 §10.1).  Names whose address went are kept, for the address to get
        its name back if it comes back, but only the last ``GONE_KEPT`` (16) of them.  Call
        it before naming the new candidates (:meth:`name`)."""
        have = {link[2]: link for link in self._links}
        links: list[Link] = []
        came = []
        for interface, address, network_ in mdns_interfaces(network) if read is None else read:
            index = interface_index(interface)
            if index and have.pop(index, None) is not None:
                links.append((address, network_, index))
            else:
                came.append((interface, address, network_))
        for gone in have.values():  # (left first: an interface made anew may reuse it)
            holder = self._on.pop(gone[2] or gone[0], self._sock)
            with contextlib.suppress(OSError):  # (the interface may be gone with it)
                holder.setsockopt(
                    socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, _membership(gone[0], gone[2])
                )
        links.extend(link for link in (self.join(*found) for found in came) if link)
        if links != self._links:
            logger.debug("mDNS: links %s, before %s", links, self._links)
        self._links = links
        self._link_local = self._link_local_indexes()
        present = machine_addresses()
        responder = self.responder
        now_on = {
            name: self._link_of_own(address) if address in present else None
            for name, address in responder.names.items()
        }
        moved = []
        for name, link in now_on.items():
            before = responder.link(name)
            if isinstance(before, tuple) and (link is None or link[2] != before[2]):
                moved.append(name)
        self._send_all(responder.goodbyes(moved))  # (on the links they were answered on)
        for name, link in now_on.items():
            responder.add_name(name, responder.names[name], link)
        responder.mark_gone([n for n, address in responder.names.items() if address not in present])

    def forget_resolutions(self) -> None:
        """An ICE restart: the names being resolved were the old generation's.  Their
        schedules end now, not as their tasks end: a name the new generation signals
        again at once (Pion keeps its names) is asked at once."""
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()
        for name in self._waiting:
            self.responder.stop_asking(name)
        self.responder.forget_found()  # (the peer may have moved: it is asked anew)

    # ------------------------------------------------------------------ resolving

    async def resolve(self, name: str) -> tuple[str, ...]:
        """The addresses ``name`` stands for, asked for on every interface at once and again
        1, 3, 7... s later until an answer comes (the caller bounds the wait)."""
        # Asked for as written (Pion's responder matches names with their case, where RFC
        # 6762 §16 says without), and known by the normalized name.
        query = encode_query(name)
        name = normalize_name(name)
        responder = self.responder
        found = responder.lookup(name, self._now())
        if found is not None:
            return found
        event = trio.Event()
        self._waiting.setdefault(name, []).append(event)
        try:
            while not event.is_set():
                send, due = responder.query_due(name, self._now())
                if send:
                    self._multicast(query, self._links)
                with trio.move_on_at(due):
                    await event.wait()
        finally:
            events = self._waiting[name]
            events.remove(event)
            if not events:
                del self._waiting[name]
                responder.stop_asking(name)
        # (Gone again if an ICE restart came before this task ran: no answer.  A goodbye
        # keeps the record a second: RFC 6762 §10.1.)
        kept = responder.found.get(name)
        return kept[0] if kept is not None else ()

    # ------------------------------------------------------------------ the socket

    def join(self, interface: str, address: str, network: ipaddress.IPv4Network) -> Link | None:
        """Join the group on ``interface`` (whose address is ``address``): its link, or
        ``None`` (logged) if it cannot be joined.  On a socket of its own once the others
        hold as many memberships as the system lets one (ENOBUFS)."""
        index = interface_index(interface)
        membership = _membership(address, index)
        for sock in (self._sock, *self._more):
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue  # (full: the next one)
                _cannot_join(interface, address, exc)
                return None
            if sock is not self._sock:
                self._on[index or address] = sock
            return (address, network, index)
        more = None
        try:
            more = _mdns_socket()
            more.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:
            if more is not None:
                more.close()
            _cannot_join(interface, address, exc)
            return None
        logger.debug("mDNS: another socket for the group on %s and after", interface)
        self._more.append(more)
        self._on[index or address] = more
        if self._nursery is not None:
            self._nursery.start_soon(self._read, more, name="mdns more")
        return (address, network, index)

    async def serve(self) -> None:
        """Read the sockets until cancelled (then close them): answer queries for our
        names, and take answers for names being resolved."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for sock in self._more:
                    nursery.start_soon(self._read, sock, name="mdns more")
                await self._read(self._sock)
        finally:
            self._nursery = None
            self.close()

    async def _read(self, sock: socket.socket) -> None:
        # (No CMSG_SPACE, nor recvmsg, on Windows: elsewhere than Linux, recvfrom alone.)
        space = socket.CMSG_SPACE(_PKTINFO.size) if _LINUX else 0
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
                            else:
                                self.on_datagram(data, source, arrived_on=index)
                            break
                    else:
                        self.on_datagram(data, source)
        except trio.ClosedResourceError:
            return  # (one of more, closed while it waited: see close)

    def _link_at(self, index: int) -> Link | None:
        """The joined link of interface index ``index``, or ``None``."""
        for link in self._links:
            if link[2] == index:
                return link
        return None

    @staticmethod
    def _link_local_indexes() -> frozenset[int]:
        try:
            return frozenset(interface_index(name) for name in link_local_interfaces())
        except (LimitError, UnreadableInterfaces, OSError):
            return frozenset()  # (the interfaces cannot be read now: none)

    def _link_of(self, address: str, arrived_on: int | None = None) -> Link | None:
        """The link ``address`` is on, of those the socket joined; ``None`` if none.  An
        IPv4 link-local one (169.254/16: on the link by what it is, RFC 3927) is on the link
        of the interface it came in on (``arrived_on``), if that has such an address of its
        own, whatever network the link was joined with; not knowing that interface, on the
        link whose network holds it, or else that of an interface with such an address."""
        if address.startswith("169.254."):
            if arrived_on is not None:
                if arrived_on in self._link_local:
                    return self._link_at(arrived_on)
                return _link_of(address, self._links)
            link = _link_of(address, self._links)
            if link is None:
                link = next((link for link in self._links if link[2] in self._link_local), None)
            return link
        return _link_of(address, self._links)

    def on_datagram(
        self,
        data: bytes,
        source: tuple[str, int],
        group_on: int | None = None,
        arrived_on: int | None = None,
    ) -> None:
        """A datagram from ``source``: sent to the group and taken in on the interface of
        index ``group_on`` (Linux says so), or else sent to one of the host's addresses
        (taken in on the interface of index ``arrived_on``, where Linux says so).  Only the
        first kind, from a joined interface, or the second from the network of one, is on
        our links (RFC 6762 §11); a multicast one may come from any source address (Pion's,
        on ``lo``, come from 0.0.0.0)."""
        link = self._link_of(source[0], arrived_on) if group_on is None else None
        if group_on is not None:
            link = self._link_at(group_on)
        if link is None:  # (RFC 6762 §11: off the link; unicast to one of our addresses)
            self.responder.ignored += 1
            logger.log(TRACE, "mDNS: datagram from %s, off our links, dropped", source[0])
            return
        waiting = self._waiting
        try:
            sends, resolved = self.responder.on_datagram(
                data,
                source,
                link,
                direct=group_on is None,
                on_link=group_on is None or self._link_of(source[0], group_on) == link,
                wanted=waiting,
                now=self._now(),
            )
        except MdnsDecodeError as exc:
            logger.log(TRACE, "mDNS: malformed message from %s dropped: %s", source, exc)
            return
        for name in resolved:
            logger.debug("mDNS: %s is %s", name, ", ".join(self.responder.found[name][0]))
            for event in waiting.get(name, ()):
                event.set()
        if sends:
            logger.debug("mDNS: answering %s", source[0])
            self._send_all(sends)

    def _send_all(self, sends: list[Send]) -> None:
        for send in sends:
            if send.to is not None:
                self._send(send.data, send.to)
            elif send.link is not None:
                self._multicast(send.data, [send.link])  # type: ignore[list-item]

    def _multicast(self, data: bytes, links: list[Link]) -> None:
        """Send ``data`` to the group from each of ``links`` (best effort: mDNS asks again,
        and a full socket buffer here means a flood, not a loss to recover)."""
        sock = self._sock
        now = {index: address for address, _, index in self._links}
        for address, _, index in links:
            # (From the interface's address of now: a goodbye goes on the link its name was
            # answered on, whose address may have gone in a renumbering.)
            address = now.get(index, address)
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


def _link_of(address: str, links: list[Link]) -> Link | None:
    """The link of ``links`` whose network holds the IPv4 ``address``, or ``None``."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return None
    return next((link for link in links if ip in link[1]), None)


def _membership(address: str, index: int) -> bytes:
    """The group on the interface of index ``index`` (``struct ip_mreqn``, on Linux: the
    interface is found by its index, also once ``address`` has gone from it), or else on
    the interface that has ``address`` (``struct ip_mreq``)."""
    if _LINUX and index:
        return _MREQN.pack(_GROUP, socket.inet_aton(address), index)
    return _GROUP + socket.inet_aton(address)


def _cannot_join(interface: str, address: str, exc: OSError) -> None:
    logger.warning(
        "mDNS: cannot join the group on %s (%s): %s; not on that link", interface, address, exc
    )


def _mdns_socket() -> socket.socket:
    """A socket on port 5353, shared, set up to send to the group and read what comes
    (raises OSError)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            # (Named where the kernel refuses it, as WSL1's: SO_REUSEADDR shares the port.)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", MDNS_PORT))
        if _LINUX:  # only the groups this socket joined, on the interfaces it joined them on
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)  # (RFC 6762 §11, unicast too)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        if _LINUX:  # the interface and destination of each datagram (see serve)
            try:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            except OSError as exc:  # (WSL1 refused it: read as elsewhere than Linux, then)
                logger.debug("mDNS: no IP_PKTINFO (%s): datagrams read without it", exc)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_mdns(
    network: NetworkConfig,
    now: Callable[[], float],
    *,
    warn: bool = True,
    links: MdnsLinks | None = None,
) -> Mdns | None:
    """An :class:`Mdns` on the interfaces ``network`` accepts (``links``, if they were read
    already: :func:`mdns_interfaces`), or ``None`` (logged: a warning, or with ``warn``
    false a debug message) if none has an IPv4 address or the socket cannot be made."""
    log = logger.warning if warn else logger.debug
    if links is None:
        links = mdns_interfaces(network)
    if not links:
        log("mDNS: no interface with an IPv4 address passes the filters; mDNS off")
        return None
    try:
        mdns = Mdns(_mdns_socket(), [], now)
    except OSError as exc:
        log("mDNS: cannot open port %d: %s; mDNS off", MDNS_PORT, exc)
        return None
    joined = [link for link in (mdns.join(*found) for found in links) if link is not None]
    if not joined:
        mdns.close()  # (no name yet: no goodbye goes)
        log("mDNS: could not join 224.0.0.251 on any interface; mDNS off")
        return None
    mdns._links = joined
    mdns._link_local = mdns._link_local_indexes()
    return mdns
