"""The route: which source server and which bronze bucket a sync uses.

Every run asks :func:`read_route` once when it starts; nothing else decides where data comes
from or goes to, so the failover machinery has exactly one place to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["primary", "backup"]
PRIMARY: Role = "primary"
BACKUP: Role = "backup"
ROLES: tuple[Role, ...] = (PRIMARY, BACKUP)


@dataclass(frozen=True)
class Route:
    source: Role = PRIMARY
    bucket: Role = PRIMARY


def read_route(instance: Any = None) -> Route:
    """The route in force. Until automatic failover lands, always the primaries."""
    return Route()
