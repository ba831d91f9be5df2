"""Rules of the configuration's checks (trice/_config.py) that the other configuration tests
did not pin (found by a mutation review; each test here kills a mutant the rest of the suite
let through, a bound moved by a little or a rule dropped): the bounds of Timing's fields,
of AgentConfig's caps and of NetworkConfig.port_range, ice-chars to the end of the string,
at least one address family, and the types of AgentConfig's fields."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import trice
from trice._config import MAX_SECONDS

# -- Timing ----------------------------------------------------------------------------------


def test_ta_of_exactly_5_ms_is_allowed_and_less_is_not() -> None:
    """RFC 8445 §14.2: Ta must not go below 5 ms; 5 ms itself is allowed.  (Mutant: ``<=``
    for ``<``, 5 ms refused.)"""
    assert trice.Timing(ta=0.005).ta == 0.005
    with pytest.raises(trice.ConfigError, match=r"at least 0\.005"):
        trice.Timing(ta=0.0049)


def test_keepalive_interval_below_5_ms_is_refused() -> None:
    """Docs of Timing.keepalive_interval: at least 5 ms.  (Mutant: the bound at 4 ms.)"""
    assert trice.Timing(keepalive_interval=0.005).keepalive_interval == 0.005
    with pytest.raises(trice.ConfigError, match="keepalive_interval must be at least"):
        trice.Timing(keepalive_interval=0.0045)


def test_disconnected_timeout_below_12_ms_is_refused() -> None:
    """Docs of Timing.disconnected_timeout: at least 12 ms.  (Mutant: the bound at
    11 ms.)"""
    assert trice.Timing(disconnected_timeout=0.012).disconnected_timeout == 0.012
    with pytest.raises(trice.ConfigError, match="disconnected_timeout must be at least"):
        trice.Timing(disconnected_timeout=0.0115)


@pytest.mark.parametrize("count", [0, 101, -1])
def test_max_binding_requests_out_of_1_to_100_is_refused(count: int) -> None:
    """Docs of Timing.max_binding_requests: 1 to 100.  (Mutants: the range from 0; to
    101.)"""
    with pytest.raises(trice.ConfigError, match="from 1 to 100"):
        trice.Timing(max_binding_requests=count)


@pytest.mark.parametrize("count", [1, 100])
def test_max_binding_requests_at_its_bounds_is_allowed(count: int) -> None:
    """1 and 100 themselves are allowed.  (Mutants: the range from 2; to 99.)"""
    assert trice.Timing(max_binding_requests=count).max_binding_requests == count


def test_a_timer_of_exactly_a_year_is_allowed_and_longer_is_not() -> None:
    """Docs of Timing: each timer at most a year (``MAX_SECONDS``), a year itself allowed.
    (Mutant: ``<`` for ``<=``, a year refused.)"""
    assert trice.Timing(gather_timeout=MAX_SECONDS).gather_timeout == MAX_SECONDS
    with pytest.raises(trice.ConfigError, match="at most a year"):
        trice.Timing(gather_timeout=MAX_SECONDS + 1)


@pytest.mark.parametrize("name", ["nomination_delay", "relay_nomination_delay", "pac_timeout"])
def test_delays_that_may_be_zero_may_not_be_negative(name: str) -> None:
    """Docs of Timing: these may be 0, and are a number >= 0 of at most a year.  (Mutant:
    relay_nomination_delay not checked.)"""
    zero: dict[str, Any] = {name: 0}
    negative: dict[str, Any] = {name: -0.5}
    assert getattr(trice.Timing(**zero), name) == 0
    with pytest.raises(trice.ConfigError, match=f"Timing.{name} must be a number >= 0"):
        trice.Timing(**negative)


# -- AgentConfig -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max_pairs", "max_remote_candidates", "receive_buffer"])
def test_agent_config_counts_must_be_at_least_one(name: str) -> None:
    """Docs of AgentConfig: caps of at least 1 (0 would leave no pair, candidate or
    datagram).  (Mutant: ``>= 0`` for ``>= 1``.)"""
    one: dict[str, Any] = {name: 1}
    zero: dict[str, Any] = {name: 0}
    assert getattr(trice.AgentConfig(**one), name) == 1
    with pytest.raises(trice.ConfigError, match=f"{name} must be an integer >= 1"):
        trice.AgentConfig(**zero)


def test_a_ufrag_or_pwd_ending_in_a_newline_is_refused() -> None:
    """RFC 8445 §5.3: ice-chars only; a trailing newline (which ``$`` in a pattern lets
    through) would break the SDP line it goes in.  (Mutant: ``$`` for ``\\Z``.)"""
    with pytest.raises(trice.ConfigError, match="ufrag"):
        trice.AgentConfig(ufrag="abcd\n")
    with pytest.raises(trice.ConfigError, match="pwd"):
        trice.AgentConfig(pwd="p" * 22 + "\n")


def test_a_url_given_where_the_list_of_servers_goes_is_named_so() -> None:
    """A common slip, ``ice_servers="stun:..."``: the error says a sequence of IceServer is
    wanted, not that the character "s" is no IceServer.  (Mutant: a string taken for a
    sequence.)"""
    bad: Any = "stun:stun.example.org"
    with pytest.raises(
        trice.ConfigError, match=r"must be a sequence of trice\.IceServer, not a str"
    ):
        trice.AgentConfig(ice_servers=bad)


def test_network_and_timing_must_be_their_classes() -> None:
    """AgentConfig.network and .timing must be a NetworkConfig and a Timing (a dict, say,
    is refused where it is written, not when the agent reads a field of it).  (Mutant:
    timing's type not checked.)"""
    bad: Any = {"ta": 0.05}
    with pytest.raises(trice.ConfigError, match=r"AgentConfig\.timing must be a trice\.Timing"):
        trice.AgentConfig(timing=bad)
    with pytest.raises(
        trice.ConfigError, match=r"AgentConfig\.network must be a trice\.NetworkConfig"
    ):
        trice.AgentConfig(network=bad)


# -- NetworkConfig ---------------------------------------------------------------------------


@pytest.mark.parametrize("bounds", [(0, 10), (10, 9), (1, 65536)])
def test_a_port_range_outside_1_to_65535_or_upside_down_is_refused(
    bounds: tuple[int, int],
) -> None:
    """Docs of NetworkConfig.port_range: 1 <= low <= high <= 65535.  (Mutants: the range
    from 0; to 65536.)"""
    with pytest.raises(trice.ConfigError, match="port_range"):
        trice.NetworkConfig(port_range=bounds)


def test_a_port_range_at_its_bounds_is_allowed() -> None:
    """1 to 65535, and a range of one port, are allowed.  (Mutants: ``<`` for ``<=``
    between the bounds.)"""
    assert trice.NetworkConfig(port_range=(1, 65535)).port_range == (1, 65535)
    assert trice.NetworkConfig(port_range=(7, 7)).port_range == (7, 7)


def test_a_network_config_with_neither_family_is_refused() -> None:
    """Docs of NetworkConfig: at least one of ipv4 and ipv6 (else nothing is gathered).
    (Mutant: the rule dropped.)"""
    with pytest.raises(trice.ConfigError, match="at least one of ipv4 and ipv6"):
        trice.NetworkConfig(ipv4=False, ipv6=False)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: trice.AgentConfig(nomination="eager"), "AgentConfig.nomination"),  # type: ignore[arg-type]
        (lambda: trice.AgentConfig(transport_policy="none"), "AgentConfig.transport_policy"),  # type: ignore[arg-type]
        (lambda: trice.NetworkConfig(mdns="on"), "NetworkConfig.mdns"),  # type: ignore[arg-type]
        (
            lambda: trice.NetworkConfig(external_candidate="public"),  # type: ignore[arg-type]
            "NetworkConfig.external_candidate",
        ),
    ],
)
def test_a_value_that_is_no_member_of_its_enum_names_the_field(
    build: Callable[[], object], field: str
) -> None:
    """As every other error of the configuration guide does: the enum's own message named
    the enum's type, not the field (the docs51 review)."""
    with pytest.raises(trice.ConfigError, match=rf"^{re.escape(field)}: '\w+' is not a valid"):
        build()
