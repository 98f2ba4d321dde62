"""The face index of `facecvt serve`: names and vectors in SQLite, nearest-neighbour search by HNSW.

SQLite is the source of truth. A registration is one transaction (every face of the image, or
none); it is acknowledged only after the commit, so a server killed at any moment loses nothing it
acknowledged and keeps no half-written entry. The HNSW graph (usearch; hnswlib was measured too, see
the README) is a cache of the table: saved to a temporary file and renamed into place (never
half-written), at shutdown and every `save_every` changes; at start it is loaded and reconciled with
the table (rows missing from it added, ids no longer in the table removed), or rebuilt from the
table when it is missing, unreadable or of another kind (the 512-D graph of an earlier version, or
an hnswlib `faces.hnsw`, which is then deleted).

A search asks the graph for ANN_CANDIDATES faces and ranks them by their exact squared L2 distance,
computed in float from the table's vectors (FaceNet's convention: released weights, same person
~0.46, different ~2.0). The graph holds 128-D 8-bit sketches of the vectors (`sketch.py`: a random
projection stored in the table's meta), so that it is cheap to walk; the exact re-ranking makes up
for what the sketches lose.
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
from facecvt.pipeline.half_vectors import HalfVectors
from facecvt.pipeline.sketch import new_projection, sketch

# The graph's parameters, in this one place (benchmarks/run.py's bench_ann measures them against
# the alternatives, hnswlib among them; README, "Choosing the ANN library"). A saved graph keeps the
# connectivity it was built with; one of another size, metric or scalar type is rebuilt.
ANN_METRIC = "l2sq"
ANN_DTYPE = "i8"
ANN_CONNECTIVITY = 48
ANN_EXPANSION_ADD = 400  # 200 builds 1.4x faster, and its graph missed 0.8 % of face-like queries, not 0.2 %
ANN_CANDIDATES = 16  # faces the graph proposes for the exact re-ranking (more when k is larger)

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


def search_ef(count: int) -> int:
    """The graph's search expansion for `count` faces: count / 1500 within 64..512 (66 at 100 000).

    Measured at 100 000 (usearch 2.26, connectivity 48, expansion_add 400, 128-D sketches, the
    graph's 16 best re-ranked exactly; one query at a time, the candidates interleaved in a new order
    every query so that each finds its graph cold in the caches, as a server does after an
    inference; benchmarks/run.py's bench_ann on two sets of 1000 queries): on vectors shaped like
    FaceNet's (face_like_vectors: 50 000 people, two faces each, a query a third face) recall@1
    0.981-0.983 at ef 32, 0.990-0.995 at 48-50, 0.995-0.997 at 66, 0.997-0.998 at 96; on random unit
    vectors 0.992-0.994, 0.998, 0.999, 1.000. The time grows about linearly with ef (ef 50 took 0.83x
    the time of ef 66). Sizes above 100 000 are an extrapolation, not measured.
    """
    return int(min(512, max(64, count // 1500)))


@dataclass
class Match:
    id: int
    name: str
    distance: float


class FaceIndex:
    """Thread-safe: one lock around the table, the graph and the in-memory copies (a search takes
    1-2 ms at 100 000 faces; inference, not the index, bounds the server's throughput). Memory at
    100 000 512-D faces: ~60 MB of graph and 100 MB of half-precision copies."""

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
        self.projection, drawn_now = self._projection()
        self.half = HalfVectors(self.dim)
        self._open_graph(graph_predates_sketches=drawn_now)

    # -- start-up ---------------------------------------------------------------------------
    def _check_meta(self, model: str) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "dim" in meta and int(meta["dim"]) != self.dim:
            raise FacecvtError(f"the index in {self.folder} holds {meta['dim']}-D vectors but the model gives "
                               f"{self.dim}-D; pass another --index folder")
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(self.dim),))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?)", (model,))

    def _projection(self) -> tuple[np.ndarray, bool]:
        """The sketches' projection as stored in the table's meta, and whether it was drawn (and
        stored) just now: then a saved graph is of a version that built it on the vectors themselves."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'projection'").fetchone()
        if row is not None:
            return np.frombuffer(row[0], np.float32).reshape(self.dim, -1), False
        projection = new_projection(self.dim)
        with self._transaction():
            self.db.execute("INSERT INTO meta VALUES ('projection', ?)", (projection.tobytes(),))
        return projection, True

    def _new_graph(self):
        from usearch.index import Index

        return Index(ndim=self.projection.shape[1], metric=ANN_METRIC, dtype=ANN_DTYPE,
                     connectivity=self.connectivity, expansion_add=self.expansion_add)

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
        if kind != (self.projection.shape[1], ANN_METRIC, ANN_DTYPE):
            return None, "saved graph of another kind: {}-D {} {}".format(*kind)
        graph.expansion_add = self.expansion_add
        return graph, ""

    def _row_chunks(self, ids=None, size: int = 4096):
        """(ids, float32 vectors) of the table's rows, or of the rows of `ids`, `size` at a time."""
        if ids is None:
            cursor = self.db.execute("SELECT id, vector FROM faces ORDER BY id")
            chunks = iter(lambda: cursor.fetchmany(size), [])
        else:
            ids = list(ids)
            chunks = (self.db.execute(f"SELECT id, vector FROM faces WHERE id IN ({','.join('?' * len(part))}) "
                                      f"ORDER BY id", part).fetchall()
                      for part in (ids[i:i + 500] for i in range(0, len(ids), 500)))  # under SQLite's variable limit
        for rows in chunks:
            if rows:
                yield (np.array([r[0] for r in rows], np.uint64),
                       np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.dim))

    def _open_graph(self, graph_predates_sketches: bool) -> None:
        """Load the saved graph and reconcile it with the table, or rebuild it from the table; copy
        the table's vectors into memory for the re-ranking."""
        started = time.perf_counter()
        self.graph, how = None, "built from the table"
        path = self.folder / ANN_NAME if self.folder else None
        old = [self.folder / name for name in OLD_ANN_NAMES if (self.folder / name).is_file()] if self.folder else []
        if path is not None and path.is_file() and graph_predates_sketches:
            how = f"rebuilt from the table ({ANN_NAME} of an earlier version, built on the vectors, not their sketches)"
        elif path is not None and path.is_file():
            self.graph, why = self._load_graph(path)
            how = "loaded" if self.graph is not None else f"rebuilt from the table ({why})"
        elif old:
            how = (f"rebuilt from the table ({old[0].name} is an hnswlib graph of an earlier version; "
                   f"replaced by {ANN_NAME})")
        rebuild = self.graph is None
        if rebuild:
            self.graph = self._new_graph()
        for labels, vectors in self._row_chunks():
            self.half.put(labels, vectors)
            if rebuild:
                self.graph.add(labels, sketch(vectors, self.projection))
        table_ids = set(self.half.held_ids().tolist())
        if not rebuild:
            # live keys only (removed ones are not listed); as one array: reading usearch's key view
            # one element at a time took 79 s for 100 000 faces
            graph_ids = set(np.asarray(self.graph.keys).tolist())
            missing, extra = sorted(table_ids - graph_ids), sorted(graph_ids - table_ids)
            if extra:
                self.graph.remove(np.array(extra, np.uint64))
            for labels, vectors in self._row_chunks(missing):
                self.graph.add(labels, sketch(vectors, self.projection))
            if missing or extra:
                how += f", reconciled with the table (+{len(missing)} -{len(extra)})"
        if how != "loaded":  # built, rebuilt or reconciled: saved so that the next start loads it as it is
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
                self.graph.add(np.array(ids, np.uint64), sketch(vectors, self.projection), threads=1)
                self.half.put(ids, vectors)
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
            self.half.drop(face_id)
            self._changed(1)
            return row[0]

    def search(self, vectors: np.ndarray, k: int) -> list[list[Match]]:
        """The k nearest faces of each vector, nearest first (fewer when the index holds fewer), at
        their exact squared L2 distance: the graph proposes max(k, ANN_CANDIDATES) faces by their
        sketches, their half-precision copies in memory pick the k nearest, and the table's float
        vectors give those k their names and exact distances."""
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        with self._lock:
            count = self._count
            k = min(int(k), count)
            if k == 0 or not len(vectors):
                return [[] for _ in vectors]
            proposed = min(count, max(k, ANN_CANDIDATES))
            self.graph.expansion_search = max(self.fixed_ef or search_ef(count), proposed)
            sketches = sketch(vectors, self.projection)
            if len(vectors) == 1:  # one face: usearch's single-query path, as many keys as found
                keys = [self.graph.search(sketches[0], proposed, threads=1).keys]
            else:
                found = self.graph.search(sketches, proposed, threads=1)
                keys = [row[:n] for row, n in zip(found.keys, found.counts)]
            nearest = []
            for query, row in zip(vectors, keys):
                held, distances = self.half.squared_distances(row, query)
                nearest.append(held[np.argsort(distances, kind="stable")[:k]].tolist())
            wanted = sorted({i for row in nearest for i in row})
            rows = {r[0]: r[1:] for r in self.db.execute(
                f"SELECT id, name, vector FROM faces WHERE id IN ({','.join('?' * len(wanted))})", wanted).fetchall()}
        out = []
        for query, row in zip(vectors.astype(np.float64), nearest):
            matches = []
            for i in row:
                if i in rows:
                    d = np.frombuffer(rows[i][1], np.float32) - query
                    matches.append(Match(i, rows[i][0], float(np.dot(d, d))))
            out.append(sorted(matches, key=lambda m: m.distance))
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
