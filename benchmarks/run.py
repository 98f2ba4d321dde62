"""`make bench`: every comparison the issues ask for, measured side by side in one process.

Prints one table per comparison with ratios, and writes benchmarks/results.json.
Stages run in this one process; the peak memory of a stage is the rise of the process's
peak RSS (VmHWM) while it runs, the peak being reset before each stage. The `facecvt export`
command runs as users run it, in a child process whose whole tree (the CLI and its converter
workers) is sampled for memory by a background thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=140, record=True)  # the printed tables are saved beside the JSON
RESULTS: dict = {}


def rss_mb(field: str = "VmHWM") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def stage(name: str, table: list):
    """Time a stage and measure its peak memory above the memory in use when it starts."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    before = rss_mb("VmRSS")
    started = time.perf_counter()
    yield
    table.append({"stage": name, "seconds": time.perf_counter() - started,
                  "peak_mb_above_start": rss_mb("VmHWM") - before, "rss_mb_after": rss_mb("VmRSS")})


def _tree(root: int) -> list[int]:
    """`root` and all its descendants (read from /proc/PID/task/TID/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:  # exited meanwhile
            continue
    return found


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB; PSS splits pages shared with other processes between them."""
    rss = pss = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, pss


def run_tree(command: list, interval: float = 0.2) -> dict:
    """Run `command`; wall seconds and the peak over time of the summed RSS and PSS of its process tree.

    Summed RSS counts a page shared by several processes (the workers forked from one forkserver
    share TensorFlow's) once per process; summed PSS counts it once in all.
    """
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"rss": 0.0, "pss": 0.0, "processes": 0}

    def sample():
        while child.poll() is None:
            pids = _tree(child.pid)
            rss, pss = (sum(values) for values in zip(*(_memory_mb(p) for p in pids)))
            peak.update(rss=max(peak["rss"], rss), pss=max(peak["pss"], pss),
                        processes=max(peak["processes"], len(pids)))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    return {"seconds": seconds, "exit_status": child.returncode, "peak_rss_mb_summed": peak["rss"],
            "peak_pss_mb_summed": peak["pss"], "peak_processes": peak["processes"], "output": output}


def export_tree(raw: Path, faces: Path | None, out: Path, targets: str = "opencv,onnx,tflite,coreml") -> dict:
    """`facecvt export` of `raw` as a user runs it, verified on the faces and pairs when there are faces."""
    command = [sys.executable, "-m", "facecvt", "export", str(raw), "-o", str(out), "--targets", targets]
    if faces:
        command += ["--images", str(faces), "--pairs", str(faces / "pairs.csv")]
    result = run_tree(command)
    log = out.with_name(f"{out.name}-export.log")  # its progress: which worker wrote what, when, at what peak
    log.write_text(result["output"])
    if result["exit_status"] != 0:
        console.print(result["output"])
        raise SystemExit(f"facecvt export failed with exit status {result['exit_status']}")
    console.print(f"facecvt export's output: {log}")
    return {"command": f"facecvt export ({targets}{', 61 faces + pairs' if faces else ''})",
            **{k: v for k, v in result.items() if k != "output"}}


def machine() -> dict:
    """What the figures were measured on: CPU and its int8 features, memory, versions, date, load."""
    import datetime
    import subprocess
    from importlib import metadata

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    memory = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    versions = {}
    for name in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "opencv-python-headless",
                 "coremltools", "keras", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "memory_mb": memory,
            "int8_features": sorted(flags & {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}),
            "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit or None, "load_average_at_start": list(os.getloadavg())}


def show(title: str, rows: list, columns: list) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns])
    console.print(table)


def latency(backend, path, batch, repeats, **options) -> dict:
    from facecvt.workflows.bench import time_runner
    from facecvt.validate.runners import load_runner

    with load_runner(backend, path, **options) as runner:
        return time_runner(runner, batch, repeats=repeats, warmup=3)


def _embed_all(backend, path, paths, size_hw=(160, 160)) -> np.ndarray:
    from facecvt.core.images import iter_image_batches
    from facecvt.validate.runners import load_runner

    with load_runner(backend, path) as runner:
        return np.concatenate([runner.embed(b) for _, b in iter_image_batches(paths, size_hw, "fixed", 8)])


def _interleaved_latency(backend, paths: dict, batch: int, repeats: int) -> dict:
    """Median ms per run of each model, runs of the models interleaved (noise hits them alike)."""
    stats = _interleaved_runs({name: (backend, path, {}) for name, path in paths.items()}, batch, repeats)
    return {name: row["median_ms"] for name, row in stats.items()}


def _interleaved_runs(models: dict, batch: int, repeats: int) -> dict:
    """name -> {median_ms, p90_ms, per_image_ms, images_per_s} of each (backend, path, runner options),
    one run of each model in turn, `repeats` times (noise on a shared machine hits them alike)."""
    from facecvt.validate.runners import load_runner

    x = np.random.default_rng(0).uniform(-1, 1, (batch, 160, 160, 3)).astype(np.float32)
    runners = {name: load_runner(backend, path, **options).__enter__()
               for name, (backend, path, options) in models.items()}
    times = {name: [] for name in models}
    for runner in runners.values():
        for _ in range(3):
            runner.embed(x)
    for _ in range(repeats):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner.embed(x)
            times[name].append(1000 * (time.perf_counter() - started))
    for runner in runners.values():
        runner.__exit__(None, None, None)
    stats = {}
    for name, t in times.items():
        median = float(np.median(t))
        stats[name] = {"median_ms": median, "p90_ms": float(np.percentile(t, 90)),
                       "per_image_ms": median / batch, "images_per_s": 1000 * batch / median}
    return stats


