"""Rules of STUN/TURN server URLs (trice/_servers.py) that the other server tests did not
pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): what an error message quotes of a URL that may hold a password (text before an
``@`` with no scheme), what it quotes in full (a bracketed literal with an empty zone,
where no password is), and the upper end of a port's range when a ``ServerUrl`` is built.
(A zone index behind an ``@`` left unquoted is a case of test_proxy's
``test_bad_proxy_urls_are_config_errors_that_never_show_the_password``: the proxy URL's
parser shares ``surely_host``.)"""

from __future__ import annotations

import pytest

import trice
from trice._servers import ServerUrl


def _problem(url: str) -> str:
    """The message of the ConfigError that parsing ``url`` raises."""
    with pytest.raises(trice.ConfigError) as info:
        ServerUrl.parse(url)
    return str(info.value)


# -- what an error quotes of a URL ------------------------------------------------------------


def test_text_before_an_at_sign_without_any_scheme_is_not_quoted() -> None:
    """``s3cret@turn.example.org`` has no scheme, and the text before its ``@`` may be a
    password: the error quotes it as ``...@...``, neither its first part nor its host.
    (Kills ``if not colon:`` -> ``if False:`` in ``_redacted``.)"""
    problem = _problem("s3cret@turn.example.org")
    assert "s3cret" not in problem
    assert "'...@...'" in problem


def test_a_bracketed_literal_with_an_empty_zone_is_quoted_in_full() -> None:
    """``stun:[fe80::1%]`` holds no password (an IPv6 literal and a bad zone index): the
    error quotes the URL as written, so that the user sees what is wrong.  (Kills
    ``inside.partition("%")[0]`` -> ``inside`` in ``_plain``.)"""
    problem = _problem("stun:[fe80::1%]")
    assert "'stun:[fe80::1%]'" in problem
    assert "not an IPv6 address" in problem


# -- a port's range ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, 65536])
def test_a_server_url_built_with_a_port_out_of_range_is_refused(port: int) -> None:
    """A ``ServerUrl`` built with a port outside 1..65535 is refused; 65535 is taken.
    (Kills ``port <= 65535`` -> ``port <= 65536`` in the constructor's check.)"""
    with pytest.raises(trice.ConfigError, match=r"1\.\.65535"):
        ServerUrl("stun", "stun.example.org", port=port)
    assert ServerUrl("stun", "stun.example.org", port=65535).port == 65535
