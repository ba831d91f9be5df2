"""The pure ICE core: candidates, priorities and foundations (RFC 8445, RFC 8839).

Nothing in this package imports trio, sockets or a clock.
"""

from __future__ import annotations

from trice.ice._candidate import Candidate, CandidateType, TcpType, end_of_candidates_json
from trice.ice._priority import (
    TYPE_PREFERENCE,
    candidate_priority,
    compute_foundation,
    local_preference,
    pair_priority,
)

__all__ = [
    "TYPE_PREFERENCE",
    "Candidate",
    "CandidateType",
    "TcpType",
    "candidate_priority",
    "compute_foundation",
    "end_of_candidates_json",
    "local_preference",
    "pair_priority",
]
