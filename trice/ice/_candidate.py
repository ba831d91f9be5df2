"""ICE candidates as values: the RFC 8839 §5.1 ``candidate`` attribute and its JSON form.

A :class:`Candidate` is an immutable record of one transport address an agent offers (RFC 8445
§5.1).  It is written to and read from the SDP ``candidate`` attribute grammar of RFC 8839 §5.1
(with the ``tcptype`` extension of RFC 6544 §4.5), and from the JSON shape of the W3C
``RTCIceCandidateInit`` dictionary that browsers and Pion exchange over signaling.

This module is pure: no sockets, no clock, no trio.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from trice._errors import CandidateError

__all__ = [
    "Candidate",
    "CandidateType",
    "TcpType",
    "canonical_ip",
    "end_of_candidates_json",
    "is_hostname",
]

MAX_PRIORITY = 2**32 - 1
"""Largest priority the grammar carries (``1*10DIGIT``, an unsigned 32-bit value)."""

_FOUNDATION = re.compile(r"[A-Za-z0-9+/]{1,32}")  # 1*32ice-char, RFC 8839 §5.1
#: What one candidate may carry beyond its fields: at most this many extension pairs, each
#: name and value, and each signaling string (``sdp_mid``, ``username_fragment``: a ufrag
#: is at most 256 characters, RFC 8839 §5.4), at most ``MAX_TEXT`` characters.  A peer's
#: candidates are kept for the agent's life, and ``max_remote_candidates`` bounds only how
#: many come.
MAX_EXTENSIONS = 32
MAX_TEXT = 256
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # token, RFC 3261 §25.1
_VCHARS = re.compile(r"[\x21-\x7e]+")  # 1*VCHAR, RFC 5234 appendix B.1
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SEPARATOR = re.compile(r"[ \t]+")
_RESERVED_NAMES = frozenset({"typ", "raddr", "rport", "tcptype"})
_SET = object.__setattr__  # a frozen dataclass normalizes its own fields in __post_init__
_NEW = object.__new__


class CandidateType(str, enum.Enum):
    """The four candidate types of RFC 8445 §5.1.1 (``cand-type`` in RFC 8839 §5.1)."""

    HOST = "host"
    """A transport address on a local interface (RFC 8445 §5.1.1.1)."""
    SRFLX = "srflx"
    """Server reflexive, the address a STUN server saw (RFC 8445 §5.1.1.2)."""
    PRFLX = "prflx"
    """Peer reflexive, learned from a connectivity check (RFC 8445 §7.2.5.3.1, §7.3.1.3)."""
    RELAY = "relay"
    """Relayed, allocated on a TURN server (RFC 8445 §5.1.1.2, RFC 8656)."""

    def __str__(self) -> str:
        return self.value


class TcpType(str, enum.Enum):
    """The ``tcptype`` of an ICE-TCP candidate (RFC 6544 §4.5)."""

    ACTIVE = "active"
    """Opens outgoing connections only."""
    PASSIVE = "passive"
    """Accepts incoming connections only."""
    SO = "so"
    """Simultaneous open, both ends trying to connect at once."""

    def __str__(self) -> str:
        return self.value


def canonical_ip(text: str) -> str | None:
    """Return the canonical text of an IPv4 or IPv6 literal, or ``None`` if it is not one.

    IPv6 addresses come without brackets and in compressed lower-case form (RFC 5952 §4).  An
    IPv6 zone index (``fe80::1%eth0``) is refused: it means nothing to the remote peer.  An
    IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is the IPv4 address it maps, as Pion
    reads it: reached from an IPv4 socket (an IPv6 socket of trice's, IPv6-only, cannot).
    """
    if type(text) is str:
        return _canonical_ip(text)
    return _parse_ip(text)


@functools.lru_cache(maxsize=1024)
def _canonical_ip(text: str) -> str | None:
    # Parsing with ipaddress costs several µs; the same few addresses come back for every
    # candidate, pair and agent, so the answers are kept (bounded: hostile input cannot grow
    # the cache).
    return _parse_ip(text)


def _parse_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
    return str(ip)


def is_hostname(text: str) -> bool:
    """Tell whether ``text`` is a DNS host name (RFC 1123 §2.1) such as an mDNS ``.local`` name.

    Labels are letters, digits and inner hyphens, at most 63 characters each and 253 in all; a
    last label that is a number, decimal or hexadecimal (``0x7f``), is refused, so that a
    mistyped IPv4 literal is not taken for a name (RFC 3696 §2): the system's resolver reads
    ``127.0.0.0x1`` and ``0x7f000001`` as the address they spell (RFC 3986 §7.4), not as
    names.
    """
    if not 0 < len(text) <= 253:
        return False
    labels = text.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return _NUMBER.fullmatch(labels[-1]) is None


_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


# -- field checks shared by the constructor (attribute names) and the parser (SDP names) --------


def _uint(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CandidateError(f"{field} must be an int, got {value!r}", field=field)
    if not low <= value <= high:
        raise CandidateError(f"{field} must be in {low}..{high}, got {value!r}", field=field)
    return value


def _optional_str(value: object, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CandidateError(f"{field} must be a str or None, got {value!r}", field=field)
    if value is not None and len(value) > MAX_TEXT:
        raise CandidateError(
            f"{field} is {len(value)} characters long: at most {MAX_TEXT}", field=field
        )
    return value


def _address(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise CandidateError(f"{field} must be a str, got {value!r}", field=field)
    ip = canonical_ip(value)
    if ip is not None:
        return ip
    if is_hostname(value):
        return value
    raise CandidateError(f"{field} {value!r} is neither an IP address nor a host name", field=field)


def _foundation(value: object, field: str) -> str:
    if not isinstance(value, str) or not _FOUNDATION.fullmatch(value):
        raise CandidateError(
            f"{field} must be 1 to 32 ice-chars (letters, digits, '+', '/'), got {value!r}",
            field=field,
        )
    return value


def _extensions(value: object, field: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise CandidateError(f"{field} must be a sequence of (name, value) pairs", field=field)
    pairs: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
            raise CandidateError(f"{field} item {item!r} is not a (name, value) pair", field=field)
        pair = tuple(item)
        if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
            raise CandidateError(f"{field} item {item!r} is not a (name, value) pair", field=field)
        if len(pairs) == MAX_EXTENSIONS:
            raise CandidateError(f"more than {MAX_EXTENSIONS} extensions", field=field)
        pairs.append(_extension(pair[0], pair[1], field))
    return tuple(pairs)


def _extension(name: str, text: str, field: str) -> tuple[str, str]:
    """One extension attribute, checked: a token name that is not reserved, and a value of
    visible ASCII."""
    if len(name) > MAX_TEXT or len(text) > MAX_TEXT:
        raise CandidateError(
            f"extension {name[:40]!r} is longer than {MAX_TEXT} characters (name or value)",
            field=field,
        )
    if not _TOKEN.fullmatch(name):
        raise CandidateError(f"extension name {name!r} is not a token", field=field)
    if name.lower() in _RESERVED_NAMES:
        raise CandidateError(
            f"extension name {name!r} is reserved: use the candidate's own field", field=field
        )
    if not _VCHARS.fullmatch(text):
        raise CandidateError(
            f"extension {name!r} value {text!r} must be 1 or more visible ASCII characters",
            field=field,
        )
    return name, text


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One ICE candidate: an immutable value (RFC 8445 §5.1, RFC 8839 §5.1).

    Build one with keywords, parse one with :meth:`from_sdp` or :meth:`from_json`, and make
    variants with :func:`dataclasses.replace`.  Construction validates every field and raises
    :class:`~trice.CandidateError` whose ``field`` is the attribute name at fault.

    The constructor normalizes a few spellings, so equal candidates compare equal: ``protocol``
    is lower-cased, IP literals are written canonically (``2001:DB8:0::1`` becomes
    ``2001:db8::1``), ``type`` and ``tcp_type`` accept their string values, and ``extensions``
    accepts any iterable of pairs.  Host names (mDNS ``.local`` names, RFC 8839 §5.1) are kept
    exactly as given.

    Equality compares every field, signaling fields included; it is not the RFC 8445 §5.1.3
    notion of a redundant candidate.

    Attributes:
        foundation: 1 to 32 ice-chars; equal for candidates of the same type, base, server and
            transport (RFC 8445 §5.1.1.3).
        component: the component ID, 1..256 (RFC 8445 §5.1.2.1); 1 is RTP, 2 RTCP.
        protocol: ``"udp"`` or ``"tcp"`` (RFC 6544 for TCP).
        priority: 1..2**32-1 as the grammar allows (RFC 8445 §5.1.2.1 computes at most 2**31-1).
        address: an IP literal (IPv6 without brackets) or a host name such as an mDNS name.
        port: 0..65535 (0 and 9 appear for active ICE-TCP candidates, RFC 6544 §4.5).
        type: host, srflx, prflx or relay (RFC 8445 §5.1.1).
        related_address: ``raddr``, the base or mapped address it came from (RFC 8839 §5.1);
            given together with ``related_port``.
        related_port: ``rport``, given together with ``related_address``.
        tcp_type: active, passive or so for TCP candidates (RFC 6544 §4.5); ``None`` for UDP.
        sdp_mid: signaling only: the media stream identification tag (W3C ``sdpMid``).
        sdp_mline_index: signaling only: the m-line index, 0..65535 (W3C ``sdpMLineIndex``).
        username_fragment: signaling only: the ICE ufrag the candidate belongs to (W3C
            ``usernameFragment``; ``""`` is taken for ``None``, as no ufrag is empty).  It is
            not written in the SDP line; a ``ufrag`` extension attribute stays in
            ``extensions`` — :attr:`ufrag` looks in both.
        extensions: further ``name value`` attributes (``generation``, ``network-id``,
            ``network-cost``, ``ufrag``, unknown ones), kept in order and written back.

    A candidate is small, whoever signals it: at most 32 extensions, and each name and
    value of one, and ``sdp_mid`` and ``username_fragment``, at most 256 characters
    (a :class:`~trice.CandidateError` says which is too long or too many).  The peer's
    candidates are kept for the agent's life; ``max_remote_candidates`` bounds how many.
    """

    foundation: str
    component: int
    protocol: str
    priority: int
    address: str
    port: int
    type: CandidateType
    related_address: str | None = None
    related_port: int | None = None
    tcp_type: TcpType | None = None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    username_fragment: str | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    if TYPE_CHECKING:  # (what the constructor takes, which it normalizes: see above)

        def __init__(
            self,
            *,
            foundation: str,
            component: int,
            protocol: str,
            priority: int,
            address: str,
            port: int,
            type: CandidateType | str,
            related_address: str | None = None,
            related_port: int | None = None,
            tcp_type: TcpType | str | None = None,
            sdp_mid: str | None = None,
            sdp_mline_index: int | None = None,
            username_fragment: str | None = None,
            extensions: Iterable[tuple[str, str]] = (),
        ) -> None: ...

    def __post_init__(self) -> None:
        # Each check's fast path is a plain test; the helper it falls back to accepts what
        # the test did not (an int subclass, an enum's string value...) or raises.
        put = _SET
        foundation = self.foundation
        if type(foundation) is not str or not _FOUNDATION.fullmatch(foundation):
            _foundation(foundation, "foundation")
        component = self.component
        if type(component) is not int or not 1 <= component <= 256:
            _uint(component, "component", 1, 256)
        protocol = self.protocol
        if type(protocol) is not str or protocol != "udp":
            if not isinstance(protocol, str) or protocol.lower() not in ("udp", "tcp"):
                raise CandidateError(
                    f"protocol must be 'udp' or 'tcp', got {protocol!r}", field="protocol"
                )
            put(self, "protocol", protocol.lower())
        priority = self.priority
        if type(priority) is not int or not 1 <= priority <= MAX_PRIORITY:
            _uint(priority, "priority", 1, MAX_PRIORITY)
        address = self.address
        canonical = _canonical_ip(address) if type(address) is str else None
        if canonical is None:
            canonical = _address(address, "address")
        if canonical is not address:
            put(self, "address", canonical)
        port = self.port
        if type(port) is not int or not 0 <= port <= 65535:
            _uint(port, "port", 0, 65535)
        if type(self.type) is not CandidateType:
            put(self, "type", _enum(CandidateType, self.type, "type"))
        if self.related_address is not None:
            put(self, "related_address", _address(self.related_address, "related_address"))
        if self.related_port is not None:
            _uint(self.related_port, "related_port", 0, 65535)
        if (self.related_address is None) != (self.related_port is None):
            missing = "related_port" if self.related_port is None else "related_address"
            raise CandidateError(
                "related_address and related_port go together: "
                f"got {self.related_address!r} and {self.related_port!r}",
                field=missing,
            )
        if self.tcp_type is not None:
            put(self, "tcp_type", _enum(TcpType, self.tcp_type, "tcp_type"))
            if self.protocol != "tcp":
                raise CandidateError(
                    f"tcp_type {self.tcp_type.value!r} needs protocol 'tcp', not {self.protocol!r}",
                    field="tcp_type",
                )
        if self.sdp_mid is not None:
            _optional_str(self.sdp_mid, "sdp_mid")
        if self.sdp_mline_index is not None:
            _uint(self.sdp_mline_index, "sdp_mline_index", 0, 65535)
        if self.username_fragment is not None:
            _optional_str(self.username_fragment, "username_fragment")
            if not self.username_fragment:
                put(self, "username_fragment", None)  # (no ufrag is empty: none named)
        extensions = self.extensions
        if type(extensions) is not tuple or extensions:
            put(self, "extensions", _extensions(extensions, "extensions"))

    # -- conveniences ----------------------------------------------------------------------------

    @property
    def transport_address(self) -> tuple[str, int]:
        """The ``(address, port)`` pair: the candidate's transport address (RFC 8445 §3)."""
        return (self.address, self.port)

    @property
    def ufrag(self) -> str | None:
        """The username fragment this candidate belongs to (RFC 8445 §5.3), if known.

        That is :attr:`username_fragment` when signaling gave it, else the value of a ``ufrag``
        extension attribute (written by Chrome), else ``None``.
        """
        if self.username_fragment is not None:
            return self.username_fragment
        return self.extension("ufrag")

    def extension(self, name: str) -> str | None:
        """Return the value of the first extension attribute called ``name`` (any case), or None.

        Example: ``candidate.extension("generation")`` gives ``"0"`` for a Chrome candidate.
        """
        wanted = name.lower()
        for key, value in self.extensions:
            if key.lower() == wanted:
                return value
        return None

    # -- SDP (RFC 8839 §5.1) ---------------------------------------------------------------------

    def to_sdp(self) -> str:
        """Write the RFC 8839 §5.1 attribute value, ``candidate:...`` without ``a=``.

        The order is canonical: foundation, component, transport, priority, address, port,
        ``typ``, then ``raddr``/``rport``, ``tcptype`` (RFC 6544 §4.5) and the extensions in
        their stored order.  Signaling fields (``sdp_mid``...) are not part of the line.
        """
        parts = [
            f"candidate:{self.foundation}",
            str(self.component),
            self.protocol,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type.value,
        ]
        if self.related_address is not None and self.related_port is not None:
            parts += ["raddr", self.related_address, "rport", str(self.related_port)]
        if self.tcp_type is not None:
            parts += ["tcptype", self.tcp_type.value]
        for name, value in self.extensions:
            parts += [name, value]
        return " ".join(parts)

    @classmethod
    def from_sdp(
        cls,
        line: str,
        *,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
        username_fragment: str | None = None,
    ) -> Candidate:
        """Parse a candidate line (RFC 8839 §5.1, with RFC 6544 §4.5 ``tcptype``).

        The ``a=`` and ``candidate:`` prefixes are both optional, surrounding white space and a
        trailing CRLF are ignored, and keywords, transport and types match in any case (ABNF
        literals are case-insensitive, RFC 5234 §2.3).  After ``typ``, the ``raddr``, ``rport``
        and ``tcptype`` pairs are recognised wherever they stand (Pion writes ``tcptype``
        first); every other pair is kept in :attr:`extensions`, in order.

        Args:
            line: the attribute line, e.g. ``"candidate:1 1 udp 2130706431 10.0.0.2 5000 typ
                host"``.
            sdp_mid: signaling field to attach (not part of the line).
            sdp_mline_index: signaling field to attach.
            username_fragment: signaling field to attach.

        Raises:
            CandidateError: the line is malformed; ``field`` names the part at fault with its
                SDP name: ``"foundation"``, ``"component"``, ``"transport"``, ``"priority"``,
                ``"address"``, ``"port"``, ``"typ"``, ``"raddr"``, ``"rport"``,
                ``"tcptype"`` or ``"extension"``; ``"candidate"`` for the end-of-candidates
                line (``a=end-of-candidates``), which is none, and for another attribute's
                line (``a=ice-pwd:...``, say, from an SDP fragment: its value is not quoted).
                Nothing else is ever raised for a str.
        """
        if not isinstance(line, str):
            raise CandidateError(f"a candidate line must be a str, got {line!r}", field="candidate")
        text = line.strip(" \t\r\n")
        if text[:2].lower() == "a=":
            text = text[2:]
        named = text[:10].lower() == "candidate:"
        if named:
            text = text[10:].lstrip(" \t")
        elif text.lower() == "end-of-candidates":
            raise CandidateError(
                "'end-of-candidates' is no candidate: it ends the peer's candidates "
                "(add_remote_candidate(None))",
                field="candidate",
            )
        tokens = _SEPARATOR.split(text) if text else []
        if not named and tokens and ":" in tokens[0]:  # (another attribute's line)
            name = tokens[0].split(":", 1)[0][:32]
            raise CandidateError(
                f"not a candidate line but the {name!r} attribute's (its value is not shown: "
                "an ice-pwd's is a secret)",
                field="candidate",
            )
        return _parse_tokens(
            tokens,
            sdp_mid=sdp_mid,
            sdp_mline_index=sdp_mline_index,
            username_fragment=username_fragment,
        )

    # -- JSON (W3C RTCIceCandidateInit) ----------------------------------------------------------

    def to_json(
        self,
        *,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
        username_fragment: str | None = None,
    ) -> dict[str, object]:
        """Return the W3C ``RTCIceCandidateInit`` dictionary, ready for :func:`json.dumps`.

        All four keys are always present, ``None`` (JSON null) when unknown, as a browser's
        ``RTCIceCandidate.toJSON()`` and Pion's ``ICECandidateInit`` write them::

            {"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0,
             "usernameFragment": null}

        A candidate the agent gathered has none of the three signaling fields, and a
        browser's ``addIceCandidate`` refuses a candidate with neither ``sdpMid`` nor
        ``sdpMLineIndex`` (a ``TypeError``): give them here, as the media section the
        candidates are for (``to_json(sdp_mid="0", sdp_mline_index=0)``), with the ufrag
        (:attr:`Agent.local_parameters <trice.Agent.local_parameters>`) that tells the
        peer their ICE generation.  A field given here is written in place of the
        candidate's own.

        Raises:
            CandidateError: a signaling value has the wrong type or range.
        """
        _check_signaling(sdp_mid, sdp_mline_index, username_fragment)
        return {
            "candidate": self.to_sdp(),
            "sdpMid": self.sdp_mid if sdp_mid is None else sdp_mid,
            "sdpMLineIndex": self.sdp_mline_index if sdp_mline_index is None else sdp_mline_index,
            "usernameFragment": (
                self.username_fragment if username_fragment is None else username_fragment
            ),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, object] | str) -> Candidate | None:
        """Read a W3C ``RTCIceCandidateInit`` dictionary, or its JSON text.

        Missing ``sdpMid``, ``sdpMLineIndex`` and ``usernameFragment`` mean ``None``, and so
        does an empty ``usernameFragment`` (no ufrag is empty; encoders of a plain string
        field write ``""`` for none); unknown keys are ignored.  Unlike the W3C default, a
        missing ``candidate`` key is an error, to catch signaling mistakes.
        ``"candidate": ""`` is the end-of-candidates indication (RFC 8838 §4.3, see
        :func:`end_of_candidates_json`) and gives ``None``.

        Raises:
            CandidateError: ``field`` is ``"json"`` when the text is not a JSON object, the JSON
                key (``"candidate"``, ``"sdpMid"``, ``"sdpMLineIndex"``,
                ``"usernameFragment"``) when a value has the wrong type, or the SDP field name
                when the candidate line itself is malformed (see :meth:`from_sdp`).
        """
        if isinstance(obj, str):
            try:
                loaded: object = json.loads(obj)
            except (ValueError, RecursionError) as exc:
                raise CandidateError(f"not valid JSON: {obj[:80]!r}", field="json") from exc
        else:
            loaded = obj
        if not isinstance(loaded, Mapping):
            raise CandidateError(f"expected a JSON object, got {loaded!r:.80}", field="json")
        if "candidate" not in loaded:
            raise CandidateError("the JSON object has no 'candidate' key", field="candidate")
        line = loaded["candidate"]
        if not isinstance(line, str):
            raise CandidateError(f"'candidate' must be a string, got {line!r}", field="candidate")
        sdp_mid, sdp_mline_index, ufrag = _json_signaling(loaded)
        if line.strip(" \t\r\n") == "":
            return None
        return cls.from_sdp(
            line, sdp_mid=sdp_mid, sdp_mline_index=sdp_mline_index, username_fragment=ufrag
        )