def int8_section(frozen, faces: Path, work: Path, repeats: int) -> dict:
    """ONNX fp32 vs int8 (each --cpu profile) and TFLite fp32 vs int8, side by side.

    Calibrated on the even-numbered faces (sorted by name), scored on the odd ones: min cosine
    against the fp32 export of the same runtime; pairs accuracy and decision agreement on
    faces/pairs.csv (all faces, so there calibration images are among those scored).
    """
    from facecvt.convert.calibration import CalibrationImages
    from facecvt.core.images import list_images
    from facecvt.validate import metrics
    from facecvt.validate.pairs import read_pairs
    from facecvt.workflows.export_artifact import export

    paths = list_images(faces)
    calibration = CalibrationImages(faces, files=tuple(paths[0::2])).at_size((160, 160))
    held = paths[1::2]
    pairs = read_pairs(faces / "pairs.csv")
    left, right = pairs.index_pairs(paths, resolve=True)
    section = {"calibration_images": len(paths[0::2]), "held_out_images": len(held)}
    from facecvt.convert.onnx_int8 import CPU_PROFILES, CpuProfile

    # onnxruntime's own defaults (s8 activations and weights), for comparison with facecvt's choices
    CPU_PROFILES.setdefault("ort-default", CpuProfile("int8", "int8", reduce_range=False))
    cpus = ("avx2", "vnni", "ort-default")
    runtimes = {"onnxruntime": ("onnx", [("fp32", {}), *[(f"int8 --cpu {cpu}", {"cpu": cpu}) for cpu in cpus]]),
                "litert": ("tflite", [("fp32", {}), ("int8", {})])}
    for backend, (target, variants) in runtimes.items():
        models, rows = {}, []
        for name, options in variants:
            precision = name.split()[0]
            extra = {"calibration": calibration, **options} if precision == "int8" else {}
            started = time.perf_counter()
            result = export(target, frozen, work / f"int8bench_{target}_{name.replace(' ', '_')}"
                                                    f"{'.onnx' if target == 'onnx' else '.tflite'}",
                            force=True, precision=precision, **extra)
            models[name] = result.path
            rows.append({"model": name, "convert_s": time.perf_counter() - started,
                         "worst_layers": result.details.get("quantization", {}).get("worst_layers", [])[:5]})
        fp32_held = _embed_all(backend, models["fp32"], held)
        fp32_all = _embed_all(backend, models["fp32"], paths)
        fp32_dist = metrics.pair_distances(fp32_all, left, right)
        fp32_pairs = metrics.verification_metrics(fp32_dist, pairs.labels)
        for row in rows:
            emb = _embed_all(backend, models[row["model"]], held)
            row["min_cosine_held_out"] = float(np.min(np.sum(emb * fp32_held, 1) / (
                np.linalg.norm(emb, axis=1) * np.linalg.norm(fp32_held, axis=1))))
            dist = metrics.pair_distances(_embed_all(backend, models[row["model"]], paths), left, right)
            row["pairs_accuracy"] = metrics.verification_metrics(dist, pairs.labels)["accuracy"]
            row["decision_agreement"] = metrics.decision_agreement(fp32_dist, dist, fp32_pairs["threshold"])
        for batch in (1, 8):
            medians = _interleaved_latency(backend, models, batch, repeats)
            for row in rows:
                row[f"b{batch}_ms"] = medians[row["model"]]
                row[f"b{batch}_speedup"] = medians["fp32"] / medians[row["model"]]
        section[backend] = rows
        show(f"{backend}: int8 vs fp32 (calibrated on {len(paths[0::2])} faces, cosine on the other {len(held)}; "
             "speedup = fp32 ms ÷ this one's, runs interleaved)", rows,
             ["model", "min_cosine_held_out", "pairs_accuracy", "decision_agreement", "b1_ms", "b1_speedup",
              "b8_ms", "b8_speedup", "convert_s"])
        for row in rows:
            if row["worst_layers"]:
                console.print(f"{row['model']}: worst layers " + "; ".join(
                    f"{layer['layer']} ({layer['op']}, {layer['sqnr_db']:.1f} dB)" for layer in row["worst_layers"]))
    section["litert_ops"] = _tflite_op_account(models["fp32"], models["int8"], repeats)
    return section


