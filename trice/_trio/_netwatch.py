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
read again.  (Where the system lets a socket bind any address, ``ip_nonlocal_bind``, the
tentative address counts at once.)
"""

from __future__ import annotations

import errno
import math
import socket
import time
from collections.abc import AsyncGenerator

import trio

from trice._config import NetworkConfig
from trice._errors import ConfigError
from trice._trio._gather import host_addresses
from trice._trio._log import logger

__all__ = ["address_changes"]

#: The rtnetlink multicast groups of IPv4 and IPv6 address notices (``RTMGRP_IPV4_IFADDR``
#: and ``RTMGRP_IPV6_IFADDR``, linux/rtnetlink.h), and of link notices (``RTMGRP_LINK``): an
#: interface renamed changes no address, but it may change what an interface filter takes.
_ADDRESS_GROUPS = 0x10 | 0x100 | 0x1

#: After a first notice, how long to let the others of a burst come (an interface that comes
#: up, or a DHCP lease, changes several addresses at once) before reading the interfaces.
SETTLE = 0.05


def address_notices() -> socket.socket | None:
    """A non-blocking socket on which the kernel tells of each address added or removed
    (and of each change to an interface: renamed, up, down), or ``None`` where there is
    none (not Linux, or netlink not allowed here)."""
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
        sock.bind((0, _ADDRESS_GROUPS))
    except OSError as exc:
        sock.close()
        logger.debug("address changes: cannot join netlink's address groups (%s); polling", exc)
        return None
    return sock


#: Where notices are read to (their content does not matter: see :func:`_drain`).
_SINK = bytearray(65536)

#: Notices read at most at one wake-up (a flood of them is read at the next).
_DRAIN_MAX = 256

#: Wake-ups in a row whose reads all failed before the watch gives the socket up and polls.
FAILURES_BEFORE_POLLING = 3


def _drain(sock: socket.socket) -> bool:
    """Read the notices queued (what they say does not matter: the interfaces are read
    again); ``False`` if a read failed.  ``ENOBUFS`` says that the kernel dropped some,
    which is a change too, not a failure."""
    for _ in range(_DRAIN_MAX):
        try:
            sock.recv_into(_SINK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue
            logger.debug("address changes: reading the notices failed: %s", exc)
            return False
    return True


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


async def address_changes(
    network: NetworkConfig | None = None, *, interval: float = 2.0, initial: bool = False
) -> AsyncGenerator[tuple[str, ...], None]:
    """The host addresses an agent of ``network`` would gather (after its filters), each
    time they change: the cue for an ICE restart that gathers anew
    (:meth:`Agent.restart(regather=True) <trice.Agent.restart>`).

    On Linux the kernel says when an address comes or goes (rtnetlink), and the change is
    seen within a few hundredths of a second; the interfaces are read every ``interval``
    seconds besides, and that poll is all there is where the kernel's notices cannot be
    had.  An interface renamed, which may change what ``network``'s interface filter
    takes, is seen as soon, from the kernel's link notices.  An address counts while a
    socket can be bound to it: a new IPv6 address, once its duplicate address detection is
    over, a second or two after it appears.  The addresses in another order are no change.

    The first value comes with the first change; with ``initial``, it is the addresses as
    the watch starts, at once.  The watch sees every change from then on: take that first
    value before the agents gather (then a change while they gather, or an address they
    could not bind yet, is said when it comes), as ``trice gather --watch`` does.

    It holds a socket while it runs, which it closes when it ends.  An async generator ends
    when its loop is left only if it is closed then: use it as::

        async with contextlib.aclosing(trice.address_changes(config.network)) as changes:
            async for addresses in changes:
                ...

    in a task of its own (one for the process is enough), which may be cancelled anywhere.

    Raises:
        ConfigError: ``interval`` is not a finite number of at least 0.1.
    """
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not 0.1 <= interval < math.inf
    ):
        raise ConfigError(f"address_changes' interval must be a number >= 0.1, not {interval!r}")
    network = NetworkConfig() if network is None else network

    def usable(newer_than: float = -math.inf) -> tuple[str, ...]:
        found = host_addresses(network, newer_than=newer_than)
        return tuple(sorted(host.address for host in found if bindable(host.address)))

    notices = address_notices()
    failures = 0
    try:
        before = usable()
        if initial:
            yield before
        while True:
            noticed = -math.inf
            if notices is None:
                await trio.sleep(interval)
            else:
                with trio.move_on_after(interval):
                    await trio.lowlevel.wait_readable(notices)
                    # The interfaces are read after this (by this watch, or another woken
                    # by the same notice: one read serves them all).
                    noticed = time.monotonic()
                    await trio.sleep(SETTLE)
                    failures = 0 if _drain(notices) else failures + 1
                if failures >= FAILURES_BEFORE_POLLING:
                    logger.warning("address changes: the kernel's notices cannot be read; polling")
                    notices.close()
                    notices = None
            addresses = usable(noticed)
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
