"""Watching the machine's addresses: :func:`address_changes`, the cue for an ICE restart that
gathers anew.

Where the kernel tells of address changes (Linux's rtnetlink: a socket that joins the
multicast groups of IPv4 and IPv6 address notices), a change is seen as it happens; elsewhere
(or where that socket cannot be had) the interfaces are read every ``interval`` seconds.
Either way the interfaces themselves are read with ifaddr, as host gathering reads them
(``_gather.host_addresses``): a notice only says when to read them again, and one read
after it serves every watch it woke.  A socket whose reads keep failing is given up for the
poll.

An address counts while a socket can be bound to it: an IPv6 address stays *tentative*
until duplicate address detection is over (RFC 4862 §5.4, a second or two), and a bind to it
fails meanwhile (``EADDRNOTAVAIL``); the kernel's notice that detection is over is the cue to
read again.  (Where the system says the addresses' flags, Linux, host gathering leaves a
tentative one out itself: so also where a socket may bind any address, ``ip_nonlocal_bind``.)
"""

from __future__ import annotations

import errno
import math
import socket
import struct
import threading
import time
from collections.abc import AsyncGenerator

import trio

from trice._config import MAX_SECONDS, NetworkConfig
from trice._errors import ConfigError, LimitError
from trice._trio._exits import require_trio
from trice._trio._gather import UnreadableInterfaces, host_addresses, link_up, read_interfaces
from trice._trio._log import logger

__all__ = ["address_changes"]

#: The rtnetlink multicast groups of IPv4 and IPv6 address notices (``RTMGRP_IPV4_IFADDR``
#: and ``RTMGRP_IPV6_IFADDR``, linux/rtnetlink.h).
_ADDRESS_GROUPS = 0x10 | 0x100
#: The group of link notices (``RTMGRP_LINK``): an interface renamed changes no address, but
#: it may change what an interface filter takes; one set down keeps its IPv4 addresses,
#: which host gathering no longer takes (``_gather.link_up``).  Only a rename or such a
#: change wakes the watch (links change often: carrier, MTU, statistics...).
_LINK_GROUP = 0x1
#: ``IFF_UP`` (linux/if.h), in a link notice's flags.
_IFF_UP = 0x1
#: Link notices (``RTM_NEWLINK``, ``RTM_DELLINK``) and their interface name attribute
#: (``IFLA_IFNAME``), linux/rtnetlink.h and linux/if_link.h.
_RTM_NEWLINK, _RTM_DELLINK = 16, 17
_IFLA_IFNAME = 3
#: ``struct nlmsghdr`` (length, type, flags, sequence, port), then ``struct ifinfomsg``
#: (family, padding, type, index, flags, change) for a link notice; then ``struct rtattr``s.
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")

#: After a first notice, how long to let the others of a burst come (an interface that comes
#: up, or a DHCP lease, changes several addresses at once) before reading the interfaces.
SETTLE = 0.05


def address_notices(*, links: bool = False) -> socket.socket | None:
    """A non-blocking socket on which the kernel tells of each address added or removed
    (and, with ``links``, of each change to an interface: renamed, up, down...), or
    ``None`` where there is none (not Linux, or netlink not allowed here)."""
    family = getattr(socket, "AF_NETLINK", None)
    protocol = getattr(socket, "NETLINK_ROUTE", None)
    if family is None or protocol is None:
        return None
    try:
        sock = socket.socket(family, socket.SOCK_RAW, protocol)
    except OSError as exc:
        logger.debug("address changes: no netlink socket (%s); polling", exc)
        return None
    try:
        sock.setblocking(False)
        sock.bind((0, _ADDRESS_GROUPS | (_LINK_GROUP if links else 0)))
    except OSError as exc:
        sock.close()
        logger.debug("address changes: cannot join netlink's address groups (%s); polling", exc)
        return None
    return sock


