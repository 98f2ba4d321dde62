"""The face index of `facecvt serve`: names and vectors in SQLite, nearest-neighbour search by HNSW.

SQLite is the source of truth. A registration is one transaction (every face of the image, or
none); it is acknowledged only after the commit, so a server killed at any moment loses nothing it
acknowledged and keeps no half-written entry. The HNSW graph (hnswlib; usearch was measured too, see
the README) is a cache of the table: saved to a temporary file and renamed into place (never
half-written), at shutdown and every `save_every` changes; at start it is loaded and reconciled with
the table (rows missing from it added, ids no longer in the table removed), or rebuilt from the table
when it is missing or unreadable.

Distances are squared L2, FaceNet's convention (released weights: same person ~0.46, different ~2.0).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError

# The graph's parameters, in this one place (benchmarks/run.py's bench_ann measures them against
# the alternatives; README, "Choosing the ANN library"). A saved graph keeps the M it was built with.
HNSW_M = 48
HNSW_EF_CONSTRUCTION = 200

DB_NAME = "faces.sqlite"
ANN_NAME = "faces.hnsw"
SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    vector BLOB NOT NULL,
    box TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def search_ef(count: int, m: int = HNSW_M) -> int:
    """HNSW's search expansion for a graph of `count` faces built with `m` links a node, within
    64..512: count / 1560 for M >= 48 (FaceIndex's graphs: 64 up to 100 000 faces), count / 690 for
    the M=32 graphs saved before (a loaded graph keeps the M it was built with; 144 at 100 000).

    Measured (benchmarks/run.py's bench_ann settings: random 512-D unit vectors, ef_construction
    200, queries a same-person squared distance 0.5 from a stored vector, one at a time, side by
    side while other jobs loaded this 2-core machine, load average 2.6-3.8): at 100 000, M=48 gave
    recall@1 0.991 / 0.994 / 0.992 at ef 64 on three sets of 1000 queries, 1.65-1.87 ms p50, and
    0.996-0.998 at ef 80 (+20-30 % time); M=32 needed ef 144 for 0.994 (0.989 at ef 128), 1.15x the
    time of M=48 at ef 80. At 10 000, M=16 already gave 0.996 at ef 64. Sizes above 100 000 are an
    extrapolation, not measured.
    """
    per_ef = 1560 if m >= 48 else 690
    return int(min(512, max(64, count // per_ef)))


@dataclass
class Match:
    id: int
    name: str
    distance: float


class FaceIndex:
    """Thread-safe: one lock around the table and the graph (a search takes under 2 ms at 100 000
    faces, ~0.5 ms at 10 000; inference, not the index, bounds the server's throughput)."""

    def __init__(self, folder: str | Path | None, dim: int, *, model: str = "", m: int = HNSW_M,
                 ef_construction: int = HNSW_EF_CONSTRUCTION, ef_search: int | None = None, save_every: int = 1000):
        self.folder = Path(folder) if folder else None
        self.dim = int(dim)
        self.m, self.ef_construction, self.fixed_ef = m, ef_construction, ef_search
        self.ef_search = ef_search or 64
        self.save_every = save_every
        self._lock = threading.RLock()
        self._unsaved = 0
        self.start_report: dict = {}
        if self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise FacecvtError(f"--index {self.folder} is a file; give a folder (created if absent)")
            self.folder.mkdir(parents=True, exist_ok=True)
            db_path = str(self.folder / DB_NAME)
        else:
            db_path = ":memory:"
        try:
            self.db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise FacecvtError(f"the index {db_path} is not a readable SQLite database ({exc}); "
                               f"move it away or pass another --index") from None
        self._check_meta(model)
        self._open_graph()

    # -- start-up ---------------------------------------------------------------------------
    def _check_meta(self, model: str) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "dim" in meta and int(meta["dim"]) != self.dim:
            raise FacecvtError(f"the index in {self.folder} holds {meta['dim']}-D vectors but the model gives "
                               f"{self.dim}-D; pass another --index folder")
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(self.dim),))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?)", (model,))

    def _new_graph(self, capacity: int):
        import hnswlib

        graph = hnswlib.Index(space="l2", dim=self.dim)
        graph.init_index(max_elements=max(capacity, 1024), M=self.m, ef_construction=self.ef_construction,
                         random_seed=100, allow_replace_deleted=False)
        graph.set_ef(self.ef_search)
        return graph

    def _rows(self, ids=None):
        if ids is None:
            cursor = self.db.execute("SELECT id, vector FROM faces ORDER BY id")
        else:
            marks = ",".join("?" * len(ids))
            cursor = self.db.execute(f"SELECT id, vector FROM faces WHERE id IN ({marks}) ORDER BY id", list(ids))
        rows = cursor.fetchall()
        labels = np.array([r[0] for r in rows], np.int64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.dim) \
            if rows else np.zeros((0, self.dim), np.float32)
        return labels, vectors

    def _open_graph(self) -> None:
        """Load the saved graph and reconcile it with the table, or rebuild it from the table."""
        started = time.perf_counter()
        table_ids = {r[0] for r in self.db.execute("SELECT id FROM faces")}
        self.graph, how = None, "built from the table"
        path = self.folder / ANN_NAME if self.folder else None
        if path is not None and path.is_file():
            try:
                import hnswlib

                graph = hnswlib.Index(space="l2", dim=self.dim)
                graph.load_index(str(path), max_elements=max(2 * len(table_ids), 1024))
                graph.set_ef(self.ef_search)
                self.graph, how = graph, "loaded"
            except Exception as exc:  # unreadable or from another dimension: the table rebuilds it
                how = f"rebuilt from the table (saved graph unreadable: {type(exc).__name__})"
        added = removed = 0
        if self.graph is None:
            self.graph = self._new_graph(2 * len(table_ids))
            labels, vectors = self._rows()
            if len(labels):
                self.graph.add_items(vectors, labels)
            added = len(labels)
        else:
            graph_ids = set(int(i) for i in self.graph.get_ids_list())
            deleted = set(self._deleted_ids())
            live = graph_ids - deleted
            missing, extra = sorted(table_ids - live), sorted(live - table_ids)
            for label in extra:
                self.graph.mark_deleted(label)
            revived = [m for m in missing if m in graph_ids]
            for label in revived:  # deleted in the graph, still in the table: cannot happen but stay exact
                self.graph.unmark_deleted(label)
            labels, vectors = self._rows([m for m in missing if m not in graph_ids])
            if len(labels):
                self._ensure_capacity(len(labels))
                self.graph.add_items(vectors, labels)
            added, removed = len(missing), len(extra)
            if added or removed:
                how += f", reconciled with the table (+{added} -{removed})"
        if added or removed:
            self.save()
        self._count = len(table_ids)
        self.start_report = {"faces": len(table_ids), "graph": how, "seconds": round(time.perf_counter() - started, 3)}

    def _deleted_ids(self):
        # hnswlib keeps deleted labels in get_ids_list(); test each (cheap: a set lookup in C++)
        out = []
        for label in self.graph.get_ids_list():
            with contextlib.suppress(RuntimeError):
                self.graph.get_items([label])
                continue
            out.append(int(label))
        return out

    def _ensure_capacity(self, more: int) -> None:
        needed = self.graph.get_current_count() + more
        if needed > self.graph.get_max_elements():
            self.graph.resize_index(max(needed, 2 * self.graph.get_max_elements()))

    @contextlib.contextmanager
    def _transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- the API ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count  # kept with every committed change (a COUNT(*) scans the table)

    def add(self, name: str, vectors: np.ndarray, boxes=None) -> list[int]:
        """Add every vector under `name` in one transaction; the ids, once committed."""
        import json

        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        boxes = boxes if boxes is not None else [None] * len(vectors)
        with self._lock:
            ids = []
            with self._transaction():
                for vector, box in zip(vectors, boxes):
                    cursor = self.db.execute(
                        "INSERT INTO faces (name, vector, box, created) VALUES (?, ?, ?, ?)",
                        (name, vector.tobytes(), json.dumps(box) if box is not None else None, time.time()))
                    ids.append(int(cursor.lastrowid))
            self._count += len(ids)
            if ids:
                self._ensure_capacity(len(ids))
                self.graph.add_items(vectors, np.array(ids, np.int64))
                self._changed(len(ids))
            return ids

    def remove(self, face_id: int) -> str | None:
        """Delete one face; its name, or None when there is no such id."""
        with self._lock:
            with self._transaction():
                row = self.db.execute("SELECT name FROM faces WHERE id = ?", (face_id,)).fetchone()
                if row is None:
                    return None
                self.db.execute("DELETE FROM faces WHERE id = ?", (face_id,))
            self._count -= 1
            with contextlib.suppress(RuntimeError):
                self.graph.mark_deleted(face_id)
            self._changed(1)
            return row[0]

    def search(self, vectors: np.ndarray, k: int) -> list[list[Match]]:
        """The k nearest faces of each vector, nearest first (fewer when the index holds fewer)."""
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        with self._lock:
            count = self._count
            k = min(int(k), count)
            if k == 0 or not len(vectors):
                return [[] for _ in vectors]
            self.graph.set_ef(max(self.fixed_ef or search_ef(count, self.graph.M), k))
            labels, distances = self.graph.knn_query(vectors, k=k)
            wanted = sorted({int(i) for i in labels.ravel()})
            marks = ",".join("?" * len(wanted))
            names = dict(self.db.execute(f"SELECT id, name FROM faces WHERE id IN ({marks})", wanted).fetchall())
        return [[Match(int(i), names[int(i)], float(d)) for i, d in zip(row_ids, row_d) if int(i) in names]
                for row_ids, row_d in zip(labels, distances)]

    def save(self) -> None:
        """Write the graph to a temporary file beside it and rename it into place."""
        if self.folder is None:
            return
        with self._lock:
            fd, tmp = tempfile.mkstemp(prefix=f".{ANN_NAME}.", suffix=".tmp", dir=self.folder)
            os.close(fd)
            try:
                self.graph.save_index(tmp)
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, self.folder / ANN_NAME)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self._unsaved = 0

    def _changed(self, n: int) -> None:
        self._unsaved += n
        if self.save_every and self._unsaved >= self.save_every:
            self.save()

    def close(self) -> None:
        with self._lock:
            if self._unsaved:
                self.save()
            self.db.close()