def end_of_candidates_json(
    sdp_mid: str | None = None,
    sdp_mline_index: int | None = None,
    username_fragment: str | None = None,
) -> dict[str, object]:
    """Return the JSON end-of-candidates indication: an ``RTCIceCandidateInit`` whose candidate
    is empty (RFC 8838 §4.3 and §8.2, W3C WebRTC §4.8.1).

    :meth:`Candidate.from_json` reads it back as ``None``.

    Raises:
        CandidateError: a signaling value has the wrong type or range.
    """
    _check_signaling(sdp_mid, sdp_mline_index, username_fragment)
    return {
        "candidate": "",
        "sdpMid": sdp_mid,
        "sdpMLineIndex": sdp_mline_index,
        "usernameFragment": username_fragment,
    }


# -- helpers ---------------------------------------------------------------------------------------


def _check_signaling(sdp_mid: object, sdp_mline_index: object, username_fragment: object) -> None:
    """Raise :class:`CandidateError` unless these are signaling fields of the right types."""
    _optional_str(sdp_mid, "sdp_mid")
    if sdp_mline_index is not None:
        _uint(sdp_mline_index, "sdp_mline_index", 0, 65535)
    _optional_str(username_fragment, "username_fragment")


_EnumT = TypeVar("_EnumT", CandidateType, TcpType)