#: Where notices are read to: a buffer a thread (the watches of trio runs in several
#: threads read at once), made at its first read (see :func:`_sink`).
_SINKS = threading.local()

#: Notices read at most at one wake-up (a flood of them is read at the next).
_DRAIN_MAX = 256

#: Wake-ups in a row whose reads all failed before the watch gives the socket up and polls.
FAILURES_BEFORE_POLLING = 3


class _Links:
    """What the link notices say, kept up to date (see :func:`_link_news`): the
    interfaces' names by index, the indexes of those set down; and whether notices were
    dropped since (``stale``: the kernel drops on, without a word, until the queue is read
    empty, when both are read afresh)."""

    __slots__ = ("down", "names", "stale")

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.down: set[int] = set()
        self.stale = False
        self.resync()

    def resync(self, *, emptied: bool = True) -> bool:
        """The names and states as the interfaces are now; no longer stale once the queue
        was read empty (``emptied``: else the kernel may drop on, and this is done again).
        Returns whether they changed (a change whose notice is still queued, or was
        dropped: news, which that notice, read later, no longer is)."""
        names = _link_names()
        down = {index for index, name in names.items() if not link_up(name)}
        changed = names != self.names or down != self.down
        self.names, self.down = names, down
        self.stale = self.stale and not emptied
        return changed


def _sink() -> bytearray:
    """This thread's buffer to read notices to."""
    sink: bytearray | None = getattr(_SINKS, "sink", None)
    if sink is None:
        sink = _SINKS.sink = bytearray(65536)
    return sink


def _drain(sock: socket.socket, links: _Links | None = None) -> tuple[bool, bool]:
    """Read the notices queued: ``(healthy, news)``.  ``healthy`` is ``False`` if a read
    failed; ``news``, whether any may change the addresses: any notice, but where the link
    notices come too (``links``, kept up to date), a link notice only if it renamed an
    interface or took it up or down (see :func:`_link_news`).  (What an address notice says
    does not matter: the interfaces are read again.)  ``ENOBUFS`` says that the kernel
    dropped some, which is news too, not a failure; ``links`` may then be stale (an
    interface set down among them, whose coming up again would be no change), and are read
    afresh at the end of each drain until the queue is read empty."""
    news = False
    sink = _sink()
    for _ in range(_DRAIN_MAX):
        try:
            size = sock.recv_into(sink)
        except (BlockingIOError, InterruptedError):
            if links is not None and links.stale and links.resync():
                news = True
            return True, news
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                news = True
                if links is not None:
                    links.stale = True
                continue
            logger.debug("address changes: reading the notices failed: %s", exc)
            return False, True
        if links is None or _link_news(memoryview(sink)[:size], links.names, links.down):
            news = True
    if links is not None and links.stale and links.resync(emptied=False):
        # (A flood not read empty yet: the links as they are now, and again at the next
        # drain, while it lasts.)
        news = True
    return True, news


def _link_news(data: memoryview, names: dict[int, str], down: set[int] | None = None) -> bool:
    """Whether the notices of one read may change the addresses: any but a link notice
    that leaves its interface's name as ``names`` has it and (given ``down``, the indexes of
    the interfaces set down) its state, up or down (both of which it updates).  What does
    not parse counts as news."""
    news = False
    offset = 0
    while offset < len(data):
        if len(data) - offset < _NLMSGHDR.size:
            return True
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return True
        if kind in (_RTM_NEWLINK, _RTM_DELLINK):
            body = data[offset + _NLMSGHDR.size : offset + length]
            if len(body) < _IFINFOMSG.size:
                return True
            index, flags = _IFINFOMSG.unpack_from(body)[2:4]
            if kind == _RTM_DELLINK:
                names.pop(index, None)  # (its addresses go with notices of their own)
                if down is not None:
                    down.discard(index)
            else:
                if down is not None:
                    up = bool(flags & _IFF_UP)
                    if up is (index in down):
                        news = True  # (set up or down: its addresses count or not)
                        if up:
                            down.discard(index)
                        else:
                            down.add(index)
                name = _link_name(body[_IFINFOMSG.size :])
                if name is None or names.get(index) != name:
                    news = True  # (renamed, or an interface new here)
                    if name is not None:
                        names[index] = name
        else:
            news = True
        offset += (length + 3) & ~3
    return news


