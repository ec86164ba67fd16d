"""The run store: an SQLite database under the data directory (TLCORE_HOME, default ~/.tlcore) that keeps every record
(a comparison, a sweep) and every strategy run in it as it finishes, so an interrupted sweep resumes and a result
outlives the process.

Each write is one transaction; the database runs in WAL mode, so a process killed mid-write leaves the last committed
state readable. The schema is versioned in `PRAGMA user_version` and upgraded by `MIGRATIONS` on open.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd

from tlcore.core.environment import data_home, read_only, require_writable
from tlcore.core.errors import TlcoreError
from tlcore.core.results import RunResult
from tlcore.records.models import delete_models, restore_models, trash_models

# Each entry upgrades the schema from version i to i + 1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE records (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,              -- comparison | sweep | recommendation | probe
            status TEXT NOT NULL,            -- queued | running | completed | failed | cancelled | interrupted
            label TEXT NOT NULL DEFAULT '',
            dataset TEXT NOT NULL DEFAULT '',
            backbone TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            config TEXT NOT NULL,            -- JSON: the full config that reproduces the record
            summary TEXT,                    -- JSON: dataset summary, environment, derived results
            error TEXT
        )""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
            run_id TEXT NOT NULL,
            cell_key TEXT,                   -- content key of a sweep cell: same key, same computation
            strategy TEXT NOT NULL,
            kind TEXT NOT NULL,
            per_class INTEGER,               -- NULL (0 in stores written before 0.2): every training image
            seed INTEGER NOT NULL,
            status TEXT NOT NULL,
            accuracy REAL,
            resumed INTEGER NOT NULL DEFAULT 0,  -- copied from an earlier record with the same cell key
            created_at REAL NOT NULL,
            payload TEXT NOT NULL            -- JSON: the whole RunResult
        )""",
        "CREATE INDEX runs_record ON runs(record_id)",
        "CREATE INDEX runs_cell ON runs(cell_key, status)",
        "CREATE INDEX records_kind ON records(kind, created_at)",
    ],
    [  # 2: find the runs on one dataset (for recommendations backed by measurements)
        "ALTER TABLE runs ADD COLUMN data_fingerprint TEXT",
        "ALTER TABLE runs ADD COLUMN backbone TEXT",
        "UPDATE runs SET data_fingerprint = json_extract(payload, '$.dataset.fingerprint'), "
        "backbone = json_extract(payload, '$.backbone')",
        "CREATE INDEX runs_data ON runs(data_fingerprint, backbone)",
    ],
    [  # 3: which process runs a record, so one left 'running' by a killed process can be shown as interrupted
        "ALTER TABLE records ADD COLUMN pid INTEGER",
        "ALTER TABLE records ADD COLUMN host TEXT",
    ],
    [  # 4: deleting moves a record to the trash (deleted_at set) for TLCORE_TRASH_DAYS, so it can be restored
        "ALTER TABLE records ADD COLUMN deleted_at REAL",
        "CREATE INDEX records_deleted ON records(deleted_at)",
    ],
]
ACTIVE_STATUSES = ("queued", "running")
BUNDLE_FORMAT = "tlcore-bundle"
SCHEMA_VERSION = len(MIGRATIONS)
TRASH_DAYS_ENV, DEFAULT_TRASH_DAYS = "TLCORE_TRASH_DAYS", 7.0
LIVE = "deleted_at IS NULL"  # a record not in the trash


def trash_days() -> float:
    """How long a deleted record stays restorable: TLCORE_TRASH_DAYS (default 7; 0 deletes at once)."""
    text = os.environ.get(TRASH_DAYS_ENV, "").strip()
    try:
        days = float(text) if text else DEFAULT_TRASH_DAYS
    except ValueError:
        days = -1
    if not days >= 0:
        raise StoreError(f"{TRASH_DAYS_ENV}={text!r} is not a number of days; use e.g. 7, or 0 to delete at once.")
    return days


class StoreError(TlcoreError):
    """The database cannot be opened or is from a newer tlcore."""