def _enum(kind: type[_EnumT], value: object, field: str) -> _EnumT:
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            return kind(value.lower())
        except ValueError:
            pass
    allowed = ", ".join(repr(member.value) for member in kind)
    raise CandidateError(f"{field} must be one of {allowed}, got {value!r}", field=field)


def _json_signaling(obj: Mapping[str, object]) -> tuple[str | None, int | None, str | None]:
    sdp_mid = _optional_str(obj.get("sdpMid"), "sdpMid")
    raw_index = obj.get("sdpMLineIndex")
    index = None if raw_index is None else _uint(raw_index, "sdpMLineIndex", 0, 65535)
    ufrag = _optional_str(obj.get("usernameFragment"), "usernameFragment")
    return sdp_mid, index, ufrag or None


def _number(tokens: list[str], index: int, field: str, digits: int, low: int, high: int) -> int:
    text = _token(tokens, index, field)
    if not (text.isascii() and text.isdigit() and len(text) <= digits):
        raise CandidateError(f"{field} must be 1 to {digits} digits, got {text!r}", field=field)
    value = int(text)
    if not low <= value <= high:
        raise CandidateError(f"{field} must be in {low}..{high}, got {text!r}", field=field)
    return value


def _token(tokens: list[str], index: int, field: str) -> str:
    if index >= len(tokens):
        raise CandidateError(f"the candidate line ends before its {field}", field=field)
    return tokens[index]


