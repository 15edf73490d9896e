"""A persistent on-disk cache of successful judgements, so re-runs and judge swaps never pay twice.

SQLite (one file, WAL journal, a busy timeout) because it is safe for several threads *and*
processes writing at once - two lmms-eval runs on one machine may judge concurrently. The key is a
hash of (backend, model, PROMPT_VERSION, question, answer, prediction): a different judge model or
a changed prompt can never hit an old verdict. Failed judgements are never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

from llamavid_eval.judges.base import Judgement, JudgeRequest
from llamavid_eval.judges.prompt import PROMPT_VERSION

DEFAULT_CACHE_DIR = Path("~/.cache/llamavid-eval/judges")
DB_NAME = "judgements.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    verdict INTEGER NOT NULL,
    score INTEGER NOT NULL,
    raw TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(backend: str, model: str, request: JudgeRequest, prompt_version: str | None = None) -> str:
    """Stable key; JSON-encoding the tuple keeps field boundaries unambiguous."""
    payload = json.dumps(
        [backend, model, prompt_version or PROMPT_VERSION, request.question, request.answer, request.prediction],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CacheError(ValueError):
    """The cache folder cannot be used; the message names it and why."""


class JudgementCache:
    """Successful judgements keyed by :func:`cache_key`; ``directory`` is created on first use."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / DB_NAME
        self._ready = False

    def __repr__(self) -> str:
        return f"JudgementCache({str(self.path)!r})"

    def check(self) -> None:
        """Open (create) the database now: a folder that cannot hold it fails here, naming itself."""
        self._connect().close()

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self._ready:
                self.directory.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=60.0)
        except (OSError, sqlite3.Error) as err:
            raise CacheError(
                f"judge cache {self.path} cannot be opened ({err}): set LLAMAVID_JUDGE_CACHE (--cache) to a "
                "folder you can write, or to off"
            ) from None
        if not self._ready:
            try:
                con.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:  # e.g. a file system without shared memory: keep the default journal
                pass
            with con:
                con.execute(_SCHEMA)
            self._ready = True
        return con

    def get_many(self, keys: Sequence[str]) -> dict[str, Judgement]:
        """Cached judgements for those ``keys`` that have one (marked ``cached=True``)."""
        found: dict[str, Judgement] = {}
        unique = list(dict.fromkeys(keys))
        with closing(self._connect()) as con:
            for start in range(0, len(unique), 500):  # stay under SQLite's bound-parameter limit
                chunk = unique[start : start + 500]
                rows = con.execute(
                    f"SELECT key, backend, model, verdict, score, raw, metadata FROM judgements "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, backend, model, verdict, score, raw, metadata in rows:
                    found[key] = Judgement(
                        bool(verdict), int(score), raw, backend, model, cached=True, metadata=json.loads(metadata)
                    )
        return found

    def put_many(self, items: Iterable[tuple[str, Judgement]]) -> int:
        """Store successful judgements; failed ones are skipped. Returns how many were written."""
        rows = [
            (
                key,
                j.backend,
                j.model,
                str(j.metadata.get("prompt_version") or PROMPT_VERSION),
                int(bool(j.verdict)),
                int(j.score),
                j.raw,
                json.dumps(j.metadata, ensure_ascii=False, default=str),
                time.time(),
            )
            for key, j in items
            if not j.failed and j.verdict is not None and j.score is not None
        ]
        if rows:
            with closing(self._connect()) as con, con:
                con.executemany("INSERT OR REPLACE INTO judgements VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM judgements").fetchone()[0])
