"""What a check run recorded, as one JSON file: the operations clients issued and their outcomes,
each object's event log and final state read at the end, what every subscriber was delivered, and
the faults injected. ``--record FILE`` writes it and ``--verify FILE`` checks a file again without a
server, so a run can be kept, audited, or tampered with on purpose to see the checker fail."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .linearizable import Op

VERSION = 1


@dataclass
class Obj:
    """One object of the workload: its kind, its operations, and what the server held at the end."""

    sid: str
    kind: str  # "document" | "list" | "map"
    initial: Any = None  # a Document's value at creation (revision 0)
    ops: list[Op] = field(default_factory=list)  # a Document's reads and If-Match writes
    writes: list[dict[str, Any]] = field(default_factory=list)  # List appends, Map writes
    log: list[dict[str, Any]] = field(default_factory=list)  # {"id", "type", "key", "data"}
    log_complete: bool = True  # False: the log could not be read to the object's last event
    final_revision: int | None = None  # the object's revision (its last event id) at the end
    final: dict[str, Any] = field(default_factory=dict)  # Document: {"": data}; List/Map: key -> data


@dataclass
class Recording:
    meta: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Obj] = field(default_factory=dict)
    # subscriber -> object sid -> delivered events {"id", "key", "data", "session"}
    deliveries: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)  # subscriber -> connections made
    faults: list[dict[str, Any]] = field(default_factory=list)  # {"t", "what"}
    errors: list[str] = field(default_factory=list)  # what went wrong outside the checks (a subscriber's refusal…)

    def save(self, path: str | Path) -> None:
        body = {"version": VERSION, **asdict(self)}
        Path(path).write_text(json.dumps(body, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        raw = json.loads(Path(path).read_text())
        if raw.get("version") != VERSION:
            raise ValueError(f"{path}: not a sync-server check recording (version {raw.get('version')!r})")
        objects = {}
        for sid, o in raw["objects"].items():
            o["ops"] = [Op(**op) for op in o["ops"]]
            objects[sid] = Obj(**o)
        return cls(raw["meta"], objects, raw["deliveries"], raw["sessions"], raw["faults"], raw["errors"])