def _link_name(attributes: memoryview) -> str | None:
    """The ``IFLA_IFNAME`` of a link notice's attributes, if there."""
    offset = 0
    while len(attributes) - offset >= _RTATTR.size:
        length, kind = _RTATTR.unpack_from(attributes, offset)
        if length < _RTATTR.size or offset + length > len(attributes):
            return None
        if kind == _IFLA_IFNAME:
            value = bytes(attributes[offset + _RTATTR.size : offset + length])
            return value.split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3
    return None


def _link_names() -> dict[int, str]:
    """The interfaces' names by index now."""
    try:
        return dict(socket.if_nameindex())
    except OSError:
        return {}


def bindable(address: str) -> bool:
    """Whether a socket can be bound to ``address`` now: ``False`` only for the error that
    says the address is not (yet) usable here (``EADDRNOTAVAIL``, as for a tentative IPv6
    address).  Another error (no descriptor left, say) is host gathering's to report."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError as exc:
        return exc.errno != errno.EADDRNOTAVAIL
    return True


def address_changes(
    network: NetworkConfig | None = None, *, interval: float = 2.0, initial: bool = False
) -> AsyncGenerator[tuple[str, ...], None]:
    """The host addresses an agent of ``network`` would gather (after its filters), each
    time they change: the cue for an ICE restart that gathers anew
    (:meth:`Agent.restart(regather=True) <trice.Agent.restart>`).

    On Linux the kernel says when an address comes or goes (rtnetlink), and the change is
    seen within a few hundredths of a second; the interfaces are read every ``interval``
    seconds besides, and that poll is all there is where the kernel's notices cannot be
    had.  An interface set down or up (whose addresses count only while it is up), or
    renamed (which may change what ``network``'s interface filter takes), is seen as soon,
    from the kernel's link notices.  An address counts while a socket can be bound to it:
    a new IPv6 address, once its duplicate address detection is over, a second or two
    after it appears.  The addresses in another order are no change.

    The first value comes with the first change; with ``initial``, it is the addresses as
    the watch starts, at once.  The watch sees every change from then on: take that first
    value before the agents gather (then a change while they gather, or an address they
    could not bind yet, is said when it comes), as ``trice gather --watch`` does.

    Where reading the interfaces takes long (hundreds of them), the reads are made in a
    worker thread, as gathering's are: under trio's :class:`~trio.testing.MockClock` with
    autojump, the clock may jump ahead while one runs.

    It holds a socket while it runs, which it closes when it ends.  An async generator ends
    when its loop is left only if it is closed then: use it as::

        async with contextlib.aclosing(trice.address_changes(config.network)) as changes:
            async for addresses in changes:
                ...

    in a task of its own (one for the process is enough), which may be cancelled anywhere.

    Raises:
        ConfigError: ``interval`` is not a number of seconds from 0.1 to a year, or
            ``network`` is no :class:`NetworkConfig` (at the call, not at the first value).
        LimitError: no file descriptor is left to read the interfaces with as the watch
            starts.  Later, a read that finds none is logged and tried again (at the next
            poll or notice), and the watch goes on.
        TriceError: the interfaces cannot be read as the watch starts (an interface's
            name is not UTF-8, which ifaddr cannot read, or the system refuses); later, as
            for a descriptor short.
        UsageError: no trio run is going on (under asyncio, say), at the first value.

    What ``network``'s own filters raise ends the watch, raised from it.
    """
    if network is not None and not isinstance(network, NetworkConfig):
        raise ConfigError(
            f"address_changes' network must be a trice.NetworkConfig (an AgentConfig's "
            f".network), not {type(network).__name__}"
        )
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not 0.1 <= interval <= MAX_SECONDS
    ):
        raise ConfigError(
            f"address_changes' interval must be a number >= 0.1 (seconds, at most a year), "
            f"not {interval!r:.40}"
        )
    return _address_changes(NetworkConfig() if network is None else network, interval, initial)


async def _address_changes(
    network: NetworkConfig, interval: float, initial: bool
) -> AsyncGenerator[tuple[str, ...], None]:
    require_trio("address_changes")  # (at the first value: the generator's body)

    async def usable(newer_than: float = -math.inf) -> tuple[str, ...]:
        await read_interfaces(newer_than)  # (in a thread, where reads are slow)
        found = host_addresses(network, newer_than=newer_than)
        return tuple(sorted(host.address for host in found if bindable(host.address)))

    # (Link notices too: a rename can change what an interface filter takes, and an
    # interface gone down keeps its IPv4 addresses, which gathering no longer takes.)
    notices = address_notices(links=True)
    links = _Links() if notices is not None else None
    failures = 0
    try:
        # (Read afresh, not from a read of the last second: a change before the watch began
        # gets no notice, and would go unsaid.)
        before = await usable(time.monotonic())
        if initial:
            yield before
        poll_at = trio.current_time() + interval
        while True:
            noticed = -math.inf
            news = True
            if notices is None:
                await trio.sleep_until(poll_at)
            else:
                with trio.move_on_at(poll_at):
                    await trio.lowlevel.wait_readable(notices)
                    healthy, news = _drain(notices, links)
                    # The interfaces are read after the last notice drained (by this watch,
                    # or another woken by the same notices: one read serves them all), not
                    # before it (a read made as the watch settles, by an agent that
                    # gathered, say, missed what it tells).  Notices that come as it
                    # settles are drained as they come.
                    noticed = time.monotonic()
                    settled = trio.current_time() + SETTLE
                    while healthy:
                        with trio.move_on_at(settled) as settling:
                            await trio.lowlevel.wait_readable(notices)
                        if settling.cancelled_caught:
                            break
                        healthy, more = _drain(notices, links)
                        if not more:
                            # (Nothing of note, or nothing at all from a socket that says
                            # it is readable: not waited on again in this settle.  What
                            # comes later is read at the next wake-up.)
                            await trio.sleep_until(settled)
                            break
                        news = True
                        noticed = time.monotonic()
                    if not healthy:
                        # (A read failed, and the socket stays readable: once a settle at
                        # most, before it is tried again and the failure counted.)
                        await trio.sleep_until(settled)
                        healthy, more = _drain(notices, links)
                        if more:
                            news = True
                            noticed = time.monotonic()
                    failures = 0 if healthy else failures + 1
                if failures >= FAILURES_BEFORE_POLLING:
                    logger.warning("address changes: the kernel's notices cannot be read; polling")
                    notices.close()
                    notices = None
            if not news:
                continue  # (a link notice that changed nothing; the poll keeps its time)
            poll_at = trio.current_time() + interval
            if noticed == -math.inf:
                # The poll's time: a read of another watch's within the interval serves, an
                # older one not (the cache keeps a read for a second).
                noticed = time.monotonic() - interval
            try:
                addresses = await usable(noticed)
            except (LimitError, UnreadableInterfaces) as exc:
                # (No descriptor to read the interfaces with, or a name ifaddr cannot read,
                # for now: the next poll or notice tries again, rather than the watch
                # ending.)
                logger.warning("address changes: %s; trying again", exc)
                continue
            if addresses != before:
                logger.debug(
                    "address changes: %s came, %s went",
                    sorted(set(addresses) - set(before)),
                    sorted(set(before) - set(addresses)),
                )
                before = addresses
                yield addresses
    finally:
        if notices is not None:
            notices.close()
