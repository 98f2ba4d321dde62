"""ONNX int8: static QDQ quantisation of the fp32 export with onnxruntime, set for the CPU it will run on.

The u8-activation x s8-weight kernels onnxruntime uses on x86 are its fast ones; on x86 without VNNI
they multiply with VPMADDUBSW, whose int16 pair sums can saturate, so there the weights are
quantised to 7 bits (reduce_range), as onnxruntime's quantisation guide advises. VNNI accumulates
in int32 and needs no reduction; ARM kernels prefer symmetric s8 activations.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facecvt.convert.calibration import first_images
from facecvt.core.digests import QUANT_METADATA_KEY as METADATA_KEY
from facecvt.core.errors import FacecvtError

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class CpuProfile:
    """Quantisation types for one CPU family (onnxruntime's guidance, measured in benchmarks/run.py)."""

    activation_type: str   # "uint8" | "int8"
    weight_type: str
    reduce_range: bool     # 7-bit weights: avoids int16 saturation of VPMADDUBSW on x86 without VNNI
    symmetric_activations: bool = False


CPU_PROFILES = {
    "avx2": CpuProfile("uint8", "int8", reduce_range=True),
    "vnni": CpuProfile("uint8", "int8", reduce_range=False),
    "arm": CpuProfile("int8", "int8", reduce_range=False, symmetric_activations=True),
}


def detect_cpu(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """"arm", "vnni" (avx512_vnni or avx_vnni in /proc/cpuinfo's flags) or "avx2" for this machine."""
    machine = (machine or platform.machine()).lower()
    if machine.startswith(("arm", "aarch64")):
        return "arm"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "avx2"  # the safe x86 choice when the flags cannot be read
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return "vnni" if flags & {"avx512_vnni", "avx_vnni"} else "avx2"


def check_options(cpu: str | None, method: str) -> str:
    """The CPU profile name to use (`cpu` or this machine's), after checking both options."""
    cpu = detect_cpu() if cpu is None else cpu
    if cpu not in CPU_PROFILES:
        raise FacecvtError(f"--cpu {cpu!r} is unknown; choose from {', '.join(CPU_PROFILES)}")
    if method not in METHODS:
        raise FacecvtError(f"--calibration-method {method!r} is unknown; choose from {', '.join(METHODS)}")
    return cpu


def _reader(calibration, input_name: str, progress, one_image_at_a_time: bool = False):
    """An onnxruntime CalibrationDataReader feeding `calibration`'s batches, reporting images done.

    onnxruntime's histogram calibrators (entropy, percentile) stack the outputs of all feeds into
    one array, so they get one image at a time (batches of unequal size do not stack).
    """
    from onnxruntime.quantization import CalibrationDataReader

    total = calibration.sample_count() if hasattr(calibration, "sample_count") else _image_count(calibration)

    def feeds():
        for batch in calibration:
            yield from (batch[i:i + 1] for i in range(len(batch))) if one_image_at_a_time else [batch]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = feeds()
            self.done = 0

        def get_next(self):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.done += len(batch)
            if progress:
                progress(self.done, total)
            return {input_name: batch}

    return Reader()


def settings(cpu: str, method: str, calibration, keep_float=()) -> dict:
    """What the artifact records: CPU profile, types, calibration method and images.

    A digest of the calibration images when they are files (CalibrationImages); arrays given
    directly are only counted.
    """
    recorded = {"cpu": cpu, **asdict(CPU_PROFILES[cpu]), "per_channel": True, "format": "QDQ",
                "calibration_method": method}
    if hasattr(calibration, "digest"):
        digest = calibration.digest()
        recorded.update(calibration_images=digest["count"], calibration_sha256=digest["sha256"],
                        calibration_files=digest["files"], calibration_plan=calibration.describe())
    else:
        recorded["calibration_images"] = _image_count(calibration)
    return {**recorded, "keep_float": list(keep_float)}


def _image_count(calibration) -> int:
    return sum(len(batch) if np.ndim(batch) == 4 else 1 for batch in calibration)


def quantize(fp32_path: Path, out_path: Path, calibration, *, input_name: str, cpu: str | None = None,
             method: str = "minmax", keep_float=(), cache_dir: Path | None = None, progress=None) -> dict:
    """Quantise the fp32 ONNX model at `fp32_path` into `out_path`; returns the recorded settings.

    `keep_float` names nodes left in float. `cache_dir` keeps the preprocessed model and the
    calibrated ranges between calls (auto-keep-float requantises without recalibrating).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cpu = check_options(cpu, method)
    profile = CPU_PROFILES[cpu]
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with _work_dir(cache_dir) as work:
        prepared = prepare(fp32_path, work)
        cache = work / f"ranges_{method}_{profile.symmetric_activations}.json"
        reader = None if cache.is_file() else _reader(calibration, input_name, progress, method != "minmax")
        quantize_static(
            str(prepared), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=profile.reduce_range, activation_type=types[profile.activation_type],
            weight_type=types[profile.weight_type], calibrate_method=methods[method],
            nodes_to_exclude=list(keep_float), calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": profile.symmetric_activations})
        recorded = {**settings(cpu, method, calibration, keep_float), "shape_inference": shape_inference(work)}
    model = onnx.load(str(out_path))
    entry = next((p for p in model.metadata_props if p.key == METADATA_KEY), None) or model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(recorded)
    onnx.save_model(model, str(out_path))
    return recorded


def prepare(fp32_path: Path, work: Path) -> Path:
    """onnxruntime's quantisation preprocessing (shape inference, graph optimisation), done once per work dir.

    onnxruntime's symbolic shape inference does not know every op of the opsets tf2onnx writes: at
    opset 18 a ReduceMax takes its axes as an input, which it leaves shapeless, and then fails with a
    TypeError on the next op (MTCNN's spelled-out softmax). ONNX's own shape inference knows them, and
    the symbolic one only adds names for dimensions that stay unknown, so the preprocessing then runs
    without it; `shape_inference(work)` says which one ran.
    """
    from onnxruntime.quantization import quant_pre_process

    prepared = work / "prepared.onnx"
    if not prepared.is_file():
        try:
            quant_pre_process(str(fp32_path), str(prepared))
            used = "symbolic"
        except Exception as exc:  # noqa: BLE001 - any failure of the symbolic pass: the ONNX one runs instead
            used = f"onnx (onnxruntime's symbolic shape inference failed: {type(exc).__name__})"
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        (work / SHAPE_INFERENCE_NOTE).write_text(used)
    return prepared


SHAPE_INFERENCE_NOTE = "shape_inference.txt"


def shape_inference(work: Path) -> str | None:
    """Which shape inference `prepare` ran in `work` ("symbolic" or "onnx (...)"), None before it ran."""
    note = Path(work) / SHAPE_INFERENCE_NOTE
    return note.read_text() if note.is_file() else None


@contextlib.contextmanager
def _work_dir(cache_dir: Path | None):
    """`cache_dir` as is, or a temporary folder removed on exit."""
    if cache_dir is not None:
        yield Path(cache_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="facecvt-int8-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the int8 writer: quantise, account for the error, keep layers in float until accurate enough -----

WORST_LAYERS = 20      # layers (and tensors) kept in the details
ACCOUNT_IMAGES = 16    # calibration images the error account runs on (SQNR settles well before)
HELD_OUT_EVERY = 4     # --auto-keep-float scores on every 4th calibration image, calibrates on the rest
MAX_KEEP_FLOAT = 12    # --auto-keep-float gives up after this many layers


def check_request(calibration, cpu=None, calibration_method="minmax", keep_float=(), auto_keep_float=False,
                  target_cosine=0.995, probe=None, progress=None, float_head=True) -> None:
    """Fail before the (slow) conversion on options an int8 ONNX export cannot take."""
    if calibration is None:
        raise FacecvtError("int8 quantisation needs calibration images: pass --calibration DIR "
                           "(a folder of face crops like the ones the model will see)")
    check_options(cpu, calibration_method)
    if not hasattr(calibration, "digest") and _image_count(calibration) == 0:
        raise FacecvtError("the calibration set is empty; pass --calibration DIR with face images")
    if auto_keep_float:
        if not hasattr(calibration, "split"):
            raise FacecvtError("--auto-keep-float holds out part of the calibration folder: pass --calibration DIR")
        if probe is None:
            raise FacecvtError("--auto-keep-float needs the error account; run it through facecvt's export")
        if len(calibration) < 2 * HELD_OUT_EVERY:
            raise FacecvtError(f"--auto-keep-float holds out every {HELD_OUT_EVERY}th calibration image to score "
                               f"on: give at least {2 * HELD_OUT_EVERY} images")
        if not 0 < target_cosine <= 1:
            raise FacecvtError(f"--target-cosine {target_cosine} must be in (0, 1]")


def _transposed(calibration, nchw: bool):
    """The calibration batches in the model's layout (they are NHWC)."""

    class Batches:
        def __len__(self):
            return len(calibration)

        def __getattr__(self, name):  # digest(), paths(): the calibration set's own
            return getattr(calibration, name)

        def __iter__(self):
            for batch in calibration:
                batch = np.asarray(batch, dtype=np.float32)
                batch = batch[None] if batch.ndim == 3 else batch  # a single image
                yield np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) if nchw else batch

    return Batches()


def _is_nchw(model) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 4 and dims[1].dim_value == 3 and dims[3].dim_value != 3


def _print_progress(done: int, total: int, every: int = 16) -> None:
    from facecvt.core.console import err

    if done % every == 0 or done == total:
        err.print(f"calibrating: {done}/{total} images")


def write_int8(model, out_path: Path, calibration, input_name: str, cpu=None, calibration_method="minmax",
               keep_float=(), auto_keep_float=False, target_cosine=0.995, probe=None,
               progress=_print_progress, float_head=True) -> dict:
    """Quantise the fp32 ONNX `model` into `out_path`; returns the settings and the error account.

    `float_head` keeps every output's head (`head_nodes`: an embedding's final FC layer and L2
    normalisation, a detector's probability, box and landmark layers) in float: little work, much of
    the error (min cosine 0.990 -> 0.9999 on the classic TF1 graph).

    `probe` is validate/quant_report (injected by the export workflow: convert/ does not import
    validate/): with it the details get the worst layers by SQNR, and `auto_keep_float` keeps the
    worst layer in float, one more at a time, until the min cosine against fp32 on held-out
    calibration images reaches `target_cosine`, timing each step at batch 1.
    """
    import onnx

    nchw = _is_nchw(model)
    held = None
    if auto_keep_float:
        calibration, held = calibration.split(HELD_OUT_EVERY)
    with _work_dir(None) as work:
        fp32_path = work / "fp32.onnx"
        onnx.save_model(model, str(fp32_path))
        images = _transposed(calibration, nchw)

        def run(kept):
            return quantize(fp32_path, out_path, images, input_name=input_name, cpu=cpu, method=calibration_method,
                            keep_float=kept, cache_dir=work, progress=progress)

        prepared = prepare(fp32_path, work)
        if float_head:
            keep_float = [*keep_float, *(n for n in head_nodes(onnx.load(str(prepared))) if n not in keep_float)]
        recorded = run(list(keep_float))
        if probe is None:
            return recorded
        report = probe.layer_report(prepared, out_path, first_images(images, ACCOUNT_IMAGES))
        details = {**recorded, "worst_layers": report["layers"][:WORST_LAYERS],
                   "worst_tensors": report["tensors"][:WORST_LAYERS]}
        if progress:
            from facecvt.core.console import err

            err.print("int8 layers with the largest quantisation error:\n" + probe.worst_layers_text(report))
        if auto_keep_float:
            details["auto_keep_float"] = _keep_float_until(
                target_cosine, list(keep_float), report, run, probe, prepared, out_path,
                _transposed(held, nchw), [p.name for p in held.paths()])
            details["keep_float"] = details["auto_keep_float"]["keep_float"]
        return details


COMPUTE_OPS = frozenset({"Conv", "MatMul", "Gemm", "ConvTranspose"})


def head_nodes(model) -> list:
    """Names of the nodes of every output's head, in graph order: the last conv/matmul on the way to
    the output and everything after it (an embedding's projection and L2 normalisation; a detector's
    probability layer and softmax, its box and landmark layers).

    Walks back from each graph output through the ops that are not COMPUTE_OPS, stopping at the
    first compute op of each path. A head is a small share of the work and a large one of the error:
    an int8 output is clipped to the range it had on the calibration images, so a box offset beyond
    it is cut (O-Net's box: 5.8 px off on a held-out face with only the last head float, 1 px with
    every head float).
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    head, stack = set(), [output.name for output in model.graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in head:
            continue
        head.add(node.name)
        if node.op_type not in COMPUTE_OPS:
            stack.extend(node.input)
    return [node.name for node in model.graph.node if node.name in head]


def _keep_float_until(target, kept, report, run, probe, prepared, out_path, held, held_names) -> dict:
    """Keep the worst-ranked layers in float, one at a time, until min cosine on `held` >= target."""
    sample = next(iter(held))[:1]
    fp32_ms = probe.latency_ms(prepared, sample)
    candidates = [layer["layer"] for layer in report["layers"] if layer["layer"] not in kept]
    given = len(kept)
    steps = []
    while True:
        cosine = probe.min_cosine(prepared, out_path, held)
        int8_ms = probe.latency_ms(out_path, sample)
        steps.append({"keep_float": list(kept), "min_cosine": round(cosine, 6), "batch1_ms": round(int8_ms, 2),
                      "speedup_vs_fp32": round(fp32_ms / int8_ms, 3)})
        from facecvt.core.console import err

        err.print(f"keep-float {len(kept) - given} more layers: min cosine {cosine:.5f} on {len(held_names)} held-out images, "
                  f"batch 1 {int8_ms:.1f} ms ({fp32_ms / int8_ms:.2f}x fp32)")
        if cosine >= target:
            break
        if not candidates or len(kept) - given >= MAX_KEEP_FLOAT:
            raise FacecvtError(
                f"int8 reaches min cosine {max(s['min_cosine'] for s in steps):.4f} against fp32 on held-out images "
                f"even with {len(kept) - given} more layers kept in float, below --target-cosine {target}; "
                "calibrate on more faces, try --calibration-method percentile, or ship fp32")
        kept.append(candidates.pop(0))
        run(kept)
    return {"target_cosine": target, "held_out_images": held_names, "fp32_batch1_ms": round(fp32_ms, 2),
            "steps": steps, "keep_float": list(kept)}