def _dumps(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


class Store:
    """Thread-safe: each call opens its own short-lived connection (SQLite serialises the writers)."""

    def __init__(self, path: Optional[str | Path] = None) -> None:
        self.path = Path(path) if path else data_home() / "tlcore.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the run store {self.path}: {exc}. Check the path and its permissions, "
                             "or set TLCORE_HOME to a writable folder.") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            with conn:  # one transaction: committed on success, rolled back on any error
                yield conn
        finally:
            conn.close()

    def _migrate(self) -> None:
        """Upgrade the schema in one exclusive transaction (SQLite DDL is transactional), so two processes opening a
        new or old store at once never apply a migration twice or see half of one."""
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the run store {self.path}: {exc}. Check the path and its permissions, "
                             "or set TLCORE_HOME to a writable folder.") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"The run store {self.path} has schema version {version}, newer than this "
                                     f"tlcore ({SCHEMA_VERSION}). Upgrade tlcore or point TLCORE_HOME elsewhere.")
                for v in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[v]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {v + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    @property
    def schema_version(self) -> int:
        with self._connect() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # -- records ------------------------------------------------------------------------------------------------
    def create_record(self, kind: str, config: dict, label: str = "", dataset: str = "", backbone: str = "",
                      record_id: Optional[str] = None, status: str = "running") -> str:
        require_writable(f"store a new {kind}")
        record_id = record_id or uuid.uuid4().hex[:12]
        now = time.time()
        with self._connect() as conn:
            conn.execute("INSERT INTO records (id, kind, status, label, dataset, backbone, created_at, updated_at, "
                         "config, pid, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (record_id, kind, status, label, dataset, backbone, now, now, _dumps(config), os.getpid(),
                          socket.gethostname()))
        return record_id

    def claim(self, record_id: str) -> None:
        """This process now runs the record (a queued job picked up by a worker)."""
        require_writable("start a run")
        with self._connect() as conn:
            conn.execute("UPDATE records SET status = 'running', pid = ?, host = ?, updated_at = ? WHERE id = ?",
                         (os.getpid(), socket.gethostname(), time.time(), record_id))

    def delete_record(self, record_id: str) -> bool:
        """Move a record, its runs and its saved models to the trash, where they stay restorable for
        `trash_days()`. False if there is no such record outside the trash: deleting twice deletes once."""
        require_writable("delete runs")
        trash_days()  # a bad setting is refused before anything changes
        with self._connect() as conn:
            deleted = conn.execute(f"UPDATE records SET deleted_at = ? WHERE id = ? AND {LIVE}",
                                   (time.time(), record_id)).rowcount > 0
        if deleted and self._owns_models():
            trash_models(record_id)
        self.purge_trash()
        return deleted

    def restore_record(self, record_id: str) -> bool:
        """Take a record (and its models) back out of the trash. False if it is not in the trash."""
        require_writable("restore runs")
        with self._connect() as conn:
            restored = conn.execute("UPDATE records SET deleted_at = NULL WHERE id = ? AND deleted_at IS NOT NULL",
                                    (record_id,)).rowcount > 0
        if restored and self._owns_models():
            restore_models(record_id)
        return restored

    def trashed(self) -> list[dict]:
        """Records in the trash, most recently deleted first, each with `strategies`, `runs_count` and `deleted_at`."""
        return self._listing("r.deleted_at IS NOT NULL", [], "r.deleted_at DESC", 500)

    def purge_trash(self, now: Optional[float] = None) -> list[str]:
        """Delete for good the records that have been in the trash longer than `trash_days()`, with their runs and
        models. Returns their ids."""
        if read_only():
            return []
        cutoff = (now or time.time()) - trash_days() * 86400
        with self._connect() as conn:
            expired = [r["id"] for r in conn.execute("SELECT id FROM records WHERE deleted_at IS NOT NULL AND "
                                                     "deleted_at <= ?", (cutoff,)).fetchall()]
            conn.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in expired])
        if self._owns_models():
            for record_id in expired:
                delete_models(record_id)
        return expired

    def _owns_models(self) -> bool:
        """Models live under the data directory; a store opened elsewhere (a bundle, a test) has none."""
        return self.path.parent == data_home()

    def mark_interrupted(self) -> list[str]:
        """Records left queued or running by a process of this host that no longer exists: a server restart or a
        kill. They become 'interrupted' (and can be re-run); records of live processes are left alone."""
        if read_only():
            return []
        host, me = socket.gethostname(), os.getpid()
        with self._connect() as conn:
            rows = conn.execute("SELECT id, pid, host FROM records WHERE status IN ('queued', 'running')").fetchall()
            dead = [r["id"] for r in rows if r["host"] == host and r["pid"] != me and not _alive(r["pid"])]
            for record_id in dead:
                conn.execute("UPDATE records SET status = 'interrupted', updated_at = ?, error = ? WHERE id = ?",
                             (time.time(), "the process running it stopped (server restart or kill) before it "
                              "finished; what finished is kept", record_id))
        return dead

    def update_record(self, record_id: str, status: Optional[str] = None, summary: Optional[dict] = None,
                      error: Optional[str] = None) -> None:
        require_writable("change a stored record")
        fields, values = ["updated_at = ?"], [time.time()]
        for name, value in (("status", status), ("summary", None if summary is None else _dumps(summary)),
                            ("error", error)):
            if value is not None:
                fields.append(f"{name} = ?")
                values.append(value)
        with self._connect() as conn:
            conn.execute(f"UPDATE records SET {', '.join(fields)} WHERE id = ?", (*values, record_id))

    def record(self, record_id: str, trashed: bool = False) -> Optional[dict]:
        """The record, or None; one in the trash only with `trashed=True`."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM records WHERE id = ?" + ("" if trashed else f" AND {LIVE}"),
                               (record_id,)).fetchone()
        return _record(row) if row else None

    def records(self, kind: Optional[str] = None, limit: int = 500) -> list[dict]:
        """Newest first, outside the trash, each with `strategies` (the strategy names of its runs) and
        `runs_count`."""
        where, args = (f"r.{LIVE} AND r.kind = ?", [kind]) if kind else (f"r.{LIVE}", [])
        return self._listing(where, args, "r.created_at DESC", limit)

    def _listing(self, where: str, args: list, order: str, limit: int) -> list[dict]:
        query = ("SELECT r.*, group_concat(DISTINCT u.strategy) AS strategies, count(u.id) AS runs_count "
                 f"FROM records r LEFT JOIN runs u ON u.record_id = r.id WHERE {where} GROUP BY r.id ORDER BY {order} "
                 "LIMIT ?")
        with self._connect() as conn:
            rows = conn.execute(query, (*args, limit)).fetchall()
        return [_record(r) for r in rows]

    def dataset_paths(self) -> set[str]:
        """The dataset of every record, the trash included: uploads they use are kept, so a restore finds them."""
        with self._connect() as conn:
            return {r["dataset"] for r in conn.execute("SELECT DISTINCT dataset FROM records").fetchall()}

    # -- bundles: a record, its runs and a CSV, in one zip another instance can import -------------------------
    def export_bundle(self, record_ids: list[str]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            exported = []
            for record_id in record_ids:
                record = self.record(record_id)
                if record is None:
                    raise StoreError(f"No stored record '{record_id}' to export.")
                runs = self.runs(record_id)
                zf.writestr(f"records/{record_id}.json", json.dumps(
                    {"record": record, "runs": [{**r, "run": r["run"].to_dict()} for r in runs]}, default=str))

                frame = pd.DataFrame([{**r["run"].to_row(), "per_class": r["per_class"]} for r in runs])
                zf.writestr(f"records/{record_id}_runs.csv", frame.to_csv(index=False))
                exported.append(record_id)
            zf.writestr("manifest.json", json.dumps({"format": BUNDLE_FORMAT, "version": 1,
                                                     "schema_version": SCHEMA_VERSION, "records": exported,
                                                     "exported_at": time.time()}))
        return buffer.getvalue()

    def import_bundle(self, data: bytes) -> list[str]:
        """Import the records of a bundle; records already here (same id) are skipped. Returns the imported ids."""
        require_writable("import results")
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            manifest = json.loads(zf.read("manifest.json"))
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise StoreError(f"Not a tlcore results bundle ({exc}). Export one from the History page or with "
                             "Store.export_bundle.") from None
        if manifest.get("format") != BUNDLE_FORMAT:
            raise StoreError("Not a tlcore results bundle (its manifest has no 'tlcore-bundle' format).")
        imported = []
        for record_id in manifest.get("records", []):
            if self.record(record_id, trashed=True) is not None:
                continue
            blob = json.loads(zf.read(f"records/{record_id}.json"))
            rec = blob["record"]
            with self._connect() as conn:
                conn.execute("INSERT INTO records (id, kind, status, label, dataset, backbone, created_at, "
                             "updated_at, config, summary, error, pid, host) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'imported')",
                             (rec["id"], rec["kind"], "interrupted" if rec["status"] in ACTIVE_STATUSES else
                              rec["status"], rec.get("label", ""), rec.get("dataset", ""), rec.get("backbone", ""),
                              rec["created_at"], rec["updated_at"], _dumps(rec["config"]),
                              None if rec.get("summary") is None else _dumps(rec["summary"]), rec.get("error")))
                for r in blob["runs"]:
                    run = RunResult.from_dict(r["run"])
                    conn.execute("INSERT INTO runs (record_id, run_id, cell_key, strategy, kind, per_class, seed, "
                                 "status, accuracy, resumed, created_at, payload, data_fingerprint, backbone) VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (record_id, run.run_id, r.get("cell_key"), run.strategy, run.kind, r.get("per_class"),
                                  run.seed, run.status, run.accuracy, int(r.get("resumed", False)), time.time(),
                                  _dumps(run.to_dict()), (run.dataset or {}).get("fingerprint"), run.backbone))
            imported.append(record_id)
        return imported

    # -- runs ---------------------------------------------------------------------------------------------------
    def add_run(self, record_id: str, run: RunResult, cell_key: Optional[str] = None,
                per_class: Optional[int] = None, resumed: bool = False) -> None:
        require_writable("store a run")
        with self._connect() as conn:
            conn.execute("INSERT INTO runs (record_id, run_id, cell_key, strategy, kind, per_class, seed, status, "
                         "accuracy, resumed, created_at, payload, data_fingerprint, backbone) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (record_id, run.run_id, cell_key, run.strategy, run.kind, per_class, run.seed, run.status,
                          run.accuracy, int(resumed), time.time(), _dumps(run.to_dict()),
                          (run.dataset or {}).get("fingerprint"), run.backbone))
            conn.execute("UPDATE records SET updated_at = ? WHERE id = ?", (time.time(), record_id))

    def runs(self, record_id: str) -> list[dict]:
        """The runs of a record in the order they finished: {run, cell_key, per_class, resumed}."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE record_id = ? ORDER BY id", (record_id,)).fetchall()
        return [{"run": RunResult.from_dict(json.loads(r["payload"])), "cell_key": r["cell_key"],
                 "per_class": r["per_class"] or None, "resumed": bool(r["resumed"])} for r in rows]

    def run(self, run_id: str) -> Optional[dict]:
        """One stored run by its id (outside the trash), with its record's id and the record's dataset summary:
        {run, record_id, dataset}."""
        with self._connect() as conn:
            row = conn.execute("SELECT runs.record_id, runs.payload, records.summary FROM runs JOIN records ON "
                               f"records.id = runs.record_id WHERE runs.run_id = ? AND runs.resumed = 0 AND "
                               f"records.{LIVE} LIMIT 1", (run_id,)).fetchone()
        if row is None:
            return None
        summary = json.loads(row["summary"]) if row["summary"] else {}
        return {"run": RunResult.from_dict(json.loads(row["payload"])), "record_id": row["record_id"],
                "dataset": (summary or {}).get("dataset", {})}

    def runs_for_data(self, data_fingerprint: str, backbone: str) -> list[dict]:
        """Every stored run on this data and split with this backbone, from any record: {run, per_class, record_id}.
        A resumed sweep cell is listed once."""
        with self._connect() as conn:
            rows = conn.execute("SELECT record_id, per_class, payload FROM runs WHERE data_fingerprint = ? AND "
                                "backbone = ? AND resumed = 0 AND record_id IN (SELECT id FROM records WHERE "
                                f"{LIVE}) ORDER BY id", (data_fingerprint, backbone)).fetchall()
        return [{"run": RunResult.from_dict(json.loads(r["payload"])), "per_class": r["per_class"] or None,
                 "record_id": r["record_id"]} for r in rows]

    def completed_cell(self, cell_key: str) -> Optional[RunResult]:
        """The newest completed run with this content key, from any record."""
        with self._connect() as conn:
            row = conn.execute("SELECT payload FROM runs WHERE cell_key = ? AND status = 'completed' AND record_id "
                               f"IN (SELECT id FROM records WHERE {LIVE}) ORDER BY id DESC LIMIT 1",
                               (cell_key,)).fetchone()
        return RunResult.from_dict(json.loads(row["payload"])) if row else None


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["summary"] = json.loads(d["summary"]) if d["summary"] else None
    return d


_STORES: dict[Path, Store] = {}
_STORES_LOCK = threading.Lock()


def default_store() -> Store:
    """The store under the current data directory (one per path, migrated once)."""
    path = data_home() / "tlcore.db"
    with _STORES_LOCK:
        if path not in _STORES or not path.exists():
            _STORES[path] = Store(path)
            _STORES[path].mark_interrupted()
            _STORES[path].purge_trash()
        return _STORES[path]
