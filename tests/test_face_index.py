"""The face index: SQLite as the source of truth, the HNSW graph (usearch) saved atomically and reconciled at start."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.core.errors import FacecvtError
from facecvt.pipeline.index import ANN_NAME, DB_NAME, FaceIndex


def unit(n, dim=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_add_search_remove_in_memory():
    index = FaceIndex(None, 32)
    data = unit(50)
    ids = [index.add(f"p{i}", data[i:i + 1])[0] for i in range(50)]
    assert len(index) == 50
    matches = index.search(data[7:8], k=3)[0]
    assert matches[0].name == "p7" and matches[0].id == ids[7] and matches[0].distance < 1e-5
    assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    assert index.remove(ids[7]) == "p7"
    assert index.remove(ids[7]) is None
    assert all(m.id != ids[7] for m in index.search(data[7:8], k=5)[0])
    assert len(index.search(data[:1], k=500)[0]) == 49  # k above the count: every face


def test_restart_keeps_everything_and_reconciles_an_unsaved_graph(tmp_path):
    data = unit(40, seed=1)
    index = FaceIndex(tmp_path, 32, save_every=0)  # the graph is only saved at close
    ids = index.add("first", data[:20])
    index.close()
    assert (tmp_path / ANN_NAME).is_file()
    # a second run is killed: rows committed, the graph never saved (no close)
    index = FaceIndex(tmp_path, 32, save_every=0)
    more = index.add("second", data[20:40])
    index.remove(ids[0])
    index.db.close()
    del index
    reopened = FaceIndex(tmp_path, 32)
    assert "reconciled" in reopened.start_report["graph"], reopened.start_report
    assert len(reopened) == 39
    top = reopened.search(data[25:26], k=1)[0][0]
    assert (top.id, top.name) == (more[5], "second")
    assert all(m.id != ids[0] for m in reopened.search(data[0:1], k=3)[0])
    reopened.close()


def test_unreadable_graph_is_rebuilt_from_the_table(tmp_path):
    data = unit(10, seed=2)
    index = FaceIndex(tmp_path, 32)
    index.add("x", data)
    index.close()
    (tmp_path / ANN_NAME).write_bytes(b"half a file")
    reopened = FaceIndex(tmp_path, 32)
    assert "rebuilt" in reopened.start_report["graph"]
    assert reopened.search(data[3:4], k=1)[0][0].distance < 1e-5


def test_a_registration_interrupted_midway_leaves_nothing(tmp_path, monkeypatch):
    """Every face of one registration is committed together or not at all."""
    import facecvt.pipeline.index as module

    index = FaceIndex(tmp_path, 32)
    calls = iter(range(10))

    def clock():
        if next(calls) == 1:  # the second face's row
            raise KeyboardInterrupt
        return 0.0

    monkeypatch.setattr(module.time, "time", clock)
    with pytest.raises(KeyboardInterrupt):
        index.add("half", unit(3, seed=3))
    monkeypatch.undo()
    assert len(index) == 0 and len(index.graph) == 0
    index.close()
    assert len(FaceIndex(tmp_path, 32)) == 0


def test_dimension_mismatch_and_bad_database(tmp_path):
    FaceIndex(tmp_path / "a", 32).close()
    with pytest.raises(FacecvtError, match="32-D"):
        FaceIndex(tmp_path / "a", 512)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / DB_NAME).write_bytes(b"not sqlite" * 100)
    with pytest.raises(FacecvtError, match="SQLite"):
        FaceIndex(tmp_path / "b", 32)


def test_a_saved_graph_keeps_its_connectivity_and_an_old_hnswlib_graph_is_rebuilt(tmp_path):
    """A graph saved with another connectivity is loaded as it is; a `faces.hnsw` of an earlier
    version (hnswlib) is replaced by a graph built from the table; new graphs use the constants."""
    import hnswlib

    from facecvt.pipeline.index import ANN_CONNECTIVITY, ANN_DTYPE, OLD_ANN_NAMES, search_ef

    data = unit(30, seed=4)
    old = FaceIndex(tmp_path / "a", 32, connectivity=16)
    old.add("x", data)
    old.close()
    reopened = FaceIndex(tmp_path / "a", 32)
    assert reopened.start_report["graph"] == "loaded" and reopened.graph.connectivity == 16
    assert reopened.search(data[5:6], k=1)[0][0].distance < 1e-5
    fresh = FaceIndex(None, 32)
    assert fresh.graph.connectivity == ANN_CONNECTIVITY and fresh.graph.dtype.name.lower() == ANN_DTYPE
    assert search_ef(100_000) == 48 and search_ef(100_000, 16) == 144
    assert search_ef(10) == 48 and search_ef(10**7) == 512

    # an index folder of an earlier version: the table and hnswlib's graph
    folder = tmp_path / "b"
    earlier = FaceIndex(folder, 32)
    ids = earlier.add("y", data)
    earlier.close()
    (folder / ANN_NAME).unlink()
    graph = hnswlib.Index(space="l2", dim=32)
    graph.init_index(max_elements=64, M=16)
    graph.add_items(data, ids)
    graph.save_index(str(folder / OLD_ANN_NAMES[0]))
    upgraded = FaceIndex(folder, 32)
    assert "rebuilt" in upgraded.start_report["graph"] and "hnswlib" in upgraded.start_report["graph"]
    assert (folder / ANN_NAME).is_file() and not (folder / OLD_ANN_NAMES[0]).exists()
    assert [m.id for m in upgraded.search(data[7:8], k=1)[0]] == [ids[7]]
    upgraded.close()
    assert FaceIndex(folder, 32).start_report["graph"] == "loaded"


def test_recall_and_exact_distances_on_5000_faces():
    """Queries a same-person distance (0.5) from a stored face: the nearest face is the exact
    search's for >= 99 % of them, and every returned distance is the exact float squared L2."""
    from benchmarks.run import exact_top1, near_queries, random_unit_vectors

    data = random_unit_vectors(5000, 512, seed=1)
    index = FaceIndex(None, 512)
    ids = np.array(index.add("p", data))
    queries = near_queries(data, 500, seed=3)
    found = index.search(queries, k=5)
    top = np.array([row[0].id for row in found])
    assert np.mean(top == ids[exact_top1(data, queries)]) >= 0.99
    by_id = dict(zip(ids.tolist(), data))
    for query, row in zip(queries, found):
        assert len(row) == 5
        exact = [float(np.sum((by_id[m.id].astype(np.float64) - query) ** 2)) for m in row]
        assert [m.distance for m in row] == pytest.approx(exact, rel=1e-6, abs=1e-7)
        assert exact == sorted(exact)
