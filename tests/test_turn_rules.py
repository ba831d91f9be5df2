"""RFC 8656 and RFC 8489 rules of the pure TURN client that the other TURN tests did not pin
(found by a mutation review): the bounds of LIFETIME, SOFTWARE and channel numbers, one
transaction per permission or channel at a time, channels that lapse or are refused, data
taken while a binding is renewed or the allocation is deleted, the smoothed round trip, and
what follows a stale nonce, an early refresh and a deletion."""

from __future__ import annotations

import pytest
from test_turn import (
    PASSWORD,
    PEER,
    PEER2,
    USER,
    Address,
    FakeServer,
    _binds,
    _requests,
    allocated,
    exchange,
    run_until,
    state,
)

from trice import stun
from trice.stun import Method
from trice.turn import TurnClient, TurnState


def _sent_requests(client: TurnClient, now: float) -> list[tuple[Method, bytes]]:
    """The requests the client queued (their methods and transaction IDs), delivered to
    nobody; the ChannelData it queued is dropped."""
    wire: list[bytes] = []
    while (data := client.poll_transmit(now)) is not None:
        if not 0x40 <= data[0] <= 0x7F:
            wire.append(data)
    return [(Method(message.method), message.transaction_id) for message in _requests(wire)]


def _bound_numbers(server: FakeServer) -> list[tuple[Address, int]]:
    """Each ChannelBind the server was asked, in order: for which peer, with which number."""
    return [(peer, number) for _, peer, number in _binds(server)]


# -- the bounds of the client's options and of channel numbers --------------------------------


def test_the_largest_lifetime_a_lifetime_attribute_holds_is_taken() -> None:
    """LIFETIME is 32 bits (RFC 8656 §18.4): 0xFFFFFFFF is the largest that can be asked,
    and one more is refused."""
    TurnClient(USER, PASSWORD, reliable=False, lifetime=0xFFFFFFFF)
    with pytest.raises(ValueError):
        TurnClient(USER, PASSWORD, reliable=False, lifetime=0x100000000)


def test_a_software_of_127_characters_is_taken_and_128_refused() -> None:
    """SOFTWARE must be fewer than 128 characters (RFC 8489 §14.14)."""
    TurnClient(USER, PASSWORD, reliable=False, software="s" * 127)
    with pytest.raises(ValueError):
        TurnClient(USER, PASSWORD, reliable=False, software="s" * 128)


def test_every_channel_number_up_to_0x4fff_is_given() -> None:
    """Channel numbers are 0x4000 through 0x4FFF (RFC 8656 §12): 4096 peers get them all,
    the last included, and the next peer none (it goes on in Send indications)."""
    client, server = allocated(lifetime=3600)
    client.send_to_peer(("192.0.2.10", 1), b"x", 1.0)
    exchange(client, server, 1.0)
    for port in range(2, 4098):
        client.send_to_peer(("192.0.2.10", port), b"x", 1.0)
    exchange(client, server, 1.0)
    numbers = [number for _, number in _bound_numbers(server)]
    assert len(numbers) == 4096 and max(numbers) == 0x4FFF
    client.send_to_peer(("192.0.2.10", 5000), b"x", 1.0)
    exchange(client, server, 1.0)
    assert len(_bound_numbers(server)) == 4096
    assert server.relayed[-1] == (("192.0.2.10", 5000), b"x", "indication")


def test_over_udp_ten_permissions_at_most_are_asked_at_once() -> None:
    """RFC 8489 §6.2: at most ten transactions are outstanding with one server, so twelve
    peers' data asks ten permissions at first."""
    client, _ = allocated(lifetime=3600)
    for i in range(12):
        client.send_to_peer((f"192.0.2.{i + 1}", 6000), b"x", 1.0)
    sent = _sent_requests(client, 1.0)
    assert [m for m, _ in sent] == [Method.CREATE_PERMISSION] * 10


# -- permissions and channels: one transaction at a time, and lapses --------------------------


def test_a_permission_that_runs_out_while_its_refresh_is_out_is_not_asked_twice() -> None:
    """A permission installed at 0 s and in use, whose refreshes (from 240 s on) get no
    answer, runs out at 300 s with a refresh still out: no second CreatePermission goes
    beside it (one transaction for one permission, RFC 8656 §9)."""
    client, server = allocated(lifetime=3600)
    client.send_to_peer(PEER, b"x", 0.0)
    exchange(client, server, 0.0)
    exchange(client, server, 0.0)
    assert client.permission_installed(PEER)
    now = 0.0
    running: dict[bytes, float] = {}
    overlaps = 0
    while (deadline := client.next_deadline()) is not None and deadline <= 330.0:
        now = max(now, deadline)
        if now >= 200.0 and not any(t >= 200.0 for t in running.values()):
            client.send_to_peer(PEER, b"y", now)  # (in use)
        client.on_timer(now)
        for method, tid in _sent_requests(client, now):
            if method is Method.CREATE_PERMISSION and tid not in running:
                if any(now - t < 39.5 for t in running.values()):
                    overlaps += 1
                running[tid] = now
    assert overlaps == 0


