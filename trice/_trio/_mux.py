"""One UDP socket shared by many agents (Pion's ``UDPMux``): :func:`open_udp_mux`.

A server that talks to many peers (a media server, a game server) gives them all the same
host candidate, one address and port, which one firewall rule opens; and it holds one file
descriptor, not one an agent.  The mux's task reads the socket and hands each datagram to
the agent it is for:

* a Binding request by its USERNAME, whose first part is the ufrag of the agent it asks
  (RFC 8445 §7.2.2);
* an answer to an agent's check by its transaction ID, which the mux noted as the check
  went out;
* anything else (the peer's data) by where it comes from: an address is the agent's once
  the agent has sent to it, and is kept for it once the peer there answered one of its
  checks (a round trip: the proof that the peer there holds the agent's credentials, and is
  there): another agent's check to that address does not take it.  An address that two
  agents proved (two agents whose peers share an address: two of one peer's agents, muxes
  facing each other) is routed by answers only: its data, which could be for either, is
  dropped and counted (``MuxStatistics.ambiguous``), never handed to the other agent.  An
  agent whose ICE failed lets its addresses go.

An agent opened with ``mux=`` signals a host candidate at the mux's address instead of
binding sockets of its own, and is otherwise the same agent.  Its STUN servers are asked
from the mux's socket, by the mux, once for all its agents (Pion's ``UniversalUDPMux``): the
answer is the mux's server-reflexive address, a candidate of each agent.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import ipaddress
import socket
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

import trio

from trice import stun
from trice._errors import StunDecodeError, UsageError
from trice._trio._exits import exit_nursery, open_block_nursery
from trice._trio._log import logger
from trice._trio._transport import (
    BINDING_REQUEST,
    MAX_STUN,
    READ_BATCH,
    Address,
    OnReply,
    bind_socket,
    refused,
    send_or_tell,
    stun_transaction,
)
from trice.ice._gathering import no_destination

if TYPE_CHECKING:
    from trice._config import Timing

__all__ = [
    "MuxContext",
    "MuxStatistics",
    "MuxTransport",
    "UdpMux",
    "UdpMuxContext",
    "check_mux_address",
    "open_udp_mux",
]

_CLASS_BITS = 0x0110  # (where a message type holds its class, RFC 8489 §5)
_SUCCESS = stun.message_type(0, stun.MessageClass.SUCCESS)
_ERROR = stun.message_type(0, stun.MessageClass.ERROR)
_ANSWERS = (_SUCCESS, _ERROR)

#: Transaction IDs of the agents' checks kept for routing their answers, at most (the
#: oldest go first; an answer that finds none goes by its source, as data does).
TRANSACTIONS_KEPT = 4096

# How an address routed to a share is proven (see UdpMux._by_source), weakest first.
_CLAIMED, _ANSWERED, _ROUND_TRIP = 0, 1, 2

#: An agent's handler of a datagram (``Agent._dispatch``).
Deliver = Callable[["MuxTransport", bytes, Address], None]

#: How long a STUN server's answer to the mux is given to the agents that ask for it, in
#: seconds (as long as Pion's ``UniversalUDPMux`` keeps it); an agent that asks later has the
#: mux ask again, and finds the mapping of then.
ANSWER_KEPT = 25.0


class _Question:
    """A Binding request the mux has in flight to one STUN server, which the agents that
    ask meanwhile wait for."""

    __slots__ = ("answer", "done", "scope")

    def __init__(self) -> None:
        self.answer: stun.Message | None = None
        self.done = trio.Event()
        self.scope = trio.CancelScope()  # (cancelled when the mux closes)


class MuxHooks:
    """What a mux tells the agent of a share besides datagrams (set by the agent)."""

    __slots__ = ("context", "failed", "lost", "pending", "refused")

    def __init__(self) -> None:
        #: The agent task's context, in which its datagrams are handled.
        self.context: contextvars.Context | None = None
        #: Handling a datagram raised: the agent's task raises it (not the mux's).
        self.failed: Callable[[BaseException], None] | None = None
        #: The mux closed while the agent is open: the transport is lost.
        self.lost: Callable[[int], None] | None = None
        #: The kernel refused a datagram of the agent's (see ``RefusalSink``).
        self.refused: Callable[[OSError, Address, Address], None] | None = None
        #: Whether the agent's check with this transaction ID still waits for its answer
        #: (``None``: none does).  An answer it took ends the check's route (see
        #: ``UdpMux._route``); one it dropped (unsigned: a stranger's) leaves it.
        self.pending: Callable[[bytes], bool] | None = None


@dataclass(frozen=True, slots=True)
class MuxStatistics:
    """A :class:`UdpMux`'s counters.

    Attributes:
        agents: agents that use the mux now.
        addresses: peer addresses it routes now.
        delivered: datagrams handed to an agent.
        unroutable: datagrams for no agent it knows (a Binding request for an unknown ufrag,
            anything else from an address no agent has sent to), dropped.
        ambiguous: datagrams from an address that two agents proved, which could be for
            either: dropped (data, and STUN that is neither a Binding request nor an answer
            to an agent's check: a keepalive indication, a late or repeated answer).
        withheld: data an agent sent to an address that another agent proved, or two did:
            not sent (the peer there would take it for the other agent's, as it comes from
            the mux's address: an ICE-lite agent's peer that forged its checks' source, say).
    """

    agents: int
    addresses: int
    delivered: int
    unroutable: int
    ambiguous: int = 0
    withheld: int = 0


#: What :func:`open_udp_mux` hands :class:`UdpMux`'s constructor: a mux built elsewhere would
#: have no task reading its socket.
_OPENING = object()


class UdpMux:
    """A UDP socket that many agents share; made by :func:`open_udp_mux` (built directly,
    it raises :class:`~trice.UsageError`).

    Pass it to :func:`trice.open_agent` (``mux=``); leave the agents before the mux.
    """

    __slots__ = (
        "__weakref__",  # (an application's WeakSet or weakref.finalize)
        "_ambiguous",
        "_answers",
        "_asking",
        "_by_source",
        "_by_tid",
        "_by_ufrag",
        "_closed",
        "_delivered",
        "_pending",
        "_send_lock",
        "_token",
        "_unroutable",
        "_withheld",
        "family",
        "local_address",
        "sock",
    )

    def __init__(self, sock: socket.socket, *, _key: object = None) -> None:
        if _key is not _OPENING:
            # (Built directly, no task read its socket: its agents' checks went unanswered.)
            raise UsageError(
                "a trice.UdpMux is made by trice.open_udp_mux(...), not built directly"
            )
        #: The mux's UDP socket, which its task reads (the application does not read it).
        self.sock = sock
        #: The socket's address family (``socket.AF_INET`` or ``socket.AF_INET6``).
        self.family = sock.family
        host, port = sock.getsockname()[:2]
        #: The address and port the mux is bound to, which is every agent's host candidate.
        self.local_address: Address = (host.split("%", 1)[0], port)
        self._by_ufrag: dict[str, MuxTransport] = {}
        # Each peer address: the share it is routed to (``None``: two proved it), and how
        # it is proven: not (``_CLAIMED``), by an ICE-lite share's answer to a check from
        # there (``_ANSWERED``: a check's source may be forged), or by a success answer from
        # there to the share's own check (``_ROUND_TRIP``).
        self._by_source: dict[Address, tuple[MuxTransport | None, int]] = {}
        # The shares' checks in flight, by transaction ID, with where each went (see
        # TRANSACTIONS_KEPT).
        self._by_tid: dict[bytes, tuple[MuxTransport, Address]] = {}
        self._delivered = 0
        self._unroutable = 0
        self._ambiguous = 0
        self._withheld = 0
        self._closed = False
        self._token: trio.lowlevel.TrioToken | None = None  # (the run it opened in)
        # The sends waiting for the socket to take a datagram take turns (one task at a time
        # may wait on a socket in trio).
        self._send_lock: trio.Lock | None = None
        # STUN, for the agents' server-reflexive candidates (see _server_reflexive): the
        # mux's transactions in flight, the question to each server, and the answers kept
        # (each with the time it came).
        self._pending: dict[bytes, OnReply] = {}
        self._asking: dict[Address, _Question] = {}
        self._answers: dict[Address, tuple[stun.Message, float]] = {}

    @property
    def closed(self) -> bool:
        """Whether the mux is closed (its block has ended, or it was cancelled)."""
        return self._closed

    def statistics(self) -> MuxStatistics:
        """The mux's counters now."""
        return MuxStatistics(
            agents=len(self._by_ufrag),
            addresses=len(self._by_source),
            delivered=self._delivered,
            unroutable=self._unroutable,
            ambiguous=self._ambiguous,
            withheld=self._withheld,
        )

    def _owner(self, ufrag: str) -> MuxTransport | None:
        """The share of the agent of ``ufrag`` on this mux, or ``None``."""
        return self._by_ufrag.get(ufrag)

    def _attach(self, ufrag: str, transport: MuxTransport) -> None:
        if self._closed:
            raise UsageError("the UDP mux is closed")
        if ufrag in self._by_ufrag:
            raise UsageError(f"an agent of ufrag {ufrag} uses this UDP mux already")
        self._by_ufrag[ufrag] = transport

    def _detach(self, transport: MuxTransport) -> None:
        if self._by_ufrag.get(transport.ufrag) is transport:
            del self._by_ufrag[transport.ufrag]
        self._release(transport)

    def _release(self, transport: MuxTransport, *, keep: Collection[Address] = ()) -> None:
        """``transport`` routes its addresses no more (but those in ``keep``), nor the
        answers to its checks in flight (a late one would prove an address again); one that
        two agents proved goes to the other."""
        by_tid = self._by_tid
        for tid in [tid for tid, (share, _) in by_tid.items() if share is transport]:
            del by_tid[tid]
        self._let_go(transport, [source for source in transport.claimed if source not in keep])

    def _let_go(self, transport: MuxTransport, sources: Collection[Address]) -> None:
        """``transport`` routes ``sources`` (of its claimed addresses) no more; one that two
        agents proved goes to the other, with the other's own proof (an answer stays an
        answer, though a round trip made it both's)."""
        by_source = self._by_source
        for source in sources:
            held = by_source.get(source)
            if held is None:
                continue
            if held[0] is transport:
                del by_source[source]
            elif held[0] is None:
                others = [
                    share
                    for share in self._by_ufrag.values()
                    if share is not transport and source in share.claimed
                ]
                if len(others) == 1:
                    by_source[source] = (others[0], others[0].claimed[source])
                elif others:
                    by_source[source] = (None, max(share.claimed[source] for share in others))
                else:
                    del by_source[source]
        claimed = transport.claimed
        for source in sources:
            claimed.pop(source, None)

    def _proved(self, transport: MuxTransport, source: Address, proof: int = _ROUND_TRIP) -> None:
        """The peer at ``source`` answered a check of ``transport``'s with success (or, an
        ICE-lite share's ``proof``, ``_ANSWERED``: it answered a check from there): the
        address is its, unless another agent proved it as well (then it is both's,
        ``None``: its data is dropped, never handed to the wrong agent).  But an answer
        leaves an address another agent's round trip proved as it is: a check's source may
        be forged, a round trip's may not.  (A round trip does not take an address from
        an answer: two agents' peers may share one address.)"""
        by_source = self._by_source
        held = by_source.get(source)
        if held is not None and held[1] and held[0] is not transport:
            if proof < held[1]:
                if held[0] is not None:
                    return  # (another's, proved better)
                # (Both's, proved better: this answer is noted below, for when one leaves.)
            else:
                if held[0] is not None:
                    logger.warning(
                        "UDP mux %s: two agents (%s, %s) talk to %s: its data is dropped",
                        self.local_address,
                        held[0].ufrag,
                        transport.ufrag,
                        source,
                    )
                by_source[source] = (None, proof)  # (as strong as the held one, or stronger)
        else:
            if held is not None and held[0] is not None and held[0] is not transport:
                held[0].claimed.pop(source, None)
            if held is not None and held[0] is transport and held[1] > proof:
                proof = held[1]
            by_source[source] = (transport, proof)
        claimed = transport.claimed
        claimed[source] = max(proof, claimed.get(source, _CLAIMED))

    async def _serve(self) -> None:
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)  # (also where others get their turn)
            self._read_batch()

    def _read_batch(self) -> None:
        """Route what the socket holds, up to a batch, without waiting."""
        recvfrom = self.sock.recvfrom
        for _ in range(READ_BATCH):
            try:
                data, source = recvfrom(65536)
            except BlockingIOError:
                break
            except OSError as exc:  # (an ICMP error for an earlier send, say)
                logger.debug("UDP mux %s: %s", self.local_address, exc)
                continue
            self._route(data, source[:2])

    async def _server_reflexive(
        self,
        server: Address,
        timing: Timing,
        on_refused: Callable[[OSError, Address, Address], None] | None = None,
        *,
        fresh_for: float | None = None,
    ) -> stun.Message:
        """The answer of the STUN server at ``server`` to a Binding request from the mux's
        socket: its mapped address is the mux's server-reflexive address, for every agent
        of the mux that asks.  Retransmitted per RFC 8489 §6.2.1 (``timing``'s RTO) until it
        comes; the caller bounds the wait.

        One request at a time goes to a server: an agent that asks while one is in flight
        waits for its answer (and asks itself only if the asker gave up first).  A success
        that holds a mapped address is kept and is every asking agent's answer for
        ``fresh_for`` seconds (:data:`ANSWER_KEPT` if ``None``; a keepalive asks for a
        shorter time): agents opened together on one mux cost the server one request.
        Errors are not kept.  A request the kernel refuses to send (a firewall's EPERM, say)
        is told to ``on_refused``, the asking agent's (see ``MuxHooks.refused``).

        Raises:
            trio.ClosedResourceError: the mux is closed, or closed while this waited.
        """
        kept_for = ANSWER_KEPT if fresh_for is None else fresh_for
        answer = await self._ask(server, timing, on_refused, kept_for)
        if self._closed:  # (closed as the answer came: the mux's address is no more)
            raise trio.ClosedResourceError("the UDP mux closed")
        return answer

    async def _ask(
        self,
        server: Address,
        timing: Timing,
        on_refused: Callable[[OSError, Address, Address], None] | None,
        fresh_for: float,
    ) -> stun.Message:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the UDP mux is closed")
            kept = self._answers.get(server)
            if kept is not None and trio.current_time() - kept[1] < fresh_for:
                await trio.lowlevel.checkpoint()
                return kept[0]
            question = self._asking.get(server)
            if question is None:
                break
            await question.done.wait()
            if question.answer is not None:
                return question.answer
        question = self._asking[server] = _Question()
        try:
            with question.scope:
                request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST)
                send = functools.partial(self._send_nowait, on_refused=on_refused)
                answer = await stun_transaction(send, self._pending, timing, server, request)
                question.answer = answer
                if answer.message_class is stun.MessageClass.SUCCESS and (
                    answer.get(stun.XorMappedAddress) or answer.get(stun.MappedAddress)
                ):
                    now = trio.current_time()
                    answers = self._answers
                    # (Answers past ANSWER_KEPT serve no agent: let go, or every server any
                    # agent of the mux ever asked stayed, one decoded answer each.)
                    for stale in [s for s, (_, at) in answers.items() if now - at >= ANSWER_KEPT]:
                        del answers[stale]
                    answers[server] = (answer, now)
                return answer
            raise trio.ClosedResourceError("the UDP mux closed")  # (its close ended the question)
        finally:
            del self._asking[server]
            question.done.set()

    def _answered(self, data: bytes, source: Address) -> bool:
        """Whether ``data``, a STUN answer, is one to the mux's own request (see
        :meth:`_server_reflexive`); if so it is handled here (or dropped, and counted, if
        malformed)."""
        handler = self._pending.get(data[8:20])  # (the transaction ID, RFC 8489 §5)
        if handler is None:
            return False
        try:
            message = stun.decode(data)
        except StunDecodeError:
            self._unroutable += 1
            return True
        handler(message, source)
        return True

    def _send_nowait(
        self,
        data: bytes,
        address: Address,
        on_refused: Callable[[OSError, Address, Address], None] | None = None,
    ) -> bool:
        """Send a request of the mux's own (see :meth:`_server_reflexive`), as
        ``MuxTransport.send_nowait`` sends an agent's."""
        return send_or_tell(
            self.sock,
            data,
            address,
            closed=self._closed,
            local=self.local_address,
            on_refused=on_refused,
        )

    def _route(self, data: bytes, source: Address) -> None:
        transport = asked = None
        kind = stun.peek_type(data)
        if kind == BINDING_REQUEST:
            ufrag = asked_ufrag(data)
            if ufrag is not None and source != self.local_address:
                # (A check from the mux's own address is an agent's of this mux: two agents
                # of one mux never reach each other, see open_udp_mux.)
                transport = self._by_ufrag.get(ufrag)
        else:
            if kind is not None and kind & _CLASS_BITS in _ANSWERS:
                if self._pending and self._answered(data, source):
                    return
                asked = self._by_tid.get(data[8:20])  # (an agent's check's)
                if asked is not None and asked[0].closed:
                    del self._by_tid[data[8:20]]
                    asked = None
                if asked is not None:
                    transport = asked[0]
                    if kind & _CLASS_BITS == _SUCCESS and source == asked[1]:
                        # (From where the check went: a round trip.  From elsewhere, it is
                        # delivered, and the agent's core fails the pair as asymmetric.)
                        self._proved(transport, source)
            if transport is None:
                held = self._by_source.get(source)
                if held is not None:
                    transport = held[0]
                    if transport is None:
                        self._ambiguous += 1
                        return
        if transport is None:
            self._unroutable += 1
            return
        self._delivered += 1
        hooks = transport.hooks
        try:
            if hooks.context is not None:
                hooks.context.run(transport.deliver, transport, data, source)
            else:
                transport.deliver(transport, data, source)
        except Exception as exc:
            # One agent's failure is that agent's: its task raises it, the mux goes on.
            transport.close()
            if hooks.failed is None:
                raise
            hooks.failed(exc)
        if asked is not None and (hooks.pending is None or not hooks.pending(data[8:20])):
            # (The check took its answer: its route ends.  An answer the agent dropped, a
            # stranger's who saw the check go by, left it for the peer's own, which else
            # went by its source: dropped as ambiguous where two agents proved it.)
            self._by_tid.pop(data[8:20], None)

    def _close(self) -> None:
        self._closed = True
        for question in self._asking.values():
            question.scope.cancel()  # (its asker and the agents waiting for it hear at once)
        shares = list(self._by_ufrag.values())
        self._by_ufrag.clear()
        self._by_source.clear()
        self._by_tid.clear()  # (else its agents, gone, stayed referenced from the mux)
        for share in shares:
            share.closed = True
            share.claimed.clear()
            if share.hooks.lost is not None:
                share.hooks.lost(share.base)  # (its agent's pairs on the mux fail)
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


