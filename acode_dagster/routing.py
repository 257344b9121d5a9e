"""The route: which source server and which bronze bucket a sync uses.

Every run asks for it once when it starts (``defs.redundancy.state.read_route``); only the
health sensor's state machine (:mod:`acode_dagster.failover`) and an operator's pin change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["primary", "backup"]
PRIMARY: Role = "primary"
BACKUP: Role = "backup"
ROLES: tuple[Role, ...] = (PRIMARY, BACKUP)


@dataclass(frozen=True)
class Route:
    source: Role = PRIMARY
    bucket: Role = PRIMARY
