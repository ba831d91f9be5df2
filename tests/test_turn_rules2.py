"""More rules of the TURN client (trice/turn/_client.py) that the other TURN tests did not
pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): a 437 to the first, unauthenticated, Allocate fails the client and deletes
nothing."""

from __future__ import annotations

from test_turn import PASSWORD, USER, state

from trice import stun
from trice.turn import TurnClient, TurnState

# -- 437 Allocation Mismatch (RFC 8656 §7.2) ---------------------------------------------------


def test_an_unauthenticated_allocates_437_sends_no_deletion() -> None:
    """The first Allocate (before the server's challenge: no credentials yet) is answered
    437 Allocation Mismatch (RFC 8656 §7.2: some allocation is on this 5-tuple): the client
    fails, and sends nothing more.  A deletion needs credentials (an unsigned Refresh is
    refused 401, RFC 8656 §7.1), and only an authenticated Allocate's 437 can be an
    allocation of ours (see test_turn's test_an_authenticated_allocates_437_...).
    (Mutant: ``self._key is not None`` dropped, and a deletion went all the same.)"""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None
    request = stun.decode(first)
    assert request.method is stun.Method.ALLOCATE and request.get(stun.MessageIntegrity) is None
    client.on_server_data(request.error_response(437, "Allocation Mismatch").encode(), 0.1)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 437
    assert client.poll_transmit(0.1) is None