def _tflite_op_account(fp32_path: Path, int8_path: Path, repeats: int) -> dict:
    """Per op type of the fp32 and int8 .tflite: how many, how many XNNPACK runs, and the latency with
    and without XNNPACK (builtin kernels only), runs interleaved."""
    from facecvt.validate.litert_ops import delegation, latency_ms

    account = {"fp32": delegation(fp32_path), "int8": delegation(int8_path)}
    rows = []
    for op in sorted(set(account["fp32"]["op_types"]) | set(account["int8"]["op_types"])):
        row = {"op": op}
        for precision in ("fp32", "int8"):
            ops = [r for r in account[precision]["ops"] if r["op"] == op]
            row[f"{precision}_ops"] = len(ops)
            row[f"{precision}_on_xnnpack"] = sum(r["delegated"] for r in ops)
            row[f"{precision}_input"] = ",".join(sorted({r["input_type"] for r in ops}))
        rows.append(row)
    show("LiteRT ops: count and how many XNNPACK runs (the rest run on LiteRT's builtin kernels); "
         f"XNNPACK partitions fp32 {account['fp32']['partitions']}, int8 {account['int8']['partitions']}", rows,
         ["op", "fp32_ops", "fp32_on_xnnpack", "int8_ops", "int8_on_xnnpack", "int8_input"])
    timing = {f"{precision}_{mode}_ms": [] for precision in ("fp32", "int8") for mode in ("xnnpack", "builtin")}
    for _ in range(3):  # interleaved rounds, medians of medians
        for precision, path in (("fp32", fp32_path), ("int8", int8_path)):
            timing[f"{precision}_xnnpack_ms"].append(latency_ms(path, 1, max(3, repeats // 3)))
            timing[f"{precision}_builtin_ms"].append(latency_ms(path, 1, 2, delegates=False))
    account["batch1_ms"] = {k: float(np.median(v)) for k, v in timing.items()}
    show("LiteRT batch 1, with XNNPACK (default) and builtin kernels only",
         [{"kernels": mode, **{p: account["batch1_ms"][f"{p}_{mode}_ms"] for p in ("fp32", "int8")},
           "int8_speedup": account["batch1_ms"][f"fp32_{mode}_ms"] / account["batch1_ms"][f"int8_{mode}_ms"]}
          for mode in ("xnnpack", "builtin")], ["kernels", "fp32", "int8", "int8_speedup"])
    for precision in ("fp32", "int8"):
        account[precision].pop("ops")  # one row per op: the per-type rows below say it shorter
    account["ops_per_type"] = rows
    return account


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--only", choices=["all", "export", "int8", "serve"], default="all",
                        help="export: only time `facecvt export` of the released FaceNet (wall and memory); "
                             "int8: only the int8 section; serve: only the face service (ANN index, /vectorize "
                             "under load)")
    parser.add_argument("--ann-cache", type=Path, default=None,
                        help="keep the ANN indices built for the face-index comparison in this folder and reuse "
                             "them on the next run (a 100 000-vector build takes minutes)")
    parser.add_argument("--ann-sizes", default="10000,100000", help="index sizes of the ANN comparison")
    args = parser.parse_args()
    if args.only == "serve":
        serve_only(args)
        return

    from facecvt.workflows.export_artifact import export
    from facecvt.convert.calibration import CalibrationImages
    from facecvt.graph_ops.pipeline import freeze
    from facecvt.core.model import load_model
    from facecvt.samples.facenet import SampleSpec, write_sample
    from facecvt.samples.released import released_graph_path

    work = Path(tempfile.mkdtemp(prefix="facecvt-bench-"))
    final = released_graph_path()
    faces = args.faces if args.faces.is_dir() else None
    RESULTS["machine"] = machine()
    stages: list = []

    # -- conversion stages on the released model -------------------------------------------
    raw = work / "facenet_raw.pb"
    with stage("sample (released weights)", stages):
        write_sample(SampleSpec(weights="released"), raw, "pb")

    # -- `facecvt export`, as users run it: wall time and the memory of the whole process tree --
    export_rows = [export_tree(raw, faces, work / "bundle")]
    # the larger network of the memory target (≤ 8 GB): facenet's Inception-ResNet-v2, random weights
    raw_v2 = work / "inception_resnet_v2_raw.pb"
    write_sample(SampleSpec(weights="random", architecture="inception-resnet-v2"), raw_v2, "pb")
    export_rows.append({**export_tree(raw_v2, faces, work / "bundle_v2"), "model": "Inception-ResNet-v2 (random)"})
    export_rows[0]["model"] = "released FaceNet (Inception-ResNet-v1)"
    RESULTS["export"] = export_rows
    show("facecvt export, whole process tree (targets: FaceNet ≤ 30 s and ≤ 4096 MB; Inception-ResNet-v2 ≤ 8192 MB)",
         export_rows, ["model", "command", "seconds", "peak_rss_mb_summed", "peak_pss_mb_summed", "peak_processes"])
    if args.only == "export":  # keep the other results of an earlier full run
        earlier = json.loads(args.out.read_text()) if args.out.is_file() else {}
        args.out.write_text(json.dumps({**earlier, **RESULTS}, indent=2, default=str))
        return
    with stage("load", stages):
        model = load_model(raw)
    with stage("freeze", stages):
        frozen = freeze(model).frozen
    if args.only == "int8":
        RESULTS["int8"] = int8_section(frozen, args.faces, work, args.repeats)
        args.out.write_text(json.dumps(RESULTS, indent=2, default=str))
        console.print(f"results written to {args.out}")
        return
    artifacts = {}
    plan = [("opencv", "fp32", {}), ("opencv-onnx", "fp32", {}), ("onnx", "fp32", {}),
            ("tflite", "fp32", {"precision": "fp32"}),
            ("tflite", "fp16", {"precision": "fp16"}), ("coreml", "fp32", {"precision": "fp32"}),
            ("coreml", "fp16", {"precision": "fp16"})]
    if faces:
        plan.append(("tflite", "int8", {"precision": "int8",
                                         "calibration": CalibrationImages(faces).at_size((160, 160))}))
    suffix = {"opencv": ".pb", "opencv-onnx": "_opencv.onnx", "onnx": ".onnx", "tflite": ".tflite",
              "coreml": ".mlpackage"}
    for target, precision, options in plan:
        with stage(f"to-{target} {precision}", stages):
            artifacts[(target, precision)] = export(target, frozen, work / f"facenet_{precision}{suffix[target]}",
                                                    **options)
    import tf2onnx  # the baseline: tf2onnx straight from graph_final.pb

    from facecvt.core.model import load_model as load
    from facecvt.core.tf_env import graph_def_class

    final_def = graph_def_class()()
    final_def.ParseFromString(final.read_bytes())
    with stage("tf2onnx direct on graph_final.pb (baseline)", stages):
        direct, _ = tf2onnx.convert.from_graph_def(final_def, input_names=["input:0"], output_names=["embeddings:0"],
                                                   opset=artifacts[("onnx", "fp32")].details["opset"])
        (work / "graph_final_direct.onnx").write_bytes(direct.SerializeToString())
    RESULTS["stages"] = stages
    show("conversion stages (released FaceNet)", stages, ["stage", "seconds", "peak_mb_above_start", "rss_mb_after"])

    r = args.repeats
    # -- OpenCV: export vs the classic recipe's graph_final.pb ------------------------------
    cv_export = artifacts[("opencv", "fp32")]
    cv_models = {  # the same network as ONNX, read by readNetFromONNX on OpenCV 5's new engine (issue 14)
        "graph_final.pb (classic recipe)": ("opencv", final, {}),
        "facecvt export": ("opencv", cv_export.path, {"pbtxt": cv_export.extra_paths[0]}),
        "facecvt opencv-onnx (new engine)": ("opencv", artifacts[("opencv-onnx", "fp32")].path, {"engine": "new"}),
    }
    opencv = []
    for batch in (1, 8):  # every model of a batch size measured in one interleaved run
        models = {name: m for name, m in cv_models.items() if batch == 1 or "classic recipe" not in name}
        stats = _interleaved_runs(models, batch, r)
        opencv += [{"model": name, "batch": batch, **row} for name, row in stats.items()]
        pb_ms = stats["facecvt export"]["per_image_ms"]
        opencv[-1]["onnx_ms_over_pb_ms"] = stats["facecvt opencv-onnx (new engine)"]["per_image_ms"] / pb_ms
    base = opencv[0]["per_image_ms"]
    for row in opencv:
        row["export_ms_over_classic_ms"] = row["per_image_ms"] / base
    RESULTS["opencv"] = opencv
    show("OpenCV-DNN per-image latency, runs interleaved per batch size (ratio = ms/image ÷ graph_final.pb's at "
         "batch 1, ≤ 1.05 wanted; onnx/pb = the ONNX export on the new engine ÷ the .pb export, ≤ 1 wanted)", opencv,
         ["model", "batch", "median_ms", "p90_ms", "per_image_ms", "images_per_s", "export_ms_over_classic_ms",
          "onnx_ms_over_pb_ms"])

    # -- ONNX Runtime: export vs tf2onnx's direct conversion of graph_final.pb ----------------
    ort = []
    for batch in (1, 8):
        direct_row = {"model": "tf2onnx(graph_final.pb)", "batch": batch} if batch == 1 else None
        if batch == 1:
            direct_row.update(latency("onnxruntime", work / "graph_final_direct.onnx", 1, r))
            ort.append(direct_row)
        ort.append({"model": "facecvt export", "batch": batch,
                    **latency("onnxruntime", artifacts[("onnx", "fp32")].path, batch, r)})
    for row in ort:
        row["ratio_to_direct"] = row["per_image_ms"] / ort[0]["per_image_ms"]
    RESULTS["onnxruntime"] = ort
    show("ONNX Runtime (ratio = ms/image ÷ tf2onnx direct at batch 1; ≤ 1.05 wanted)", ort,
         ["model", "batch", "median_ms", "p90_ms", "per_image_ms", "ratio_to_direct"])

    # -- LiteRT: fp32 vs fp16 vs int8 -------------------------------------------------------
    litert = []
    for precision in ("fp32", "fp16", "int8"):
        if ("tflite", precision) in artifacts:
            for batch in (1, 8):
                litert.append({"precision": precision, "batch": batch,
                               **latency("litert", artifacts[("tflite", precision)].path, batch, r)})
    for row in litert:
        fp32 = next(x for x in litert if x["precision"] == "fp32" and x["batch"] == row["batch"])
        row["speedup_vs_fp32"] = fp32["per_image_ms"] / row["per_image_ms"]
    RESULTS["litert"] = litert
    show("LiteRT (speedup = fp32 ms/image ÷ this one's)", litert,
         ["precision", "batch", "median_ms", "p90_ms", "per_image_ms", "speedup_vs_fp32"])

    # -- every backend vs the TensorFlow reference ------------------------------------------
    from facecvt.workflows.bench import bench

    backends = [("tensorflow", raw), ("onnxruntime", artifacts[("onnx", "fp32")].path),
                ("litert", artifacts[("tflite", "fp32")].path), ("opencv", cv_export.path)]
    report = bench(backends, (1, 8), repeats=r)
    RESULTS["backends"] = report["results"]
    show("backends vs TensorFlow (× TF = TF ms/image ÷ this one's)",
         [{**row, "path": Path(row["path"]).name} for row in report["results"]],
         ["backend", "path", "batch", "median_ms", "p90_ms", "per_image_ms", "images_per_s", "speed_vs_tensorflow"])

    # -- verify: 61 faces x 4 backends, and memory for 2,000 random inputs ---------------------
    from facecvt.validate.verify import InputSpec, verify

    four = [("opencv", cv_export.path), ("onnxruntime", artifacts[("onnx", "fp32")].path),
            ("litert", artifacts[("tflite", "fp32")].path), ("coreml", artifacts[("coreml", "fp32")].path)]
    verify_rows: list = []
    if faces:
        with stage("verify 61 faces x 4 backends", verify_rows):
            result = verify(("tensorflow", raw), four, InputSpec(images=faces), pairs=faces / "pairs.csv")
        verify_rows[-1]["pass"] = result["pass"]
    if faces:  # the OpenCV ONNX export on the engine users run, and on the classic one that misreads it
        cv_onnx = artifacts[("opencv-onnx", "fp32")].path
        for engine, batch in (("new", 1), ("new", 8), ("classic", 8)):
            result = verify(("tensorflow", raw), [("opencv", cv_onnx, "fp32", {"engine": engine})],
                            InputSpec(images=faces, batch_size=batch))
            verify_rows.append({"stage": f"verify opencv-onnx, {engine} engine, 61 faces, batch {batch}",
                                "pass": result["pass"], "max_abs": result["candidates"][0]["max_abs"]})
    for count in (200, 2000):
        with stage(f"verify {count} random inputs (onnxruntime)", verify_rows):
            verify(("tensorflow", raw), four[1:2], InputSpec(random=count))
    RESULTS["verify"] = verify_rows
    if faces:
        RESULTS["int8"] = int8_section(frozen, faces, work, r)
    show("verify wall time and peak memory", verify_rows, ["stage", "seconds", "peak_mb_above_start", "pass", "max_abs"])

    # -- localize: one candidate, as `verify --localize` does it (reference opened and frozen too) --
    from facecvt.validate.artifacts import default_runner_options
    from facecvt.validate.localize import localize
    from facecvt.validate.runners import load_runner
    from facecvt.validate.runners.tensorflow import TensorFlowRunner
    from facecvt.core.images import random_batches

    if faces:
        from facecvt.core.images import iter_image_batches, list_images

        _, sample = next(iter(iter_image_batches(list_images(faces)[:4], (160, 160), "fixed", 4)))
    else:
        _, sample = next(iter(random_batches(4, (160, 160, 3), 0, 4)))
    localized = [(backend, path, "fp32") for backend, path in four]
    localized += [("litert", artifacts[("tflite", "fp16")].path, "fp16"),
                  ("coreml", artifacts[("coreml", "fp16")].path, "fp16")]
    if ("tflite", "int8") in artifacts:
        localized.append(("litert", artifacts[("tflite", "int8")].path, "int8"))
    localize_rows: list = []
    for backend, path, precision in localized:
        with stage(f"localize {backend} {precision} (4 inputs)", localize_rows):
            with TensorFlowRunner(raw) as reference, \
                    load_runner(backend, path, **default_runner_options(backend, path)) as candidate:
                block = localize(reference, candidate, sample, precision)
        worst = max((layer["rel"] for layer in block["layers"]), default=float("nan"))
        localize_rows[-1].update(matched=block["matched"], total=block["total"], max_rel_clean=worst,
                                 first_divergence=(block["first_divergence"] or {}).get("layer"))
    RESULTS["localize"] = localize_rows
    show("localize one candidate (reference freeze + both runtimes + matching); max rel = the largest "
         "max|Δ|/max|ref| over the matched layers of the clean export", localize_rows,
         ["stage", "seconds", "peak_mb_above_start", "matched", "total", "max_rel_clean", "first_divergence"])

    if faces:
        RESULTS["serve"] = serve_benchmarks(work, faces, [("onnxruntime", artifacts[("onnx", "fp32")].path),
                                                          ("litert", artifacts[("tflite", "fp32")].path)],
                                            ann_cache=args.ann_cache,
                                            sizes=tuple(int(x) for x in args.ann_sizes.split(",")))
    RESULTS["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(RESULTS, indent=2, default=str))
    console.print(f"measured on {RESULTS['machine']}")
    console.print(f"results written to {args.out} and {args.out.with_suffix('.txt')}")
    args.out.with_suffix(".txt").write_text(console.export_text())


def serve_only(args) -> None:
    """`benchmarks/run.py --only serve`: export the released FaceNet to ONNX and measure the face service."""
    from facecvt.graph_ops.pipeline import freeze
    from facecvt.core.model import load_model
    from facecvt.samples.facenet import SampleSpec, write_sample
    from facecvt.workflows.export_artifact import export

    work = Path(tempfile.mkdtemp(prefix="facecvt-bench-serve-"))
    raw = work / "facenet_raw.pb"
    write_sample(SampleSpec(weights="released"), raw, "pb")
    onnx = export("onnx", freeze(load_model(raw)).frozen, work / "facenet.onnx").path
    RESULTS["serve"] = serve_benchmarks(work, args.faces, [("onnxruntime", onnx)], ann_cache=args.ann_cache,
                                        sizes=tuple(int(x) for x in args.ann_sizes.split(",")))
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.write_text(json.dumps({**previous, **RESULTS}, indent=2, default=str))
    console.print(f"results written to {args.out}")


# -- the face service (issue 15): ANN libraries for the index, and /vectorize under load -------------

def random_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def face_like_vectors(people: int, per_person: int, dim: int = 512, seed: int = 0):
    """(stored, queries): `per_person` stored vectors of each of `people` people and one more of each
    as queries, shaped like FaceNet's embeddings rather than like random vectors: the people's centres
    in an anisotropic space (variance of the i-th principal direction ~ i^-0.8, which puts different
    people 2.0 +- 0.22 apart in squared L2, as the released weights put the different-person pairs
    of ../shared/faces at 2.0 +- 0.24), each face its person's centre plus noise that puts two faces
    of one person ~0.5 apart, unit length."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    scale = np.arange(1, dim + 1) ** -0.4

    def draw(n):
        x = (rng.standard_normal((n, dim)) * scale) @ basis
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    centres = draw(people)
    faces = [draw(people) * np.sqrt(1 / 3) + centres for _ in range(per_person + 1)]
    faces = [(f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32) for f in faces]
    return np.concatenate(faces[:-1]), faces[-1]


def exact_top1(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query's exact nearest neighbour (max inner product = min L2 on unit vectors)."""
    return np.concatenate([np.argmax(queries[i:i + 256] @ data.T, axis=1) for i in range(0, len(queries), 256)])


def _time_queries(search, queries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 labels, per-query wall seconds, per-query CPU seconds) of one query at a time, as a
    server answers them."""
    labels, seconds, cpu = np.empty(len(queries), np.int64), np.empty(len(queries)), np.empty(len(queries))
    for i, q in enumerate(queries):
        cpu0, started = time.thread_time(), time.perf_counter()
        labels[i] = search(q)
        seconds[i], cpu[i] = time.perf_counter() - started, time.thread_time() - cpu0
    return labels, seconds, cpu


def near_queries(data: np.ndarray, n: int, seed: int, squared_l2: float = 0.5) -> np.ndarray:
    """Queries like a face search's: each a stored vector moved to `squared_l2` from it (same-person
    pairs of the released FaceNet are ~0.46 apart, different people ~2.0), renormalised."""
    rng = np.random.default_rng(seed)
    base = data[rng.integers(0, len(data), n)]
    cos = 1 - squared_l2 / 2
    sigma = np.sqrt((1 / cos ** 2 - 1) / data.shape[1])
    q = base + rng.standard_normal(base.shape, dtype=np.float32) * sigma
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _ann_path(folder: Path, library: str, m: int, n: int, dataset: str = "random") -> Path:
    from facecvt.pipeline.sketch import SKETCH_DIMS

    prefix = "" if dataset == "random" else f"{dataset}-"
    return folder / f"{prefix}{library.replace(' ', '-')}{SKETCH_DIMS if library == 'usearch sketch' else ''}_M{m}_n{n}.idx"


def _ann_index(library: str, m: int, data: np.ndarray, construction: int, threads: int, folder: Path,
               dataset: str = "random"):
    """Build one index over `data` (labels 1..n, as the face table's ids), or load it from `folder`
    when an earlier run saved it there with the same construction expansion; returns (index, build
    seconds, file MB). `library` is "hnswlib" (squared L2, float), "usearch DTYPE METRIC" (the
    vectors themselves) or "usearch sketch" (FaceIndex's graph: i8 squared L2 over the vectors'
    sketches, facecvt/pipeline/sketch.py, under the projection a new FaceIndex draws)."""
    import hnswlib
    from usearch.index import Index

    from facecvt.pipeline.sketch import new_projection, sketch

    n, dim = data.shape
    path = _ann_path(folder, library, m, n, dataset)
    record = path.with_suffix(".json")
    saved = json.loads(record.read_text()) if path.is_file() and record.is_file() else {}
    if saved.get("construction", 200) == construction and saved:
        build = saved["build_s"]
        if library == "hnswlib":
            index = hnswlib.Index(space="l2", dim=dim)
            index.load_index(str(path), max_elements=n)
        else:
            index = Index.restore(str(path))
    else:
        started = time.perf_counter()
        if library == "hnswlib":
            index = hnswlib.Index(space="l2", dim=dim)
            index.init_index(max_elements=n, M=m, ef_construction=construction, random_seed=100)
            index.set_num_threads(threads)
            index.add_items(data, np.arange(1, n + 1))
        elif library == "usearch sketch":
            from facecvt.pipeline.index import ANN_DTYPE, ANN_METRIC

            sketches = sketch(data, new_projection(dim))
            index = Index(ndim=sketches.shape[1], metric=ANN_METRIC, dtype=ANN_DTYPE, connectivity=m,
                          expansion_add=construction)
            index.add(np.arange(1, n + 1, dtype=np.uint64), sketches, threads=threads)
        else:
            _, dtype, metric = library.split()
            index = Index(ndim=dim, metric=metric, dtype=dtype, connectivity=m, expansion_add=construction)
            index.add(np.arange(1, n + 1, dtype=np.uint64), data, threads=threads)
        build = time.perf_counter() - started
        (index.save_index if library == "hnswlib" else index.save)(str(path))
        record.write_text(json.dumps({"build_s": build, "construction": construction,
                                      "load_average": os.getloadavg()}))
    if library == "hnswlib":
        index.set_num_threads(1)
    return index, build, path.stat().st_size / 2 ** 20


def _face_index_at(folder: Path, data: np.ndarray, graph_file: Path, graph=None):
    """A FaceIndex holding `data` (ids 1..n) whose saved graph is `graph_file`: the service's own
    search path (graph, then the SQLite lookup of names and exact distances) without rebuilding the
    graph. With `graph` (the same graph, already loaded) the FaceIndex searches that object once it
    has loaded its own copy: a second copy in memory is colder in the caches than the one the
    graph's candidates share (0.10-0.14 ms slower than the shared one, interleaved, at 10 000)."""
    import shutil
    import sqlite3

    from facecvt.pipeline.index import ANN_NAME, DB_NAME, FaceIndex
    from facecvt.pipeline.sketch import new_projection

    shutil.rmtree(folder, ignore_errors=True)
    FaceIndex(folder, data.shape[1], save_every=0).close()
    db = sqlite3.connect(folder / DB_NAME)
    with db:
        db.executemany("INSERT INTO faces (id, name, vector, box, created) VALUES (?, ?, ?, NULL, 0)",
                       ((i + 1, f"person {i + 1}", v.tobytes()) for i, v in enumerate(data)))
    db.close()
    shutil.copyfile(graph_file, folder / ANN_NAME)
    index = FaceIndex(folder, data.shape[1], save_every=0)
    assert index.start_report["graph"] == "loaded", index.start_report
    assert np.array_equal(index.projection, new_projection(data.shape[1]))  # the graph's own sketches
    if graph is not None:
        index.graph = graph
    return index


def bench_ann(sizes=(10_000, 100_000), dim: int = 512, n_queries: int = 1000, configs=None, efs=None,
              construction: int = 200, threads: int = 2, cache: Path | None = None, seed: int = 3,
              datasets=("random", "face-like")) -> list:
    """ANN indices for the face index on 512-D unit vectors, measured side by side.

    Each configuration (library, M, its efs) of `configs` (default ANN_CONFIGS; `efs` replaces every
    configuration's) is built once per size and dataset with `threads` threads and
    ef_construction/expansion_add `construction` (FaceIndex's graph: its own ANN_EXPANSION_ADD) (or loaded from `cache`, where the builds are kept
    for the next run, named by dataset, library, M and n; they take minutes at 100 000), then every
    (configuration, ef) candidate answers the same queries one at a time on one thread, interleaved:
    query r of every candidate runs before query r + 1 of any (the candidates in a new random order
    each round), each candidate in its own random order of the queries, so a change of the machine's
    load touches every candidate alike.
    Recall@1 against exact search; wall-clock p50/p99 and the p50 of the thread's CPU time (less
    sensitive than wall time to other jobs, which preempt queries longer than a time slice); `x`
    is the p50 relative to the chosen configuration's (FaceIndex's graph: usearch over the vectors'
    sketches at ANN_CONNECTIVITY and `search_ef(n)`, its ANN_CANDIDATES re-ranked by the exact distance).
    Datasets: `random` unit vectors, queried by `near` queries (a stored vector moved to a
    same-person distance, what a face search sends; `seed` picks the set) and `random` ones (no
    stored vector near: every answer is "unknown"); `face-like` vectors (face_like_vectors: n/2
    people, two faces each, a query another face of a stored person), on FaceIndex's graph and the
    previous one only. The last candidate is FaceIndex itself (graph, then the SQLite lookup of the
    names and of the vectors for the exact re-ranking) at its own settings, when its configuration is
    among `configs`."""
    from facecvt.pipeline.index import ANN_CONNECTIVITY

    configs = configs or ANN_CONFIGS
    chosen = ("usearch sketch", ANN_CONNECTIVITY)
    folder = Path(cache or tempfile.mkdtemp(prefix="facecvt-ann-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        for dataset in datasets:
            if dataset == "random":
                data, dataset_configs = random_unit_vectors(n, dim, seed=1), configs
                query_sets = {"near": near_queries(data, n_queries, seed=seed),
                              "random": random_unit_vectors(n_queries, dim, 2)}
            else:
                data, faces = face_like_vectors(n // 2, 2, dim, seed=1)
                query_sets = {"near": faces[np.random.default_rng(seed).choice(len(faces), n_queries, replace=False)]}
                dataset_configs = [c for c in configs if c[:2] in (chosen, PREVIOUS_ANN)]
            rows += _bench_ann_on(dataset, data, query_sets, dataset_configs, efs, chosen, construction, threads,
                                  folder)
    if cache is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    rows.append({"index": "load average (1, 5, 15 min) at the end", "n": "", "queries": "",
                 "ef": " ".join(f"{x:.1f}" for x in os.getloadavg())})
    return rows


def _bench_ann_on(dataset: str, data: np.ndarray, query_sets: dict, configs, efs, chosen, construction: int,
                  threads: int, folder: Path) -> list:
    """bench_ann's rows for one dataset and size: every candidate of `configs` (and FaceIndex when
    `chosen` is among them), interleaved on `query_sets`."""
    from facecvt.pipeline.index import ANN_CANDIDATES, ANN_EXPANSION_ADD, search_ef
    from facecvt.pipeline.sketch import SKETCH_DIMS, new_projection, sketch

    rows = []
    n, dim = data.shape
    projection = new_projection(dim)
    truths = {kind: exact_top1(data, q) + 1 for kind, q in query_sets.items()}  # labels are 1..n
    for kind, queries in query_sets.items():
        labels, seconds, cpu = _time_queries(lambda q: int(np.argmax(data @ q)) + 1, queries[:200])
        rows.append({"index": "exact (NumPy)", "data": dataset, "n": n, "queries": kind, "ef": "", "build_s": 0.0,
                     "MB": data.nbytes / 2 ** 20, "recall_at_1": float(np.mean(labels == truths[kind][:200])),
                     "p50_ms": np.percentile(seconds, 50) * 1e3, "p99_ms": np.percentile(seconds, 99) * 1e3,
                     "cpu_p50_ms": np.percentile(cpu, 50) * 1e3})
    chosen_ef = search_ef(n)
    candidates, built = {}, {}
    for library, m, config_efs in configs:
        index, build, mb = _ann_index(library, m, data, ANN_EXPANSION_ADD if library == "usearch sketch" else construction,
                                      threads, folder, dataset)
        built[(library, m)] = (index, build, mb)
        config_efs = sorted(set(efs or config_efs) | ({chosen_ef} if (library, m) == chosen else set()))
        for ef in config_efs:
            if library == "hnswlib":
                def search(q, index=index, ef=ef):
                    index.set_ef(ef)
                    return index.knn_query(q, k=1, num_threads=1)[0][0, 0]
            elif library == "usearch sketch":  # FaceIndex's search, the re-ranking in memory
                def search(q, index=index, ef=ef):
                    index.expansion_search = max(ef, ANN_CANDIDATES)
                    keys = index.search(sketch(q[None], projection)[0], ANN_CANDIDATES, threads=1).keys
                    return keys[np.argmax(data[keys.astype(np.int64) - 1] @ q)]  # unit vectors: max dot = min L2
            else:
                def search(q, index=index, ef=ef):
                    index.expansion_search = ef
                    return index.search(q, 1, threads=1).keys[0]
            label = (f"usearch {SKETCH_DIMS}-D sketch, {ANN_CANDIDATES} re-ranked" if library == "usearch sketch"
                     else library)
            name = f"{label} M={m}" + (" (chosen)" if ((library, m), ef) == (chosen, chosen_ef) else "")
            candidates[(name, ef)] = (search, build, mb)
    face_index = None
    if chosen in built:
        face_index = _face_index_at(folder / f"faceindex_{dataset}_n{n}", data,
                                    _ann_path(folder, *chosen, n, dataset), built[chosen][0])
        candidates[("FaceIndex (graph + SQLite names, exact re-ranking)", chosen_ef)] = (
            lambda q: face_index.search(q, 1)[0][0].id, *built[chosen][1:])
    measured = _interleaved(candidates, query_sets)
    for (name, ef), (search, build, mb) in candidates.items():
        for kind in query_sets:
            labels, seconds, cpu = measured[(name, ef)][kind]
            rows.append({"index": name, "data": dataset, "n": n, "queries": kind, "ef": ef, "build_s": build, "MB": mb,
                         "recall_at_1": float(np.mean(labels == truths[kind])),
                         "p50_ms": np.percentile(seconds, 50) * 1e3, "p99_ms": np.percentile(seconds, 99) * 1e3,
                         "cpu_p50_ms": np.percentile(cpu, 50) * 1e3})
    for kind in query_sets:
        base = [r for r in rows if r["queries"] == kind and r["index"].endswith("(chosen)")]
        for r in rows:
            if base and r["queries"] == kind:
                r["x"] = r["p50_ms"] / base[0]["p50_ms"]
    if face_index is not None:
        face_index.close()
    del built, candidates
    return rows


def _interleaved(candidates: dict, query_sets: dict) -> dict:
    """{candidate: {kind: (top-1 labels, wall seconds, CPU seconds)}}, the candidates interleaved:
    each round runs one query of every candidate, in a new random order of the candidates (with a
    fixed order, forward and backward, a candidate's time depended on its neighbours in the list: the
    FaceIndex row, last, measured ~0.5 ms above its graph at 10 000 and 100 000, against 0.1 ms with
    the order shuffled and 0.05 ms alone)."""
    rng = np.random.default_rng(7)
    names = list(candidates)
    out = {c: {} for c in names}
    for kind, queries in query_sets.items():
        n = len(queries)
        orders = {c: rng.permutation(n) for c in names}
        labels = {c: np.empty(n, np.int64) for c in names}
        wall = {c: np.empty(n) for c in names}
        cpu = {c: np.empty(n) for c in names}
        for c in names:  # warm-up
            for q in queries[:20]:
                candidates[c][0](q)
        for r in range(n):
            for j in rng.permutation(len(names)):  # a new order of the candidates every round: none
                c = names[j]  # always follows the same one, whose cache traffic it would inherit
                i = orders[c][r]
                search = candidates[c][0]
                cpu0, started = time.thread_time(), time.perf_counter()
                labels[c][i] = search(queries[i])
                wall[c][i], cpu[c][i] = time.perf_counter() - started, time.thread_time() - cpu0
        for c in names:
            out[c][kind] = (labels[c], wall[c], cpu[c])
    return out


# (library, M, efs) measured against each other; FaceIndex's graph ("usearch sketch", ANN_CONNECTIVITY)
# is also searched at search_ef(n) (added to its efs); usearch i8 M=64 on the 512-D vectors is the
# previous choice, hnswlib M=48 the one before
ANN_CONFIGS = (("usearch sketch", 48, (32, 48, 96)), ("usearch i8 l2sq", 64, (48,)), ("hnswlib", 48, (64,)))
PREVIOUS_ANN = ("usearch i8 l2sq", 64)
ANN_COLUMNS = ["index", "data", "n", "queries", "ef", "build_s", "MB", "recall_at_1", "p50_ms", "p99_ms", "cpu_p50_ms", "x"]


def bench_vectorize(embedders, image_bytes: bytes, clients=(1, 4, 16), requests_per_client: int = 8,
                    time_limit: float = 90.0, log_dir: Path | None = None) -> list:
    """`/vectorize` under load: for each (backend, artifact) a `facecvt serve` subprocess on 127.0.0.1,
    then 1, 4, 16 concurrent clients, each sending `requests_per_client` requests (stopping early at
    `time_limit` seconds): latency p50/p99 and throughput. Bounded in count and time."""
    import socket
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    rows = []
    for backend, path in embedders:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        log = open((log_dir or Path(tempfile.gettempdir())) / f"serve-{backend}.log", "ab")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        server = subprocess.Popen([sys.executable, "-m", "facecvt", "serve", str(path), "--backend", backend,
                                   "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {backend} server did not start (see {log.name})")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            faces = len(httpx.post(url + "/vectorize", files={"file": ("bench.jpg", image_bytes)}, timeout=60).json())
            for n_clients in clients:
                stop_at = time.monotonic() + time_limit

                def client(_):
                    seconds = []
                    with httpx.Client(timeout=120) as http:
                        for _ in range(requests_per_client):
                            if time.monotonic() > stop_at:
                                break
                            started = time.perf_counter()
                            answer = http.post(url + "/vectorize", files={"file": ("bench.jpg", image_bytes)})
                            seconds.append(time.perf_counter() - started)
                            assert answer.status_code == 200, answer.text
                    return seconds

                started = time.perf_counter()
                with ThreadPoolExecutor(n_clients) as pool:
                    latencies = np.concatenate([np.asarray(s) for s in pool.map(client, range(n_clients))])
                wall = time.perf_counter() - started
                rows.append({"backend": backend, "clients": n_clients, "requests": len(latencies),
                             "faces_per_image": faces, "p50_ms": np.percentile(latencies, 50) * 1e3,
                             "p99_ms": np.percentile(latencies, 99) * 1e3, "requests_per_s": len(latencies) / wall})
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
    return rows


VECTORIZE_COLUMNS = ["backend", "clients", "requests", "faces_per_image", "p50_ms", "p99_ms", "requests_per_s"]


def serve_benchmarks(work: Path, faces: Path, embedders, sizes=(10_000, 100_000), ann_cache: Path | None = None) -> dict:
    """Issue 15's figures: the ANN libraries for the index, and /vectorize under 1, 4, 16 clients."""
    import io

    from PIL import Image

    results = {}
    rows = bench_ann(sizes=sizes, cache=ann_cache)
    results["ann"] = rows
    show(f"face index: ANN indices on random 512-D unit vectors, side by side (recall@1 vs exact; one query at "
         f"a time, 1 thread; x = p50 / the chosen one's; load average before {os.getloadavg()[0]:.1f})",
         rows, ANN_COLUMNS)
    rng = np.random.default_rng(1)
    canvas = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for name, (x, y) in {"img1.png": (20, 20), "img10.png": (400, 30), "img20.png": (60, 290),
                         "img30.png": (420, 300)}.items():
        canvas[y:y + 160, x:x + 160] = np.asarray(Image.open(faces / name).convert("RGB"))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=92)
    rows = bench_vectorize(embedders, buffer.getvalue(), log_dir=work)
    results["vectorize"] = rows
    show("/vectorize: 640x480 JPEG with four faces, N concurrent clients on 127.0.0.1", rows, VECTORIZE_COLUMNS)
    return results


if __name__ == "__main__":
    main()