def _parse_tokens(
    tokens: list[str],
    *,
    sdp_mid: str | None,
    sdp_mline_index: int | None,
    username_fragment: str | None,
) -> Candidate:
    """Turn the blank-separated tokens of a candidate line into a :class:`Candidate`."""
    foundation = _foundation(_token(tokens, 0, "foundation"), "foundation")
    component = _number(tokens, 1, "component", 3, 1, 256)
    protocol = _token(tokens, 2, "transport").lower()
    if protocol not in ("udp", "tcp"):
        raise CandidateError(
            f"transport must be UDP or TCP, got {tokens[2]!r}",
            field="transport",
        )
    priority = _number(tokens, 3, "priority", 10, 1, MAX_PRIORITY)
    address = _address(_token(tokens, 4, "address"), "address")
    port = _number(tokens, 5, "port", 5, 0, 65535)
    if _token(tokens, 6, "typ").lower() != "typ":
        raise CandidateError(f"expected 'typ' after the port, got {tokens[6]!r}", field="typ")
    cand_type = _enum(CandidateType, _token(tokens, 7, "typ"), "typ")

    related_address: str | None = None
    related_port: int | None = None
    tcp_type: TcpType | None = None
    extensions: list[tuple[str, str]] = []
    index = 8
    while index < len(tokens):
        name = tokens[index]
        key = name.lower()
        field = key if key in ("raddr", "rport", "tcptype") else "extension"
        if index + 1 >= len(tokens):
            raise CandidateError(f"{name!r} has no value at the end of the line", field=field)
        value = tokens[index + 1]
        if key == "typ":
            raise CandidateError("'typ' appears twice", field="typ")
        if key == "raddr":
            if related_address is not None:
                raise CandidateError("'raddr' appears twice", field="raddr")
            related_address = _address(value, "raddr")
        elif key == "rport":
            if related_port is not None:
                raise CandidateError("'rport' appears twice", field="rport")
            related_port = _number(tokens, index + 1, "rport", 5, 0, 65535)
        elif key == "tcptype":
            if tcp_type is not None:
                raise CandidateError("'tcptype' appears twice", field="tcptype")
            tcp_type = _enum(TcpType, value, "tcptype")
            if protocol != "tcp":
                raise CandidateError(
                    f"'tcptype {value}' on a {protocol.upper()} candidate", field="tcptype"
                )
        else:
            # (A reserved name never gets here: each is taken above, in any case.)
            if len(extensions) == MAX_EXTENSIONS:
                raise CandidateError(f"more than {MAX_EXTENSIONS} extensions", field=field)
            extensions.append(_extension(name, value, field))
        index += 2
    if related_address is not None and related_port is None:
        raise CandidateError(f"'raddr {related_address}' without 'rport'", field="rport")
    if related_port is not None and related_address is None:
        raise CandidateError(f"'rport {related_port}' without 'raddr'", field="raddr")
    if sdp_mid is not None:
        _optional_str(sdp_mid, "sdp_mid")
    if sdp_mline_index is not None:
        _uint(sdp_mline_index, "sdp_mline_index", 0, 65535)
    if username_fragment is not None:
        _optional_str(username_fragment, "username_fragment")
        username_fragment = username_fragment or None  # (no ufrag is empty: none named)
    # Every field is checked and in its normal form by now: the candidate is made without
    # the constructor checking it all again (half the cost of a line; a remote candidate's
    # line is parsed while the peer's first check may be on its way).
    return _checked(
        foundation=foundation,
        component=component,
        protocol=protocol,
        priority=priority,
        address=address,
        port=port,
        type=cand_type,
        related_address=related_address,
        related_port=related_port,
        tcp_type=tcp_type,
        sdp_mid=sdp_mid,
        sdp_mline_index=sdp_mline_index,
        username_fragment=username_fragment,
        extensions=tuple(extensions),
    )


def _checked(**fields: object) -> Candidate:
    """A :class:`Candidate` of fields that are already checked and in their normal form (all
    of them: a missing one would be an attribute never set), made without
    ``__post_init__``."""
    candidate = _NEW(Candidate)
    for name, value in fields.items():
        _SET(candidate, name, value)
    return candidate
