"""Persistent answer cache: (backend, model, prompt version, state text) -> (phase, reason).

sqlite in WAL mode so several processes (parallel rounds, a resumed run) can read while one
writes; a short busy timeout serialises writers. Keys are SHA-256 digests of the four parts, so
the table stays small and the text itself (which may embed feedback) is not duplicated. A row
that does not decode is ignored (the state is asked again and the row overwritten); a file that is
not a database at all is reported and replaced by an in-memory cache so the run still completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    phase INTEGER,
    reason TEXT,
    created REAL
)
"""


@dataclass(frozen=True)
class CachedAnswer:
    phase: int
    reason: str


def cache_key(backend: str, model: str, version: str, text: str) -> str:
    return hashlib.sha256(json.dumps([backend, model, version, text]).encode()).hexdigest()


class AnswerCache:
    """Thread-safe, multi-process-safe answer store. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._conn = self._open(timeout_s)

    def _open(self, timeout_s: float) -> sqlite3.Connection:
        if self.path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            conn.execute(_SCHEMA)
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), timeout=timeout_s, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            conn.commit()
            return conn
        except sqlite3.DatabaseError as e:
            log.warning(
                "answer cache %s is unreadable (%s); using an in-memory cache for this run "
                "(delete the file to start a fresh one)",
                self.path,
                e,
            )
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            conn.execute(_SCHEMA)
            return conn

    def get(self, backend: str, model: str, version: str, text: str) -> CachedAnswer | None:
        key = cache_key(backend, model, version, text)
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT phase, reason FROM answers WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.DatabaseError as e:  # a damaged page: treat as a miss
            log.warning("answer cache read failed (%s); asking again", e)
            return None
        if row is None:
            return None
        phase, reason = row
        if isinstance(phase, bool) or not isinstance(phase, int) or phase < 0:
            log.debug("ignoring corrupt cache row %s", key[:12])
            return None
        return CachedAnswer(phase, reason if isinstance(reason, str) else "")

    def put(self, backend: str, model: str, version: str, text: str, phase: int, reason: str) -> None:
        self.put_many(backend, model, version, [(text, phase, reason)])

    def put_many(
        self, backend: str, model: str, version: str, rows: Iterable[tuple[str, int, str]]
    ) -> None:
        now = time.time()
        data = [
            (cache_key(backend, model, version, t), backend, model, version, int(p), r, now)
            for t, p, r in rows
        ]
        try:
            with self._lock, self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)", data
                )
        except sqlite3.DatabaseError as e:  # never lose a round over a cache write
            log.warning("answer cache write failed (%s); continuing without storing", e)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