def test_a_channel_that_ran_out_before_a_late_timer_is_bound_no_more() -> None:
    """The driver's call comes late (a stalled loop), past the channel's 600 s (RFC 8656
    §12), its permission still held: the channel counts as bound no more, so the peer's
    data goes in a Send indication, not as ChannelData on a channel the server dropped."""
    client, server = allocated(lifetime=3600)
    client.send_to_peer(PEER, b"x", 0.0)
    exchange(client, server, 0.0)
    exchange(client, server, 0.0)
    assert client.channel_bound(PEER)
    for now in (100.0, 200.0, 300.0, 400.0):  # (the permission refreshed in its time)
        client.send_to_peer(PEER, b"y", now)
        run_until(client, server, now + 100.0, now=now)
    assert client.channel_bound(PEER)
    server.silent = True
    client.on_timer(601.0)  # (late: the channel's refresh was due at 540)
    assert client.permission_installed(PEER)
    assert not client.channel_bound(PEER)


def test_an_idle_channel_whose_ips_permission_is_in_use_lapses_unbound() -> None:
    """Two peers on one IP, only the second's data going on: the first's channel, idle at
    its refresh (540 s), lapses.  It counts as bound no more, so data for it after the
    server's binding ended (600 s) goes in a Send indication, not on a dead channel."""
    client, server = allocated(lifetime=3600)
    client.send_to_peer(PEER, b"x", 0.0)
    exchange(client, server, 0.0)
    exchange(client, server, 0.0)
    client.send_to_peer(PEER2, b"x", 0.0)
    exchange(client, server, 0.0)
    assert client.channel_bound(PEER) and client.channel_bound(PEER2)
    for now in (100.0, 200.0, 300.0, 400.0, 500.0, 600.0):
        client.send_to_peer(PEER2, b"y", now)
        run_until(client, server, now + 100.0, now=now)
    assert not client.channel_bound(PEER)
    relayed = len(server.relayed)
    client.send_to_peer(PEER, b"late", 700.0)
    exchange(client, server, 700.0)
    assert server.relayed[relayed] == (PEER, b"late", "indication")


