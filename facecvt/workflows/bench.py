"""`facecvt bench`: latency and throughput of artifacts, measured side by side in one process."""

from __future__ import annotations

import time

import numpy as np

from facecvt.core.errors import FacecvtError


def time_runner(runner, batch: int, *, warmup: int = 2, repeats: int = 10, max_seconds: float = 20.0,
                shape_hwc=(160, 160, 3)) -> dict:
    """Median and p90 latency of `runner.run` (every output) on a batch, warm-up runs excluded; a free
    height/width takes `shape_hwc`'s."""
    h, w, c = (d or s for d, s in zip(runner.input_shape[1:4], shape_hwc))
    x = np.random.default_rng(0).uniform(-1, 1, (batch, h, w, c)).astype(np.float32)
    for _ in range(warmup):
        runner.run(x)
    times = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - started < max_seconds):
        t0 = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {"batch": batch, "size": [int(h), int(w)], "runs": len(times), "median_ms": median * 1e3,
            "p90_ms": float(np.percentile(times, 90)) * 1e3, "per_image_ms": median * 1e3 / batch,
            "images_per_s": batch / median}


def bench(artifacts, batches=(1, 8), threads: int | None = None, repeats: int = 10, progress=None,
          engine: str | None = None, sizes=None) -> dict:
    """Benchmark each (backend, path) at each batch size (and each (H, W) of `sizes`, for models whose
    input size is free); ratios against TensorFlow when it is there.

    `engine` is the OpenCV engine of OpenCV artifacts (None: the runner's default for the format).
    """
    from facecvt.validate.runners import load_runner

    rows = []
    for backend, path in artifacts:
        options = {"threads": threads} if threads else {}
        if engine and backend == "opencv":
            options["engine"] = engine
        try:
            runner = load_runner(backend, path, **options)
        except FacecvtError:
            raise
        except Exception as error:
            raise FacecvtError(f"{backend} cannot load {path}: {error}") from None
        with runner:
            for size in sizes or [None]:
                shape = (*size, 3) if size else (160, 160, 3)
                for batch in batches:
                    if progress:
                        progress(f"{backend} {path} batch {batch}" + (f" at {size[0]}x{size[1]}" if size else ""))
                    rows.append({"backend": backend, "path": str(path), "executed_by": runner.executed_by,
                                 **time_runner(runner, batch, repeats=repeats, shape_hwc=shape)})
    reference = {(r["batch"], tuple(r["size"])): r for r in rows if r["backend"] == "tensorflow"}
    for row in rows:
        ref = reference.get((row["batch"], tuple(row["size"])))
        row["speed_vs_tensorflow"] = ref["per_image_ms"] / row["per_image_ms"] if ref else None
    return {"threads": threads, "batches": list(batches), "results": rows,
            "note": "coreml rows ran facecvt's NumPy MIL reference executor, not Core ML" if any(
                r["executed_by"] != r["backend"] for r in rows) else None}


def bench_table(report: dict):
    from rich.table import Table

    from facecvt.validate.report import backend_label

    table = Table(title=f"facecvt bench (threads: {report['threads'] or 'runtime default'})", title_justify="left")
    for column in ("backend", "path", "batch", "size", "median ms", "p90 ms", "ms/image", "images/s", "× TF"):
        table.add_column(column, justify="right" if column not in ("backend", "path") else "left")
    for r in report["results"]:
        ratio = f"{r['speed_vs_tensorflow']:.2f}" if r["speed_vs_tensorflow"] else "-"
        table.add_row(backend_label(r), r["path"], str(r["batch"]), "x".join(map(str, r["size"])), f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
                      f"{r['per_image_ms']:.2f}", f"{r['images_per_s']:.1f}", ratio)
    return table