def asked_ufrag(data: bytes) -> str | None:
    """The first part of a Binding request's USERNAME (the ufrag of the agent it asks),
    decoded as the agent decodes it (the agent checks the whole message); ``None`` for a
    message longer than an agent decodes (``MAX_STUN``: its attributes are not walked)."""
    if len(data) > MAX_STUN:
        return None
    username = stun.peek_username(data)
    if username is None:
        return None
    name, sep, _ = username.partition(b":")
    return name.decode("utf-8", "surrogateescape") if sep else None


class MuxTransport:
    """An agent's share of a :class:`UdpMux`: the agent's ``Transport`` for its host
    candidate at the mux's address."""

    __slots__ = (
        "answers_prove",
        "base",
        "claimed",
        "closed",
        "deliver",
        "family",
        "hooks",
        "kept",
        "local_address",
        "mux",
        "ufrag",
        "waiting",
    )

    def __init__(self, base: int, mux: UdpMux, ufrag: str, deliver: Deliver) -> None:
        self.base = base
        self.mux = mux
        self.ufrag = ufrag
        self.deliver = deliver
        self.hooks = MuxHooks()
        self.local_address = mux.local_address
        self.family = mux.family
        self.closed = False
        # The addresses routed to it, each with how it proved it (see UdpMux._by_source).
        self.claimed: dict[Address, int] = {}
        #: Kept over an ICE restart for the pair of before (see ``rename``, ``forget_kept``).
        self.kept: tuple[Address, ...] = ()
        #: Its success answers prove an address (an ICE-lite agent's: see ``_claim``).
        self.answers_prove = False
        self.waiting: set[trio.CancelScope] | None = None  # (sends waiting for the socket)
        mux._attach(ufrag, self)

    def rename(self, ufrag: str, *, keep: Collection[Address] = ()) -> None:
        """The agent's ufrag changed (an ICE restart): its addresses are routed to it no
        more, but for those in ``keep`` (the pair selected before, which carries data until
        the new checks select one), nor the answers to its checks of before.  The new
        generation's checks claim theirs again (kept, every address a peer ever used, a
        generation after another, would stay in the table for the agent's life)."""
        mux = self.mux
        if mux._by_ufrag.get(self.ufrag) is self:
            del mux._by_ufrag[self.ufrag]
        self.ufrag = ufrag
        if not self.closed:
            mux._attach(ufrag, self)
            mux._release(self, keep=keep)
            self.kept = tuple(self.claimed)

    def forget_kept(self, still: Collection[Address]) -> None:
        """The pair of before the ICE restart carries data no more: the addresses kept for
        it (see :meth:`rename`) are let go, but for those in ``still`` (the new generation's
        remote addresses).  Kept, an address stayed this agent's for its life, and another
        agent's peer there (a NAT that maps afresh) was dropped as ambiguous."""
        kept, self.kept = self.kept, ()
        if not self.closed:
            self.mux._let_go(self, [address for address in kept if address not in still])

    def let_go_but(self, still: Collection[Address]) -> None:
        """The agent knows none of its addresses but those in ``still`` (its remote
        addresses): the others are let go."""
        if not self.closed:
            self.mux._let_go(self, [address for address in self.claimed if address not in still])

    def _claim(self, data: bytes, address: Address) -> bool:
        """What this agent sends to ``address``: a check's transaction ID is noted, for its
        answer (which proves the address, see ``UdpMux._proved``); a check or data routes
        the address to this agent unless another agent proved it.  A success answer takes
        only an address nobody has (a peer that moved, whose data may come before the
        agent's check: answering shows nothing of who is there, a check's source may be
        forged), and an error answer none; but an ICE-lite agent's success answer proves the
        address, unless another agent proved it: a lite agent sends no check, and has no
        other proof (``answers_prove``).  Returns whether to send it: not data to an
        address another agent proved, or two did (the peer there would take it for that
        agent's: it comes from the same address; counted in ``withheld``)."""
        mux = self.mux
        by_source = mux._by_source
        held = by_source.get(address)
        if held is not None and held[0] is self and held[1]:
            return True  # (the common case: its own peer, proven; its answers come from there)
        kind = stun.peek_type(data)
        if kind is None and held is not None and held[1]:
            mux._withheld += 1  # (another's, or two agents': see the docstring)
            return False
        if kind == BINDING_REQUEST:
            by_tid = mux._by_tid
            by_tid[data[8:20]] = (self, address)
            if len(by_tid) > TRANSACTIONS_KEPT:
                del by_tid[next(iter(by_tid))]
        if kind is not None and kind & _CLASS_BITS in _ANSWERS:
            if kind & _CLASS_BITS == _ERROR:
                return True  # (a stranger's request with our ufrag must not take an address)
            if self.answers_prove:
                mux._proved(self, address, _ANSWERED)
                return True
            if held is not None:
                return True  # (a success answer takes only an address nobody has)
        if held is not None and (held[0] is self or held[1]):
            return True  # (its own already; or proven by another, or by two)
        if held is not None and held[0] is not None:
            held[0].claimed.pop(address, None)
        by_source[address] = (self, _CLAIMED)
        self.claimed[address] = _CLAIMED
        return True

    def release(self) -> None:
        """The agent's ICE failed: its addresses are routed to it no more (a peer that comes
        back at one of them, for another agent, is not kept from it)."""
        self.mux._release(self)

    def send_nowait(self, data: bytes, address: Address, *, retry: bool = False) -> bool:
        """As ``UdpTransport.send_nowait``: a datagram the kernel refuses is told to the
        agent (``hooks.refused``), and ``True``."""
        if self.closed:
            return False
        if not self._claim(data, address):
            return True
        return send_or_tell(
            self.mux.sock,
            data,
            address,
            closed=self.closed,
            local=self.local_address,
            on_refused=self.hooks.refused,
        )

    async def send(
        self, data: bytes, address: Address, check: Callable[[], None] | None = None
    ) -> None:
        """Send one datagram, waiting only while the socket would block (see
        ``UdpTransport.send``)."""
        while True:
            if self.closed:
                raise trio.ClosedResourceError("the agent's share of the UDP mux is closed")
            if not self._claim(data, address):
                return
            try:
                self.mux.sock.sendto(data, address)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if self.closed or exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError(
                        "the agent's share of the UDP mux is closed"
                    ) from None
                # (ICMP errors and EPERM: UDP semantics, told to the agent)
                if refused(exc, data, False, address) and self.hooks.refused is not None:
                    self.hooks.refused(exc, self.local_address, address)
                return
            mux = self.mux
            lock = mux._send_lock
            if lock is None:
                lock = mux._send_lock = trio.Lock()
            waiting = self.waiting
            if waiting is None:
                waiting = self.waiting = set()
            with trio.CancelScope() as scope:  # (woken by wake(): the connection closed, say)
                waiting.add(scope)
                try:
                    async with lock:
                        if self.closed or mux.closed:  # (closed while this waited its turn)
                            raise trio.ClosedResourceError(
                                "the agent's share of the UDP mux is closed"
                            )
                        await trio.lowlevel.wait_writable(mux.sock)
                finally:
                    waiting.discard(scope)
            if check is not None:
                check()

    def read_waiting(self) -> None:
        """Route what the mux's socket already holds, now, as its reader would: a check
        about to be sent again or given up looks for its answer first (see
        ``CheckRun._answered_meanwhile``)."""
        if not (self.closed or self.mux.closed):
            self.mux._read_batch()

    def wake(self) -> None:
        """Wake the sends waiting for the socket: they look at their connection again (the
        socket is shared: closing it, as a host socket's sends are woken, is no way)."""
        for scope in self.waiting or ():
            scope.cancel()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.mux._detach(self)
            self.wake()  # (a send waiting for room on the socket raises now)


