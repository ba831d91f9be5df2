"""What an agent's multicast DNS decides, without a socket or a clock (RFC 6762): which
queries to answer, how (multicast on the link asked from, or unicast) and how often, which
answers to keep and for how long, and when to ask again for a name.

The trio shell (``trice/_trio/_mdns.py``) owns the socket, the links and the tasks: it says
on which link a datagram came and whether its source is on that link, passes the time in as
``now``, and sends what :meth:`MdnsResponder.on_datagram` returns.  A link is whatever the
shell uses for one (anything hashable); this module only compares them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Hashable, Iterable
from dataclasses import dataclass

from .._errors import MdnsDecodeError
from ..ice._gathering import address_problem, no_destination
from ._message import (
    ANY,
    MDNS_PORT,
    TYPE_A,
    TYPE_AAAA,
    Record,
    decode_message,
    encode_answer,
)

__all__ = [
    "ANSWER_INTERVAL",
    "ANSWER_TTL",
    "LEGACY_TTL",
    "QUERY_INTERVAL",
    "UNICAST_PER_SECOND",
    "MdnsResponder",
    "Send",
]

#: How long answers for the agent's names say to keep them, and the most an answer is kept
#: for (RFC 6762 §10: host records).
ANSWER_TTL = 120
#: The TTL of an answer to a legacy unicast query (RFC 6762 §6.7: at most 10 s).
LEGACY_TTL = 10
#: The least time between two multicasts of the same name's answer on a link (RFC 6762 §6).
ANSWER_INTERVAL = 1.0
#: The most unicast answers (to legacy, QU and direct queries) in a second, all sources
#: together: a query with a forged source cannot turn the agent into a reflector.
UNICAST_PER_SECOND = 10
#: The most bytes of a message (RFC 6762 §17: 9000 with the IPv4 and UDP headers).  A reply
#: to a legacy query that would be longer (its questions repeated, §6.7) is not sent.
MAX_MESSAGE = 9000 - 28
#: The first interval between queries for a name; it doubles (RFC 6762 §5.2).
QUERY_INTERVAL = 1.0
#: How long a record stays once its goodbye came (RFC 6762 §10.1: a TTL of 1 s).
GOODBYE_GRACE = 1.0
#: The most addresses kept for one name (the newest).
KEPT_PER_NAME = 16
#: Names of ours whose address the host has no more, kept (answered nowhere) so that an
#: address that comes back gets its name back; past this many, the longest gone are
#: forgotten (a host that roams takes a new address at each network).
GONE_KEPT = 16


@dataclass(frozen=True, slots=True)
class Send:
    """A message to send: to ``to`` by unicast, or (``to`` is ``None``) to the group on
    ``link``."""

    data: bytes
    to: tuple[str, int] | None = None
    link: Hashable = None


class MdnsResponder:
    """An agent's mDNS state: its own names, the answers it keeps, its query schedules and
    the limits on what it sends.

    Attributes:
        names: the agent's own names (normalized) and the address each stands for.
        found: the names resolved: their addresses, and until when they hold.
        malformed: messages that did not decode.
        ignored: records that named no usable address.
    """

    __slots__ = (
        "_answered",
        "_asked",
        "_gone",
        "_name_links",
        "_records",
        "_unicast",
        "found",
        "ignored",
        "malformed",
        "names",
    )

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        # The link of each name's address: where it is answered for, and nowhere else.
        self._name_links: dict[str, Hashable] = {}
        self.found: dict[str, tuple[tuple[str, ...], float]] = {}
        # Each address of each name found: when its record was last heard, and until when
        # it holds (see _take_answers); ``found`` is what they make.
        self._records: dict[str, dict[str, list[float]]] = {}
        # When each of our names was last multicast on each link (RFC 6762 §6).
        self._answered: dict[tuple[str, Hashable], float] = {}
        # When a query for each name being resolved last went, and the interval to the next
        # (one schedule a name, however many candidates wait for it).
        self._asked: dict[str, tuple[float, float]] = {}
        # Our names whose address the host has no more, the longest gone first.
        self._gone: dict[str, None] = {}
        # The second the unicast answers are counted in, and the count.
        self._unicast = (-math.inf, 0)
        self.malformed = 0
        self.ignored = 0

    # ------------------------------------------------------------------ our names

    def add_name(self, name: str, address: str, link: Hashable) -> None:
        """``name`` (normalized) stands for ``address``, answered for on ``link`` only
        (``None``: never)."""
        if self._name_links.get(name, link) != link:
            self._forget_answered(name)  # (when it was told on its old link: no matter now)
        self.names[name] = address
        self._name_links[name] = link

    def mark_gone(self, gone: Collection[str]) -> None:
        """Of our names, those of ``gone`` stand for addresses the host has no more; the
        others, for addresses it has (again).  The ``GONE_KEPT`` names gone most recently
        are kept; older ones are forgotten."""
        kept = self._gone
        for name in [name for name in kept if name not in gone]:
            del kept[name]
        for name in gone:
            if name in self.names:
                kept.setdefault(name, None)
        while len(kept) > GONE_KEPT:
            name = next(iter(kept))
            del kept[name], self.names[name], self._name_links[name]
            self._forget_answered(name)

    def _forget_answered(self, name: str) -> None:
        for key in [key for key in self._answered if key[0] == name]:
            del self._answered[key]

    def link(self, name: str) -> Hashable:
        """The link ``name`` (one of ours) is answered on, ``None`` if nowhere."""
        return self._name_links.get(name)

    def goodbyes(self, names: Iterable[str] | None = None) -> list[Send]:
        """The goodbyes (TTL 0, RFC 6762 §10.1) for our names (those of ``names``, or all),
        each on its link."""
        chosen = self.names if names is None else names
        return [
            Send(encode_answer(name, [self.names[name]], ttl=0), link=self._name_links[name])
            for name in chosen
            if self._name_links.get(name) is not None
        ]

    # ------------------------------------------------------------------ resolving

    def lookup(self, name: str, now: float) -> tuple[str, ...] | None:
        """The addresses kept for ``name`` (normalized) whose records still hold, if any."""
        return self._live(name, now) or None

    def query_due(self, name: str, now: float) -> tuple[bool, float]:
        """Whether a query for ``name`` goes now (its schedule then moves on: 1, 2, 4... s
        between queries, RFC 6762 §5.2), and when the next is due."""
        last, interval = self._asked.get(name, (-math.inf, QUERY_INTERVAL / 2))
        due = last + interval
        if now < due:
            return False, due
        interval *= 2  # (1 s first: the default above is half of it)
        self._asked[name] = (now, interval)
        return True, now + interval

    def stop_asking(self, name: str) -> None:
        """Nobody waits for ``name`` any more: its schedule ends."""
        self._asked.pop(name, None)

    def forget_found(self) -> None:
        """An ICE restart: what was found is asked for anew (a peer that restarts has often
        moved)."""
        self.found.clear()
        self._records.clear()

    # ------------------------------------------------------------------ datagrams

    def on_datagram(
        self,
        data: bytes,
        source: tuple[str, int],
        link: Hashable,
        *,
        direct: bool,
        on_link: bool,
        wanted: Container[str],
        now: float,
    ) -> tuple[list[Send], list[str]]:
        """A datagram from ``source`` taken in on ``link``: sent to the host's own address
        (``direct``) or to the group; ``on_link``: its source is on that link's network.
        ``wanted`` are the names being resolved.  Returns what to send, and the names it
        resolved."""
        try:
            message = decode_message(data)
        except MdnsDecodeError:
            self.malformed += 1
            raise
        if message.opcode or message.rcode:
            return [], []  # (RFC 6762 §18.3, §18.11)
        if message.is_response:
            if source[1] != MDNS_PORT:
                # RFC 6762 §6: a response from another port is no Multicast DNS response
                # (it MUST be ignored); a querier of ours asks from 5353, not as a legacy
                # one, so no answer to it comes from elsewhere.
                self.ignored += 1
                return [], []
            return [], self._take_answers(message.records, wanted, now)
        names = self.names
        if not names:
            return [], []
        # Known answers (RFC 6762 §7.1, the answer section): the querier has them, with half
        # their TTL or more.
        known = {
            (record.name, record.address)
            for record in message.records[: message.answer_records]
            if record.ttl >= ANSWER_TTL // 2
        }
        # Unicast goes only to a source on the link asked from (RFC 6762 §11), and at most
        # once a message (the answer to its first question it gets one for).
        sends: list[Send] = []
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
                # questions, by unicast.
                if on_link and unicast is None:
                    reply = encode_answer(
                        question.name, [address], ttl=LEGACY_TTL, reply_to=message
                    )
                    if len(reply) <= MAX_MESSAGE:
                        unicast = reply
                continue
            answer = encode_answer(question.name, [address], ttl=ANSWER_TTL)
            key = (question.name, link)
            if now - self._answered.get(key, -math.inf) < ANSWER_INTERVAL:
                # Multicast a moment ago; a querier that asked for a unicast answer (the QU
                # bit, RFC 6762 §5.4), or asked us directly (§5.5), gets one.
                if (question.unicast_response or direct) and on_link:
                    unicast = unicast or answer
                continue
            self._answered[key] = now
            sends.append(Send(answer, link=link))  # (on the link asked from, not the others)
        if unicast is not None and self._may_unicast(now):
            sends.append(Send(unicast, to=source))
        return sends, []

    def _may_unicast(self, now: float) -> bool:
        """Whether a unicast answer may go now (at most ``UNICAST_PER_SECOND`` a second)."""
        start, count = self._unicast
        if now - start >= 1.0:
            start, count = now, 0
        if count >= UNICAST_PER_SECOND:
            return False
        self._unicast = (start, count + 1)
        return True

    def _take_answers(
        self, records: tuple[Record, ...], wanted: Container[str], now: float
    ) -> list[str]:
        """Answers: for names being resolved, or already found (a cache-flush record
        updates what is kept); a goodbye (TTL 0, RFC 6762 §10.1) removes its record (that
        address of the name; the last one a second later), in the order the records come.
        The rest are not kept.  Each address is kept for its own record's TTL; a
        cache-flush record replaces the addresses of its type (A or AAAA) heard over a
        second ago (§10.2: one answer may come in several packets), and other records add
        (at most ``KEPT_PER_NAME`` addresses, the newest).  Returns the names resolved."""
        kept = self.found
        books = self._records
        for stale in [n for n, (_, until) in kept.items() if until <= now]:
            del kept[stale]
            books.pop(stale, None)
        touched: dict[str, bool] = {}  # (each name changed: whether it has a new address)
        fresh: set[tuple[str, str]] = set()  # (heard in this message)
        for record in records:
            name = record.name
            if name not in wanted and name not in kept:
                continue
            address = record.address
            book = books.get(name)
            if not record.ttl:  # a goodbye: this address of the name is going away
                entry = None if book is None else book.get(address)
                if book is not None and entry is not None:
                    holding = [a for a, (_, until) in book.items() if until > now]
                    if (name, address) in fresh or holding != [address]:
                        del book[address]
                    else:
                        # §10.1: the last one is kept a second more, not dropped at once
                        # (another responder may answer for it meanwhile, and anyone on
                        # the link can send a goodbye).
                        entry[1] = min(entry[1], now + GOODBYE_GRACE)
                    touched.setdefault(name, False)
                continue
            if address_problem(address, 1, ipv6=None) is not None or no_destination(address):
                self.ignored += 1  # (0.0.0.0, multicast, broadcast: no one to check)
                continue
            if name not in wanted and not record.cache_flush:
                continue  # (a shared record of a name no one resolves now: not taken)
            if book is None:
                book = books[name] = {}
            if record.cache_flush:
                v6 = ":" in address
                for old in [
                    a for a, (heard, _) in book.items() if (":" in a) == v6 and heard < now - 1.0
                ]:
                    del book[old]
            book.pop(address, None)  # (the newest last)
            book[address] = [now, now + min(record.ttl, ANSWER_TTL)]
            fresh.add((name, address))
            while len(book) > KEPT_PER_NAME:
                del book[next(iter(book))]
            touched[name] = True
        resolved = []
        for name, new in touched.items():
            live = self._live(name, now)
            if not live:
                kept.pop(name, None)
                books.pop(name, None)
                continue
            book = books[name]
            kept[name] = (live, max(until for _, until in book.values()))
            if new:
                resolved.append(name)
        return resolved

    def _live(self, name: str, now: float) -> tuple[str, ...]:
        """The addresses of ``name`` whose records still hold, IPv4 first (the family more
        peers can reach), then as they came."""
        book = self._records.get(name)
        if not book:
            return ()
        live = [address for address, (_, until) in book.items() if until > now]
        live.sort(key=lambda a: ":" in a)
        return tuple(live)
