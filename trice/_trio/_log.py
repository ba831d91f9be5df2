"""The ``trice`` logger and its TRACE level (below DEBUG) that shows every check."""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["TRACE", "logger"]

#: A level below DEBUG: each check sent and each STUN message received.
TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

logger = logging.getLogger("trice")