def open_udp_mux(host: str = "127.0.0.1", port: int = 0) -> UdpMuxContext:
    """Open one UDP socket, bound to ``host`` (an IP literal) and ``port``, for many agents
    to share; it closes when the block ends.

    Use it as ``async with trice.open_udp_mux("192.0.2.1", 3478) as mux:``, and open each
    agent inside with ``trice.open_agent(config, controlling=..., mux=mux)``.  Agents still
    open when the block ends hear that their pairs on it are gone.

    Raises:
        UsageError: ``host`` is no IP address, or not one address of the host (the
            unspecified address, a multicast one, the broadcast address), or ``port`` is out of
            range.
        OSError: the address cannot be bound (when the block is entered).
        LimitError: the process ran out of file descriptors (when the block is entered).
    """
    check_mux_address("open_udp_mux", host, port, "host candidate")
    return UdpMuxContext(host, port)


def check_mux_address(opener: str, host: object, port: object, candidate: str) -> None:
    """Raise :class:`UsageError` unless ``host`` is one IP address of the host's (a mux's
    address is every agent's ``candidate``) and ``port`` is in 0..65535."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise UsageError(f"{opener}'s port must be 0..65535, not {port!r}")
    try:
        if not isinstance(host, str):
            raise ValueError(host)
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"{opener}'s host must be an IP address, not {host!r}") from None
    if no_destination(host) or (isinstance(ip, ipaddress.IPv4Address) and _broadcast(host)):
        # (Unspecified, multicast, or of 0.0.0.0/8 or 240.0.0.0/4, or a network's broadcast
        # address: Linux binds some of these, but no check reaches such a candidate.)
        raise UsageError(
            f"{opener}'s host must be one address of the host (it is every agent's "
            f"{candidate}), not {host}"
        )
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped is not None or ip.scope_id):
        # (IPv6 sockets here are IPv6-only, and a candidate's address has no zone.)
        raise UsageError(
            f"{opener}'s host must be an IPv4 or a plain IPv6 address (no IPv4-mapped one, "
            f"no zone index), not {host}"
        )


def _broadcast(host: str) -> bool:
    """Whether the IPv4 address ``host`` is a broadcast address here (a network's, such as
    127.255.255.255): the kernel refuses a datagram socket one without SO_BROADCAST (the
    peer's check would be refused so), which a connect() tells without sending anything."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
    except PermissionError:
        return True
    except OSError:
        pass  # (no route, no descriptor: the bind says what it is)
    return False


class _Mux(Protocol):
    local_address: Address
    _token: trio.lowlevel.TrioToken | None

    async def _serve(self) -> None: ...

    def _close(self) -> None: ...


_M = TypeVar("_M", bound=_Mux)


class MuxContext(Generic[_M]):
    """An async context manager that opens a mux's socket and starts the mux's task on
    entry, and closes both on exit (an exception of the block goes on as itself, as
    :func:`~trice.open_agent`'s does): what :func:`open_udp_mux` and
    :func:`~trice.open_tcp_mux` return, each of its kind."""

    __slots__ = ("_host", "_manager", "_mux", "_nursery", "_port")

    #: ``"udp"`` or ``"tcp"``: the kind of mux, as its opener and its task name it.
    kind: ClassVar[str]

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._mux: _M | None = None
        self._nursery: trio.Nursery | None = None

    def _open(self, port_range: tuple[int, int] | None) -> _M:
        """The mux, on a socket bound to the host and ``port_range`` (one port, or any)."""
        raise NotImplementedError

    async def __aenter__(self) -> _M:
        if self._manager is not None:
            raise UsageError(f"an open_{self.kind}_mux(...) context can be entered only once")
        manager = open_block_nursery(f"open_{self.kind}_mux")
        mux = self._mux = self._open((self._port, self._port) if self._port else None)
        mux._token = trio.lowlevel.current_trio_token()  # (its agents must be of this run)
        self._manager = manager
        try:
            nursery = await manager.__aenter__()
        except BaseException:
            mux._close()
            raise
        self._nursery = nursery
        name = f"{self.kind} mux {self._host}:{mux.local_address[1]}"
        nursery.start_soon(mux._serve, name=name)
        return mux

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        manager, mux, nursery = self._manager, self._mux, self._nursery
        assert manager and mux and nursery, "__aexit__ without __aenter__"
        try:
            nursery.cancel_scope.cancel()  # (the mux's task: the block is over)
            return await exit_nursery(manager, exc_type, exc, tb)
        finally:
            mux._close()


class UdpMuxContext(MuxContext[UdpMux]):
    """What :func:`open_udp_mux` returns: an async context manager that binds the socket and
    starts the mux's task on entry, and closes both on exit (an exception of the block goes
    on as itself, as :func:`~trice.open_agent`'s does).  Made by :func:`open_udp_mux`."""

    __slots__ = ()
    kind = "udp"

    def _open(self, port_range: tuple[int, int] | None) -> UdpMux:
        return UdpMux(bind_socket(self._host, port_range), _key=_OPENING)
