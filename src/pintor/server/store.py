"""The history: one SQLite database (WAL mode) with a row per job and a row per finished image.

Images are written to the outputs folder first (atomically, by `pintor.metadata.save_png`) and recorded here
right after, in their own transaction, so a process killed mid-job loses nothing that had finished. On open,
jobs left `queued` or `running` by a killed process are marked failed, and PNGs that were written but not
recorded are imported from their metadata chunks.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("pintor.server")

SCHEMA_VERSION = 1
INTERRUPTED = "interrupted by restart: the server stopped before this job finished"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    api TEXT,
    user TEXT,
    model TEXT,
    mode TEXT,
    prompt TEXT,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    error_type TEXT,
    rerun_of TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT,
    idx INTEGER NOT NULL DEFAULT 0,
    file TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    model TEXT,
    mode TEXT,
    prompt TEXT,
    negative_prompt TEXT,
    seed INTEGER,
    width INTEGER,
    height INTEGER,
    steps INTEGER,
    guidance_scale REAL,
    scheduler TEXT,
    user TEXT,
    seconds REAL,
    queue_seconds REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_job ON images(job_id);
CREATE INDEX IF NOT EXISTS images_created ON images(created);
"""

_JOB_COLUMNS = ("seq", "id", "state", "api", "user", "model", "mode", "prompt", "request", "created", "started",
                "finished", "error", "error_type", "rerun_of")
_IMAGE_COLUMNS = ("id", "job_id", "idx", "file", "created", "model", "mode", "prompt", "negative_prompt", "seed",
                  "width", "height", "steps", "guidance_scale", "scheduler", "user", "seconds", "queue_seconds",
                  "record")
# Output names are `<date>-<time>-<job id>-<index>-<slug>.png` (see `Service.save_outputs`).
_NAME = re.compile(r"^\d{8}-\d{6}-([0-9a-f]{12})-(\d+)-")


class Store:
    """Thread-safe access to the history database.

    Args:
        path (`Path`): the SQLite file (created with its folder if missing).
        outputs (`Path`): the folder the `file` column is relative to.
    """

    def __init__(self, path: Path, outputs: Path):
        self.path, self.outputs = Path(path), Path(outputs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection shared by the worker and the request threads, serialised by the lock: writes are few
        # and small, and SQLite serialises writers anyway.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args=()) -> sqlite3.Cursor:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cur

    def _read(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- start-up ----------------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Marks jobs a killed process left queued or running as failed, and records orphaned PNGs."""
        cur = self._write("UPDATE jobs SET state='failed', error=?, error_type='interrupted', finished=? "
                          "WHERE state IN ('queued', 'running')", (INTERRUPTED, time.time()))
        interrupted = cur.rowcount
        imported = self._import_orphans()
        if interrupted or imported:
            log.warning("recovered history: %d interrupted job(s) marked failed, %d unrecorded image(s) imported",
                        interrupted, imported)
        return {"interrupted": interrupted, "imported": imported}

    def _import_orphans(self) -> int:
        if not self.outputs.is_dir():
            return 0
        known = {r["file"] for r in self._read("SELECT file FROM images")}
        count = 0
        for path in sorted(self.outputs.glob("*.png")):
            if path.name in known:
                continue
            try:
                from pintor.metadata import read_metadata

                record = read_metadata(path)["pintor"]
            except Exception:  # noqa: BLE001 - a foreign or corrupt file is skipped, never fatal at start-up
                record = None
            if not record or "request" not in record:
                continue
            m = _NAME.match(path.name)
            self.add_image(job_id=m.group(1) if m else None, index=int(m.group(2)) if m else 0, file=path.name,
                           record=record, user=None, queue_seconds=None, created=path.stat().st_mtime)
            count += 1
        return count

    # -- jobs --------------------------------------------------------------------------------------------------
    def add_job(self, job_id: str, *, api: str, user: str | None, request: dict, created: float,
                rerun_of: str | None = None) -> int:
        cur = self._write(
            "INSERT INTO jobs (id, state, api, user, model, mode, prompt, request, created, rerun_of) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, api, user, request.get("model"), request.get("mode"), _prompt_text(request),
             json.dumps(request, sort_keys=True), created, rerun_of))
        return cur.lastrowid

    def update_job(self, job_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_JOB_COLUMNS)
        if bad:
            raise ValueError(f"unknown job column(s) {bad}")
        cols = ", ".join(f"{k}=?" for k in fields)
        self._write(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    def get_job(self, job_id: str) -> dict | None:
        rows = self._read("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _job_row(rows[0]) if rows else None

    def list_jobs(self, *, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        where, args = ("WHERE state=?", [state]) if state else ("", [])
        rows = self._read(f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_job_row(r) for r in rows]

    # -- images ------------------------------------------------------------------------------------------------
    def add_image(self, *, job_id: str | None, index: int, file: str, record: dict, user: str | None,
                  queue_seconds: float | None, created: float | None = None) -> int:
        r = record.get("request", {})
        cur = self._write(
            "INSERT OR IGNORE INTO images (job_id, idx, file, created, model, mode, prompt, negative_prompt, seed, "
            "width, height, steps, guidance_scale, scheduler, user, seconds, queue_seconds, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, index, file, created or time.time(), record.get("model"), r.get("mode"), _prompt_text(r),
             r.get("negative_prompt"), record.get("seed"), r.get("width"), r.get("height"), r.get("steps"),
             r.get("guidance_scale"), r.get("scheduler"), user, record.get("seconds"), queue_seconds,
             json.dumps(record, sort_keys=True)))
        return cur.lastrowid

    def get_image(self, image_id: int) -> dict | None:
        rows = self._read("SELECT * FROM images WHERE id=?", (image_id,))
        return _image_row(rows[0]) if rows else None

    def images_of(self, job_id: str) -> list[dict]:
        return [_image_row(r) for r in self._read("SELECT * FROM images WHERE job_id=? ORDER BY idx", (job_id,))]

    def history(self, *, q: str | None = None, user: str | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[dict], int]:
        """Images newest first; `q` matches prompt text (case-insensitive substring). Returns (page, total)."""
        clauses, args = [], []
        if q:
            # LIKE with an escape character, so % and _ in a search are taken literally.
            clauses.append("prompt LIKE ? ESCAPE '\\'")
            args.append("%" + re.sub(r"([%_\\])", r"\\\1", q) + "%")
        if user:
            clauses.append("user=?")
            args.append(user)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        total = self._read(f"SELECT COUNT(*) AS c FROM images {where}", args)[0]["c"]
        rows = self._read(f"SELECT * FROM images {where} ORDER BY id DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_image_row(r) for r in rows], total


def _prompt_text(request: dict) -> str:
    """The searchable text of a request: its prompt, or the texts it mixes."""
    if request.get("prompt"):
        return request["prompt"]
    texts = [it for it in request.get("items") or [] if isinstance(it, str)]
    return " | ".join(texts)


def _job_row(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["request"] = json.loads(d["request"])
    return d


def _image_row(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["record"] = json.loads(d["record"])
    return d
