"""The face index of `facecvt serve`: names and vectors in SQLite, nearest-neighbour search by HNSW.

SQLite is the source of truth. A registration is one transaction (every face of the image, or
none); it is acknowledged only after the commit, so a server killed at any moment loses nothing it
acknowledged and keeps no half-written entry. The HNSW graph (usearch with 8-bit vectors; hnswlib was
measured too, see the README) is a cache of the table: saved to a temporary file and renamed into
place (never half-written), at shutdown and every `save_every` changes; at start it is loaded and
reconciled with the table (rows missing from it added, ids no longer in the table removed), or rebuilt
from the table when it is missing, unreadable or of another kind (an hnswlib `faces.hnsw` saved before
is replaced by a `faces.usearch` built from the table, then deleted).

Distances are squared L2, FaceNet's convention (released weights: same person ~0.46, different ~2.0),
computed exactly in float from the table's vectors for the k faces the graph returns (the graph holds
8-bit copies scaled to unit length: it ranks by angle, which for FaceNet's unit-length embeddings is
the L2 ranking).
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
# the alternatives, hnswlib among them; README, "Choosing the ANN library"). A saved graph keeps the
# connectivity it was built with; one of another metric or scalar type is rebuilt.
ANN_METRIC = "l2sq"
ANN_DTYPE = "i8"
ANN_CONNECTIVITY = 64
ANN_EXPANSION_ADD = 200

DB_NAME = "faces.sqlite"
ANN_NAME = "faces.usearch"
OLD_ANN_NAMES = ("faces.hnsw",)  # graphs of earlier versions (hnswlib): rebuilt from the table, then deleted
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


def search_ef(count: int, connectivity: int = ANN_CONNECTIVITY) -> int:
    """The graph's search expansion for `count` faces and a graph of `connectivity` links a node:
    count / 2080 within 48..512 for connectivity >= 64 (FaceIndex's graphs: 48 up to 100 000 faces),
    count / 1250 within 64..512 for 48 (80 at 100 000), count / 690 within 64..512 below (144 at
    100 000); a loaded graph keeps the connectivity it was built with.

    Measured (usearch 2.26, 8-bit vectors, squared L2, expansion_add 200; random 512-D unit vectors,
    queries a same-person squared distance 0.5 from a stored vector, one at a time; benchmarks/run.py's
    bench_ann, the candidates interleaved in a new order every query, so each finds its graph cold
    in the caches as a server does after an inference; load average 2.4-4.6 on this 2-core machine):
    at 100 000, connectivity 64 at ef 48 gave recall@1 0.993-0.999 on six sets of 1000 queries
    (seeds 3-8) at 1.54-1.70 ms p50 (ef 56: 0.996-1.000, 1.73-1.91 ms; ef 64: 0.999-1.000, 1.9-2.1
    ms), and FaceIndex.search on it 1.75-1.85 ms; connectivity 48 gave 0.988-0.996 at ef 64,
    0.994-0.999 at ef 80 (2.0-2.2 ms); hnswlib M=48 at ef 64, the previous setting, 0.985-0.995 at
    2.1-2.2 ms. At 10 000 every setting found every near query's neighbour. Sizes above 100 000 are
    an extrapolation, not measured.
    """
    per_ef, least = (2080, 48) if connectivity >= 64 else (1250, 64) if connectivity >= 48 else (690, 64)
    return int(min(512, max(least, count // per_ef)))


@dataclass
class Match:
    id: int
    name: str
    distance: float


class FaceIndex:
    """Thread-safe: one lock around the table and the graph (a search takes about 2 ms at 100 000
    faces; inference, not the index, bounds the server's throughput)."""

    def __init__(self, folder: str | Path | None, dim: int, *, model: str = "",
                 connectivity: int = ANN_CONNECTIVITY, expansion_add: int = ANN_EXPANSION_ADD,
                 expansion_search: int | None = None, save_every: int = 1000):
        self.folder = Path(folder) if folder else None
        self.dim = int(dim)
        self.connectivity, self.expansion_add, self.fixed_ef = connectivity, expansion_add, expansion_search
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

    def _new_graph(self):
        from usearch.index import Index

        return Index(ndim=self.dim, metric=ANN_METRIC, dtype=ANN_DTYPE, connectivity=self.connectivity,
                     expansion_add=self.expansion_add)

    def _load_graph(self, path: Path):
        """The saved graph, or the reason it cannot serve (then rebuilt from the table)."""
        from usearch.index import Index

        try:
            graph = Index.restore(str(path))
        except Exception as exc:  # unreadable: the table rebuilds it
            return None, f"saved graph unreadable: {type(exc).__name__}"
        if graph is None:
            return None, "saved graph unreadable"
        kind = (graph.ndim, graph.metric.name.lower(), graph.dtype.name.lower())
        if kind != (self.dim, ANN_METRIC, ANN_DTYPE):
            return None, "saved graph of another kind: {}-D {} {}".format(*kind)
        graph.expansion_add = self.expansion_add
        return graph, ""

    def _rows(self, ids=None):
        if ids is None:
            cursor = self.db.execute("SELECT id, vector FROM faces ORDER BY id")
        else:
            marks = ",".join("?" * len(ids))
            cursor = self.db.execute(f"SELECT id, vector FROM faces WHERE id IN ({marks}) ORDER BY id", list(ids))
        rows = cursor.fetchall()
        labels = np.array([r[0] for r in rows], np.uint64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.dim) \
            if rows else np.zeros((0, self.dim), np.float32)
        return labels, vectors

    def _open_graph(self) -> None:
        """Load the saved graph and reconcile it with the table, or rebuild it from the table."""
        started = time.perf_counter()
        table_ids = {r[0] for r in self.db.execute("SELECT id FROM faces")}
        self.graph, how = None, "built from the table"
        path = self.folder / ANN_NAME if self.folder else None
        old = [self.folder / name for name in OLD_ANN_NAMES if (self.folder / name).is_file()] if self.folder else []
        if path is not None and path.is_file():
            self.graph, why = self._load_graph(path)
            how = "loaded" if self.graph is not None else f"rebuilt from the table ({why})"
        elif old:
            how = (f"rebuilt from the table ({old[0].name} is an hnswlib graph of an earlier version; "
                   f"replaced by {ANN_NAME})")
        added = removed = 0
        if self.graph is None:
            self.graph = self._new_graph()
            labels, vectors = self._rows()
            if len(labels):
                self.graph.add(labels, vectors)
            added = len(labels)
        else:
            # live keys only (removed ones are not listed); as one array: reading usearch's key view
            # one element at a time took 79 s for 100 000 faces
            graph_ids = set(np.asarray(self.graph.keys).tolist())
            missing, extra = sorted(table_ids - graph_ids), sorted(graph_ids - table_ids)
            if extra:
                self.graph.remove(np.array(extra, np.uint64))
            labels, vectors = self._rows(missing)
            if len(labels):
                self.graph.add(labels, vectors)
            added, removed = len(missing), len(extra)
            if added or removed:
                how += f", reconciled with the table (+{added} -{removed})"
        if added or removed or old:
            self.save()
            for file in old if self.folder else ():
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
        self._count = len(table_ids)
        self.start_report = {"faces": len(table_ids), "graph": how, "seconds": round(time.perf_counter() - started, 3)}

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
                self.graph.add(np.array(ids, np.uint64), vectors, threads=1)
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
            self.graph.remove(int(face_id))
            self._changed(1)
            return row[0]

    def search(self, vectors: np.ndarray, k: int) -> list[list[Match]]:
        """The k nearest faces of each vector, nearest first (fewer when the index holds fewer), at
        their exact squared L2 distance (from the table's float vectors)."""
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        with self._lock:
            count = self._count
            k = min(int(k), count)
            if k == 0 or not len(vectors):
                return [[] for _ in vectors]
            self.graph.expansion_search = max(self.fixed_ef or search_ef(count, self.graph.connectivity), k)
            if len(vectors) == 1:  # one face: usearch's single-query path, as many keys as found
                keys = [self.graph.search(vectors[0], k, threads=1).keys.tolist()]
            else:
                found = self.graph.search(vectors, k, threads=1)
                keys = [row[:n].tolist() for row, n in zip(found.keys, found.counts)]
            wanted = sorted({i for row in keys for i in row})
            marks = ",".join("?" * len(wanted))
            rows = {r[0]: r[1:] for r in self.db.execute(
                f"SELECT id, name, vector FROM faces WHERE id IN ({marks})", wanted).fetchall()}
        out = []
        for query, row in zip(vectors.astype(np.float64), keys):
            matches = []
            for i in row:
                if i in rows:
                    d = np.frombuffer(rows[i][1], np.float32) - query
                    matches.append(Match(i, rows[i][0], float(np.dot(d, d))))
            out.append(sorted(matches, key=lambda m: m.distance) if len(matches) > 1 else matches)
        return out

    def save(self) -> None:
        """Write the graph to a temporary file beside it and rename it into place."""
        if self.folder is None:
            return
        with self._lock:
            fd, tmp = tempfile.mkstemp(prefix=f".{ANN_NAME}.", suffix=".tmp", dir=self.folder)
            os.close(fd)
            try:
                self.graph.save(tmp)
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