def test_data_while_a_lapsed_channels_bind_again_is_out_sends_no_second_bind() -> None:
    """A channel lapsed with its idle permission; data asks the permission again, whose
    grant binds the channel again.  More data while that ChannelBind is out goes in Send
    indications and starts no second ChannelBind for the same channel."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 11.0)
    run_until(client, server, 1000.0, now=11.0)
    assert not client.permission_installed(PEER) and not client.channel_bound(PEER)
    assert client.send_to_peer(PEER, b"y", 1000.0)
    request = client.poll_transmit(1000.0)
    assert request is not None
    for reply in server.handle(request, 1000.0):
        client.on_server_data(reply, 1000.0)
    assert client.permission_installed(PEER)
    first = _sent_requests(client, 1000.0)  # (the queued data, and the ChannelBind)
    assert [m for m, _ in first] == [Method.CHANNEL_BIND]
    assert client.send_to_peer(PEER, b"z", 1000.1)
    assert [m for m, _ in _sent_requests(client, 1000.1)] == []


@pytest.mark.parametrize(("at", "number"), [(800.0, 0x4001), (911.0, 0x4000)])
def test_a_refused_number_serves_another_peer_only_five_minutes_after_its_binding_ended(
    at: float, number: int
) -> None:
    """``a``'s channel, bound at 11 s (held by the server to 611 s at most), lapses, and its
    bind again at 700 s is refused: the number is free for another peer at 911 s (611 s +
    300 s, RFC 8656 §12), not before: ``b`` at 800 s gets a new one, and at 911 s that
    very number, no new one spent."""
    client, server = allocated(lifetime=3600)
    a, b = ("192.0.2.10", 6000), ("192.0.2.11", 6000)
    client.send_to_peer(a, b"x", 11.0)
    run_until(client, server, 700.0, now=11.0)  # (lapsed at 491)
    assert not client.channel_bound(a)
    server.errors[Method.CHANNEL_BIND] = (403, "Forbidden")
    client.send_to_peer(a, b"y", 700.0)
    exchange(client, server, 700.0)
    exchange(client, server, 700.0)
    del server.errors[Method.CHANNEL_BIND]
    client.send_to_peer(b, b"x", at)
    exchange(client, server, at)
    exchange(client, server, at)
    assert _bound_numbers(server)[-1] == (b, number)


def test_a_channel_whose_bind_again_waits_its_pause_is_not_bound_early_when_held_again() -> None:
    """The server never answers ``PEER``'s ChannelBinds: each bind again waits its pause
    (growing; RFC 8656 §12 leaves the number the peer's).  The permission runs out and is
    granted again while such a pause runs: the grant does not cut the pause short (the
    bind again goes at its time, not at once)."""
    client, server = allocated(lifetime=3600)
    held: tuple[float, bytes] | None = None
    granted = False

    def pump(now: float) -> None:
        nonlocal held
        while (frame := client.poll_transmit(now)) is not None:
            if 0x40 <= frame[0] <= 0x7F:
                continue
            method = stun.decode(frame).method
            if method is Method.CHANNEL_BIND:
                continue  # (never answered)
            if method is Method.CREATE_PERMISSION and now >= 200.0:
                if now > 300.0 and held is None:
                    held = (now, frame)  # (answered later, below)
                continue
            for reply in server.handle(frame, now):
                client.on_server_data(reply, now)

    client.send_to_peer(PEER, b"x", 0.0)
    pump(0.0)
    now = 0.0
    while now < 1000.0 and not granted:
        deadline = client.next_deadline()
        now = max(now, min(deadline if deadline is not None else now + 10.0, now + 10.0))
        client.send_to_peer(PEER, b"y", now)  # (in use)
        client.on_timer(now)
        pump(now)
        peer = client._peers[PEER]
        pausing = not peer.busy and now < peer.refresh_at < float("inf")
        if held is not None and pausing and now - held[0] < 30.0:
            granted = True
            for reply in server.handle(held[1], now):
                client.on_server_data(reply, now)
            assert client.permission_installed(PEER)
            sent = _sent_requests(client, now)
            assert Method.CHANNEL_BIND not in [m for m, _ in sent]
    assert granted


# -- peer data taken while the server may still relay it -------------------------------------


def test_channel_data_that_overtakes_the_first_binds_answer_is_taken() -> None:
    """The server bound the channel, and the peer's first ChannelData on it comes before
    the ChannelBind's success (RFC 8656 §12.6: the server relays it once bound): taken."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    permission = client.poll_transmit(1.0)
    assert permission is not None
    for reply in server.handle(permission, 1.0):
        client.on_server_data(reply, 1.0)
    bind = None
    while (frame := client.poll_transmit(1.0)) is not None:
        message = stun.decode(frame)
        if message.method is Method.CHANNEL_BIND:
            bind = frame
        else:
            server.handle(frame, 1.0)  # (the queued data, in a Send indication)
    assert bind is not None
    replies = server.handle(bind, 1.0)
    number = next(iter(server.channels))
    assert client.on_server_data(stun.encode_channel_data(number, b"hi", pad=False), 1.1) == [
        (PEER, b"hi")
    ]
    for reply in replies:
        client.on_server_data(reply, 1.2)
    assert client.channel_bound(PEER)


def test_channel_data_while_a_run_out_permission_is_asked_again_is_taken() -> None:
    """A permission whose refreshes got no answer ran out (300 s) while the next
    CreatePermission is out, and the IP's channel's binding lasts (600 s): ChannelData on
    it is taken (the server may hold both again; the answer is on its way)."""
    client, server = allocated(lifetime=3600)
    client.send_to_peer(PEER, b"x", 0.0)
    exchange(client, server, 0.0)
    exchange(client, server, 0.0)
    assert client.channel_bound(PEER)
    server.silent = True
    now = 0.0
    while (deadline := client.next_deadline()) is not None and deadline <= 300.0:
        now = max(now, deadline)
        client.send_to_peer(PEER, b"y", now)  # (in use)
        client.on_timer(now)
        exchange(client, server, now)
    client.on_timer(300.0)
    exchange(client, server, 300.0)
    assert not client.permission_installed(PEER)
    assert client.on_server_data(stun.encode_channel_data(0x4000, b"hi", pad=False), 301.0) == [
        (PEER, b"hi")
    ]


def test_peer_data_while_the_deallocation_is_out_is_still_taken() -> None:
    """While closing (the Refresh of LIFETIME 0 out), the server still holds the allocation
    and relays the peer's data: ChannelData and Data indications are taken until it is
    deleted."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    exchange(client, server, 1.0)
    assert client.channel_bound(PEER)
    client.close(2.0)
    assert state(client) is TurnState.CLOSING
    assert client.on_server_data(stun.encode_channel_data(0x4000, b"a", pad=False), 2.0) == [
        (PEER, b"a")
    ]
    assert client.on_server_data(server.data_indication(PEER2, b"b"), 2.0) == [(PEER2, b"b")]


# -- the round trip ---------------------------------------------------------------------------


def test_the_round_trip_is_smoothed_by_an_eighth_of_each_new_measurement() -> None:
    """Answers to requests sent once: the first measures the round trip, each later one
    moves it an eighth of the way (RFC 6298 §2.3's alpha of 1/8)."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    server = FakeServer()
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None
    for reply in server.handle(first, 0.0):
        client.on_server_data(reply, 0.1)
    assert client.round_trip == pytest.approx(0.1)
    second = client.poll_transmit(0.1)
    assert second is not None
    for reply in server.handle(second, 0.1):
        client.on_server_data(reply, 0.35)
    assert state(client) is TurnState.ALLOCATED
    assert client.round_trip == pytest.approx(0.1 + (0.25 - 0.1) / 8)


def test_ambiguous_round_trips_keep_the_shortest_measured() -> None:
    """Answers only to requests sent again (RFC 6298 §3's ambiguity: each is timed from the
    first copy, so it can only be too long): the round trip is the shortest of them."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    server = FakeServer()
    client.start(0.0)
    assert client.poll_transmit(0.0) is not None  # (lost)
    client.on_timer(0.5)
    again = client.poll_transmit(0.5)
    assert again is not None
    for reply in server.handle(again, 0.5):
        client.on_server_data(reply, 0.6)
    assert client.round_trip == pytest.approx(0.6)
    assert client.poll_transmit(0.6) is not None  # (the authenticated Allocate: lost)
    deadline = client.next_deadline()
    assert deadline is not None
    client.on_timer(deadline)
    again = client.poll_transmit(deadline)
    assert again is not None
    for reply in server.handle(again, deadline):
        client.on_server_data(reply, 1.15)
    assert state(client) is TurnState.ALLOCATED
    assert client.round_trip == pytest.approx(0.55)


# -- refreshes and deletion -------------------------------------------------------------------


def test_a_refresh_that_ends_on_stale_nonces_sends_no_deletion() -> None:
    """A Refresh answered 438 Stale Nonce time after time fails the client (the server holds
    the allocation, but takes no nonce of ours): no deletion follows, which would only be
    answered 438 again (a refused Refresh, 508 say, is followed by one)."""
    client, server = allocated(lifetime=600)
    server.always_stale = True
    run_until(client, server, 700.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 438
    deletions = [
        m
        for _, m in server.requests
        if m.method is Method.REFRESH
        and (lifetime := m.get(stun.Lifetime)) is not None
        and lifetime.seconds == 0
    ]
    assert deletions == []


def test_an_early_refresh_that_gets_no_answer_is_no_news() -> None:
    """``refresh_now`` asked before the refresh was due, and no answer came: the allocation
    lasts its lifetime, and the next Refresh goes when due (540 s), not at once after the
    timeout."""
    client, server = allocated(lifetime=600)
    server.silent = True
    client.refresh_now(100.0)
    exchange(client, server, 100.0)
    now = 100.0
    refreshes: list[float] = []
    while (deadline := client.next_deadline()) is not None and deadline < 500.0:
        now = max(now, deadline)
        client.on_timer(now)
        refreshes += [now for m, _ in _sent_requests(client, now) if m is Method.REFRESH]
    assert state(client) is TurnState.ALLOCATED
    assert not client.refreshing
    assert all(t < 140.0 for t in refreshes)  # (the early one's copies only)


def test_after_the_deletions_437_an_allocate_whose_copies_all_went_goes_no_more() -> None:
    """Closed while the authenticated Allocate is out, all its copies sent (Rc, RFC 8489
    §6.2.1): the deletion's 437 (the Allocate had not come) sends it no eighth time."""
    client = TurnClient(USER, PASSWORD, reliable=False, rto=0.01)
    server = FakeServer()
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None
    for reply in server.handle(first, 0.0):
        client.on_server_data(reply, 0.0)
    copies = 0
    now = 0.0
    while client.poll_transmit(now) is not None:
        copies += 1
    while (deadline := client.next_deadline()) is not None and deadline <= 0.7:
        now = deadline
        client.on_timer(now)
        while client.poll_transmit(now) is not None:
            copies += 1
    assert copies == 7 and state(client) is TurnState.ALLOCATING
    client.close(0.7)
    deletion = client.poll_transmit(0.7)
    assert deletion is not None
    for reply in server.handle(deletion, 0.7):  # (437: the Allocate never came)
        client.on_server_data(reply, 0.7)
    assert client.poll_transmit(0.7) is None
