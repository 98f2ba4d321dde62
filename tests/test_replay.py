"""Candidates run elsewhere and compared here (validate/runners/replay.py), and the thread share an
export worker gives its runtimes (core/threads.py)."""

from __future__ import annotations

import numpy as np
import pytest

from facecvt.validate.runners import load_runner
from facecvt.validate.runners.replay import ReplayRunner, batch_key
from facecvt.validate.verify import InputSpec, verification_batches, verify
from facecvt.workflows.export_artifact import export

INPUTS = InputSpec(random=6, batch_size=4)  # two batches: 4 and 2 inputs


@pytest.fixture(scope="module")
def recorded_onnx(frozen, tmp_path_factory):
    """The tiny graph's ONNX export, run on verify's inputs while it was loaded back."""
    batches = verification_batches(INPUTS, None, tuple(frozen.input_shape[1:4]))
    return export("onnx", frozen, tmp_path_factory.mktemp("replay") / "tiny.onnx", record_on=batches)


def _replayed(result, recording=None):
    return ReplayRunner("onnxruntime", result.path, recording or result.recording,
                        lambda: load_runner("onnxruntime", result.path))


def test_the_worker_records_every_batch_verify_feeds(recorded_onnx, frozen):
    batches = list(verification_batches(INPUTS, None, tuple(frozen.input_shape[1:4])))
    assert [len(b) for b in batches] == [4, 2]
    assert set(recorded_onnx.recording.outputs) == {batch_key(b) for b in batches}
    assert recorded_onnx.recording.output_names == ["embeddings"]


def test_a_replayed_candidate_gets_the_report_a_live_one_gets(recorded_onnx, tiny_pb):
    live = verify(("tensorflow", tiny_pb), [("onnxruntime", recorded_onnx.path, "fp32")], INPUTS)
    replayed_runner = _replayed(recorded_onnx)
    replayed = verify(("tensorflow", tiny_pb), [(replayed_runner, "fp32")], INPUTS)
    assert replayed_runner._live is None  # answered from the recording alone
    for key in ("pass", "max_abs", "mean_abs", "min_cosine"):
        assert replayed["candidates"][0][key] == live["candidates"][0][key], key
    assert replayed["candidates"][0]["path"] == live["candidates"][0]["path"]


def test_verify_judges_what_the_recording_holds(recorded_onnx, tiny_pb):
    """A recording that differs from the reference fails like an artifact that does."""
    import dataclasses

    shifted = dataclasses.replace(recorded_onnx.recording, outputs={
        key: [out + 0.05 for out in outputs] for key, outputs in recorded_onnx.recording.outputs.items()})
    report = verify(("tensorflow", tiny_pb), [(_replayed(recorded_onnx, shifted), "fp32")], INPUTS)
    assert not report["candidates"][0]["pass"]


def test_a_batch_the_recording_lacks_is_run_by_the_artifact_itself(recorded_onnx, frozen):
    other = np.random.default_rng(5).uniform(-1, 1, (3, *frozen.input_shape[1:4])).astype(np.float32)
    runner = _replayed(recorded_onnx)
    with load_runner("onnxruntime", recorded_onnx.path) as live:
        expected = live.run(other)[0]
    assert np.array_equal(runner.run(other)[0], expected)
    assert runner._live is not None
    runner.close()


def test_a_recording_that_fails_leaves_verify_to_the_caller(frozen, tmp_path):
    def broken_batches():
        yield np.zeros((1, 3, 3, 3), np.float32)  # the wrong image size: the runner refuses it

    result = export("onnx", frozen, tmp_path / "tiny.onnx", record_on=broken_batches())
    assert result.path.is_file() and result.recording is None


def _blas_threads() -> list:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_a_worker_thread_budget_reaches_blas_and_the_runtimes(recorded_onnx):
    from facecvt.core.threads import set_thread_budget, thread_budget

    before = _blas_threads()
    set_thread_budget(1)
    try:
        assert thread_budget() == 1 and set(_blas_threads()) == {1}
        with load_runner("onnxruntime", recorded_onnx.path) as runner:
            assert runner._session.get_session_options().intra_op_num_threads == 1
    finally:
        set_thread_budget(None)
    assert _blas_threads() == before


def test_a_worker_takes_the_cores_the_busy_workers_leave_it():
    """The share is asked when a runtime opens: alone, a worker takes every core."""
    import multiprocessing

    from facecvt.core.threads import set_thread_budget, thread_budget
    from facecvt.workflows.export_pool import _Share

    busy = multiprocessing.get_context("forkserver").Value("i", 2)
    set_thread_budget(_Share(busy, cores=4))
    try:
        assert thread_budget() == 2 and set(_blas_threads()) == {2}
        busy.value = 1
        assert thread_budget() == 4
        busy.value = 0  # between jobs: counts as alone
        assert thread_budget() == 4
        busy.value = 8
        assert thread_budget() == 1 and set(_blas_threads()) == {1}
    finally:
        set_thread_budget(None)
