"""The application during a run: random inserts, updates and deletes, each one recorded.

Every write is applied to the collection *and* to a model that knows nothing
of convoy, so after a revert the collection must equal the model exactly:
application inserts present as written, updates and deletes kept, convoy's
changes gone. The writer also predicts which documents a revert must report
as conflicts (the application changed a field convoy had set) and as gone
(the application deleted a document convoy had changed).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from convoy.engines.mongo.documents import canonical

#: The field the tests' transforms set (see ``SPLIT``); the writer also writes it.
TOUCHED = "firstName"


@dataclass
class AppWriter:
    coll: Any
    seed: int
    model: dict[Any, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, Any]] = field(default_factory=list)
    conflicts: set[Any] = field(default_factory=set)
    gone: set[Any] = field(default_factory=set)
    touched: set[Any] = field(default_factory=set)
    next_id: int = 10_000

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.model = {d["_id"]: dict(d) for d in self.coll.find()}

    def _convoyed(self, doc_id: Any) -> bool:
        """The document carries a change of convoy that the revert has not undone yet."""
        doc = self.coll.find_one({"_id": doc_id})
        if doc is None or TOUCHED not in doc:
            return False
        return TOUCHED not in self.model[doc_id] or doc_id in self.conflicts

    def step(self) -> None:
        op = self.rng.choice(["insert", "insert", "update", "update", "touch", "delete"])
        if op == "insert" or not self.model:
            self.next_id += 1
            doc = {"_id": self.next_id, "fullName": f"App{self.next_id} Writer", "n": -1}
            self.coll.insert_one(dict(doc))
            self.model[doc["_id"]] = doc
        else:
            doc_id = self.rng.choice(sorted(self.model))
            if op == "update":
                value = self.rng.randint(0, 10**6)
                self.coll.update_one({"_id": doc_id}, {"$set": {"n": value}})
                self.model[doc_id]["n"] = value
            elif op == "touch":
                if self._convoyed(doc_id):
                    self.conflicts.add(doc_id)
                name = f"Typed{self.rng.randint(0, 999)}"
                self.coll.update_one({"_id": doc_id}, {"$set": {TOUCHED: name}})
                self.model[doc_id][TOUCHED] = name
                self.touched.add(doc_id)
            else:
                if self._convoyed(doc_id):
                    self.gone.add(doc_id)
                self.conflicts.discard(doc_id)
                self.coll.delete_one({"_id": doc_id})
                del self.model[doc_id]
        self.log.append((op, self.next_id))

    def hook(self, steps: int = 2) -> Any:
        """A fault hook that makes ``steps`` writes at every point it is called."""

        def write(point: str, details: Any) -> None:
            for _ in range(steps):
                self.step()

        return write

    def mismatches(self) -> list[str]:
        """Documents that differ from the model (empty: every application write survived)."""
        actual = {canonical({"v": d["_id"]}): d for d in self.coll.find()}
        wanted = {canonical({"v": k}): v for k, v in self.model.items()}
        out = []
        for key in sorted(set(actual) | set(wanted)):
            a, w = actual.get(key), wanted.get(key)
            if a is None or w is None or canonical(a) != canonical(w):
                out.append(f"{key}: db {a} model {w}")
        return out


class WriterThread(threading.Thread):
    """An :class:`AppWriter` writing continuously until stopped (real servers only)."""

    def __init__(self, writer: AppWriter, pause_s: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.writer = writer
        self.pause_s = pause_s
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.pause_s):
                self.writer.step()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error
