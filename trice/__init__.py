"""trice: Interactive Connectivity Establishment (ICE, RFC 8445) for trio.

This module only re-exports; see the documentation for the guides.
"""

from __future__ import annotations

import importlib
import typing

from trice import turn as turn  # (a public package, pure: loaded with trice, as ever)
from trice._config import AgentConfig, IPAddress, MdnsMode, NetworkConfig, Nomination, Timing
from trice._errors import (
    CandidateError,
    ConfigError,
    IceFailedError,
    LimitError,
    MdnsDecodeError,
    ProtocolError,
    StateError,
    StunDecodeError,
    TransactionError,
    TriceError,
    TurnError,
    UsageError,
)
from trice._proxy import ProxyUrl
from trice._servers import IceServer, ServerUrl, TransportPolicy
from trice._trio._log import TRACE  # (the logger alone: no trio)
from trice.ice._candidate import Candidate, CandidateType, TcpType, end_of_candidates_json
from trice.ice._checklist import PairState, PairStatistics
from trice.ice._core import IceParameters
from trice.ice._events import (
    CandidateGathered,
    CandidatePair,
    ConnectionState,
    ConnectionStateChanged,
    Event,
    EventsLost,
    GatheringState,
    GatheringStateChanged,
    SelectedPairChanged,
)

if typing.TYPE_CHECKING:
    from trice._trio._agent import (
        Agent,
        AgentContext,
        AgentStatistics,
        RelayStatistics,
        open_agent,
        warm_up,
    )
    from trice._trio._connection import Connection
    from trice._trio._gather import GatherReport
    from trice._trio._mux import MuxStatistics, UdpMux, UdpMuxContext, open_udp_mux
    from trice._trio._netwatch import address_changes
    from trice._trio._streams import EventStream
    from trice._trio._tcpmux import TcpMux, TcpMuxContext, TcpMuxStatistics, open_tcp_mux

# The trio shell's names, imported on first use (PEP 562): the pure packages (trice.stun,
# trice.ice, trice.turn, trice.mdns) import no trio and no socket, even though importing
# them runs this module first.
_SHELL = {
    "trice._trio._agent": (
        "Agent",
        "AgentContext",
        "AgentStatistics",
        "RelayStatistics",
        "open_agent",
        "warm_up",
    ),
    "trice._trio._connection": ("Connection",),
    "trice._trio._gather": ("GatherReport",),
    "trice._trio._mux": ("MuxStatistics", "UdpMux", "UdpMuxContext", "open_udp_mux"),
    "trice._trio._netwatch": ("address_changes",),
    "trice._trio._streams": ("EventStream",),
    "trice._trio._tcpmux": ("TcpMux", "TcpMuxContext", "TcpMuxStatistics", "open_tcp_mux"),
}
_SHELL_NAMES = {name: module for module, names in _SHELL.items() for name in names}


if not typing.TYPE_CHECKING:  # (a type checker sees the imports above: a misspelling errs)

    def __getattr__(name: str) -> object:
        module = _SHELL_NAMES.get(name)
        if module is None:
            raise AttributeError(f"module 'trice' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # (looked up here from now on)
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "TRACE",
    "Agent",
    "AgentConfig",
    "AgentContext",
    "AgentStatistics",
    "Candidate",
    "CandidateError",
    "CandidateGathered",
    "CandidatePair",
    "CandidateType",
    "ConfigError",
    "Connection",
    "ConnectionState",
    "ConnectionStateChanged",
    "Event",
    "EventStream",
    "EventsLost",
    "GatherReport",
    "GatheringState",
    "GatheringStateChanged",
    "IPAddress",
    "IceFailedError",
    "IceParameters",
    "IceServer",
    "LimitError",
    "MdnsDecodeError",
    "MdnsMode",
    "MuxStatistics",
    "NetworkConfig",
    "Nomination",
    "PairState",
    "PairStatistics",
    "ProtocolError",
    "ProxyUrl",
    "RelayStatistics",
    "SelectedPairChanged",
    "ServerUrl",
    "StateError",
    "StunDecodeError",
    "TcpMux",
    "TcpMuxContext",
    "TcpMuxStatistics",
    "TcpType",
    "Timing",
    "TransactionError",
    "TransportPolicy",
    "TriceError",
    "TurnError",
    "UdpMux",
    "UdpMuxContext",
    "UsageError",
    "address_changes",
    "end_of_candidates_json",
    "open_agent",
    "open_tcp_mux",
    "open_udp_mux",
    "warm_up",
]
