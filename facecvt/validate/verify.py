"""`verify` orchestration: stream inputs through the reference and every candidate, compare, report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError, did_you_mean
from facecvt.validate import metrics, runners
from facecvt.core.targets import PRECISIONS, TARGETS, legal_names
from facecvt.validate.artifacts import artifact_precision, default_runner_options, quantization_record
from facecvt.core.output_kinds import OUTPUT_KINDS, infer_output_kind
from facecvt.validate.compare import EmbeddingComparator, OutputComparator, OutputTolerances, Tolerances
from facecvt.validate.embedding_output import embedding_by_shape, requested_embedding
from facecvt.validate.localize import localize as localize_candidate
from facecvt.core.images import PREPROCESS_MODES, iter_image_batches, list_images, random_batches
from facecvt.validate.pairs import Pairs, read_pairs
from facecvt.validate.report import build_report, candidate_entry, pairs_block

Progress = Callable[[int, int], None]  # (inputs done, inputs in all)


@dataclass
class InputSpec:
    """Where the inputs come from: an images folder, or `random` seeded random inputs.

    With pairs, the inputs are the images of `images` (when given) plus every image the pairs name
    (paths relative to `images`, default the pairs file's folder), each embedded once.
    """

    images: Path | None = None
    random: int | None = None
    preprocess: str = "fixed"
    seed: int = 0
    batch_size: int = 32
    recursive: bool = False
    sizes: tuple | None = None  # (H, W) sizes to run a free-size model at (images resized to each)


@dataclass
class _Candidate:
    backend: str
    path: Path
    precision: str
    tolerances: Tolerances
    options: dict
    runner: runners.Runner | None = None  # already open (export's replayed candidates): used as is


def _candidates(candidates: Sequence[tuple], overrides: dict | None) -> list[_Candidate]:
    result = []
    for spec in candidates:
        opened = spec[0] if isinstance(spec[0], runners.Runner) else None
        if opened is not None:  # (runner, precision)
            spec = (opened.backend, opened.path, *spec[1:])
        backend, path = spec[0], Path(spec[1])
        precision = spec[2] if len(spec) > 2 and spec[2] else artifact_precision(backend, path)
        if precision not in PRECISIONS:
            raise FacecvtError(f"unknown precision {precision!r} for {path}; use one of {', '.join(PRECISIONS)}")
        options = spec[3] if len(spec) > 3 and spec[3] is not None else default_runner_options(backend, path)
        result.append(_Candidate(backend, path, precision, Tolerances.for_precision(precision, **(overrides or {})),
                                 options, opened))
    return result


def _input_paths(inputs: InputSpec, pairs: Pairs | None) -> list[Path] | None:
    """The image paths to embed (None for random inputs), checked before any runtime is loaded."""
    if inputs.preprocess not in PREPROCESS_MODES:
        raise FacecvtError(f"unknown preprocessing {inputs.preprocess!r}; use one of {', '.join(PREPROCESS_MODES)}")
    if pairs is not None:
        if inputs.random:
            raise FacecvtError("--pairs needs real images, not --random; pass --images with the pairs' folder")
        listed = []
        if inputs.images is not None:
            with contextlib.suppress(FacecvtError):  # LFW keeps every image in a subfolder: none listed
                listed = list_images(inputs.images, recursive=inputs.recursive)
        unique = {}  # one entry per file, however its path is spelled (folder listing vs pairs file)
        for path in [*listed, *pairs.unique_images()]:
            unique.setdefault(path.resolve(), path)
        return list(unique.values())
    if (inputs.images is None) == (inputs.random is None):
        raise FacecvtError("give exactly one input source: --images DIR or --random N")
    if inputs.images is not None:
        return list_images(inputs.images, recursive=inputs.recursive)
    if inputs.random < 1:
        raise FacecvtError(f"--random needs at least 1 input, got {inputs.random}")
    return None


def _image_shape(reference, candidates: list) -> tuple[int | None, int | None, int | None]:
    """(H, W, C) the models take; every runner must agree where its size is fixed."""
    shape = tuple(reference.input_shape[1:4])
    for runner in candidates:
        other = tuple(runner.input_shape[1:4])
        if any(a is not None and b is not None and a != b for a, b in zip(shape, other)):
            raise FacecvtError(f"{runner.describe()} takes inputs of size {other} (HWC) but the reference "
                               f"{reference.describe()} takes {shape}; compare exports of the same model")
        shape = tuple(a if a is not None else b for a, b in zip(shape, other))
    return shape


def open_runner(backend: str, path: str | Path, options: dict | None = None):
    """The runner of `backend` for `path`; load failures become one user-facing line."""
    if backend not in runners.RUNNERS:
        raise FacecvtError(f"unknown backend {backend!r}{did_you_mean(backend, runners.RUNNERS)}; "
                           f"use one of {', '.join(runners.RUNNERS)}")
    try:
        return runners.load_runner(backend, path, **(options or {}))
    except FacecvtError:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime's own message, on one line
        raise FacecvtError(f"{backend} cannot load {path}: {type(exc).__name__}: {exc}") from exc


def _call(runner, method: str, batch: np.ndarray):
    """`runner.method(batch)`; a runtime's own error becomes one user-facing line naming the runner."""
    try:
        return getattr(runner, method)(batch)
    except FacecvtError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtime errors become one user-facing line
        raise FacecvtError(f"{runner.describe()} failed on a batch of shape {batch.shape}: "
                           f"{type(exc).__name__}: {exc}") from exc


def _run(runner, batch: np.ndarray) -> list[np.ndarray]:
    """Every output of `runner` on `batch`; runtime errors become one user-facing line."""
    outputs = _call(runner, "run", batch)
    for name, out in zip(runner.output_names, outputs):
        if out.ndim < 1 or out.shape[0] != batch.shape[0]:
            raise FacecvtError(f"{runner.describe()} returned shape {out.shape} for output {name} of "
                               f"{batch.shape[0]} inputs; expected (N, ...)")
    return outputs


def match_outputs(reference_names: list, candidate_names: list, describe: str) -> list[int]:
    """For each reference output, the index of the candidate's output that holds it.

    Names are matched as exports write them: the same name, the name with a ':0' port, or the
    name Core ML's sanitiser gives it (core.targets.legal_names); one output each matches by
    position. Runtimes list outputs in their own order (LiteRT reorders), so never by index alone.
    """
    if len(reference_names) == 1 and len(candidate_names) == 1:
        return [0]
    legal = legal_names(TARGETS["coreml"], reference_names)
    index = {}
    for position, name in enumerate(candidate_names):
        index.setdefault(name, position)
        index.setdefault(name.split(":")[0], position)
    found = []
    for name in reference_names:
        position = index.get(name, index.get(legal[name]))
        if position is None:
            raise FacecvtError(f"{describe} has no output {name!r} of the reference (its outputs: "
                               f"{', '.join(candidate_names)}); export with the same --output")
        found.append(position)
    return found


def _embed(runner, batch: np.ndarray) -> np.ndarray:
    emb = np.asarray(_call(runner, "embed", batch), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != batch.shape[0]:
        raise FacecvtError(f"{runner.describe()} returned shape {emb.shape} for {batch.shape[0]} inputs; "
                           f"expected (N, D) embeddings")
    return emb


def _batches(inputs: InputSpec, paths, shape_hwc):
    if paths is not None:
        return iter_image_batches(paths, shape_hwc[:2], inputs.preprocess, inputs.batch_size)
    if None in shape_hwc:
        raise FacecvtError(f"the reference takes inputs of any size {shape_hwc} (HWC), so --random cannot "
                           f"choose one; give the sizes with --sizes HxW[,HxW...] (or use --images)")
    return random_batches(inputs.random, shape_hwc, inputs.seed, inputs.batch_size)


def _inputs_block(inputs: InputSpec, paths, pairs: Pairs | None, shape_hwc) -> dict:
    if pairs is not None:
        folder = f"images {inputs.images} + " if inputs.images is not None else ""
        source = f"{folder}pairs {pairs.source} ({len(paths)} images)"
    elif paths is not None:
        source = f"images {inputs.images}"
    else:
        source = f"random {inputs.random} (seed {inputs.seed})"
    block = {"source": source, "count": len(paths) if paths is not None else inputs.random,
             "preprocess": inputs.preprocess if paths is not None else "none",
             "input_size": list(shape_hwc[:2]), "batch_size": inputs.batch_size}
    if paths is None:
        block.update(seed=inputs.seed, values="uniform[-1,1)")  # already in the "fixed" range
    return block


class _PairEmbeddings:
    """Keeps, per backend, only the embeddings of the images the pairs name (in input order).

    `index` is the reference output that holds the embedding (see `validate.embedding_output`);
    None until a model with several outputs has its first batch, whose shapes then decide.
    """

    def __init__(self, pairs: Pairs, paths: list[Path], n_backends: int, index: int | None = 0):
        self.index = index
        left, right = pairs.index_pairs(paths, resolve=True)
        self.keep = np.zeros(len(paths), dtype=bool)
        self.keep[left] = self.keep[right] = True
        kept_index = np.cumsum(self.keep) - 1
        self.left, self.right = kept_index[left], kept_index[right]
        self.rows = [[] for _ in range(n_backends)]
        self.done = 0

    def add(self, embeddings: list[np.ndarray]) -> None:
        """One batch: the embeddings of every backend for the next inputs."""
        keep = self.keep[self.done:self.done + len(embeddings[0])]
        for rows, emb in zip(self.rows, embeddings):
            rows.append(emb[keep])
        self.done += len(embeddings[0])

    def add_outputs(self, reference: list, candidates: list, orders: list, names: list, model: str) -> None:
        """One batch of a model with several outputs: the embedding output of the reference and of each
        candidate (`orders`: where each candidate holds each reference output, see `match_outputs`)."""
        if self.index is None:
            self.index = embedding_by_shape(names, [out.shape for out in reference], model)
        index = self.index
        flat = lambda out: out.reshape(len(out), -1)  # noqa: E731
        self.add([flat(reference[index])] + [flat(got[order[index]]) for got, order in zip(candidates, orders)])

    def distances(self, index: int) -> np.ndarray:
        """Squared-L2 distance of every pair with the embeddings of backend `index`."""
        return metrics.pair_distances(np.concatenate(self.rows[index]), self.left, self.right)


def _roc_points(dist: np.ndarray, labels, most: int = 201) -> dict:
    """The ROC (far, tar) for plotting, thinned to at most `most` points (first and last kept)."""
    far, tar, _ = metrics.roc_curve(dist, labels)
    if len(far) > most:
        keep = np.unique(np.linspace(0, len(far) - 1, most).round().astype(int))
        far, tar = far[keep], tar[keep]
    return {"far": far.tolist(), "tar": tar.tolist()}


def _pairs_result(pairs: Pairs, backends: list[tuple[str, Path, str, str]], kept: _PairEmbeddings,
                  embedding_output: str) -> dict:
    """Seed 002's model card: verification measures per backend and precision (the fp32 reference
    first) and each one's decision agreement with the reference at the reference's threshold, on
    the reference output `embedding_output`."""
    labels = pairs.labels
    dists = [kept.distances(i) for i in range(len(backends))]
    ref_threshold = metrics.best_threshold(dists[0], labels)[0]
    results = []
    for index, ((backend, path, executed_by, precision), dist) in enumerate(zip(backends, dists)):
        row = {"backend": backend, "path": str(path), "executed_by": executed_by, "precision": precision,
               "role": "reference" if index == 0 else "candidate"}
        row.update(metrics.verification_metrics(dist, labels, pairs.folds))
        row["decision_agreement"] = metrics.decision_agreement(dists[0], dist, ref_threshold)
        row["roc"] = _roc_points(dist, labels)
        results.append(row)
    return pairs_block(pairs.source, pairs.format, labels, pairs.folds, results, ref_threshold, embedding_output)


def _localized(reference, runner, sample: np.ndarray, precision: str, rows: list[dict]) -> dict:
    """The `localize` block of one candidate, or {available: False, reason} when a runtime cannot say.

    Each of its `outputs` gets the `pass` of the candidate's row for that output (`rows`), so the
    report can show where each failing output's error appears.
    """
    if not hasattr(reference, "layers"):
        return {"available": False, "reason": f"the reference {reference.describe()} has no layers to compare with"}
    try:
        block = {"available": True, **localize_candidate(reference, runner, sample, precision)}
    except (FacecvtError, NotImplementedError) as exc:
        return {"available": False, "reason": str(exc)}
    passed = {row["name"]: row["pass"] for row in rows}
    for output in block["outputs"]:
        output["pass"] = passed.get(output["name"])
    return block


class _Sample:
    """The first `size` inputs of the run (of its first input size), kept for localisation."""

    def __init__(self, size: int):
        self.size = size
        self.rows: list[np.ndarray] = []
        self.count = 0

    def add(self, batch: np.ndarray) -> None:
        if self.rows and batch.shape[1:] != self.rows[0].shape[1:]:
            return  # the next --sizes size: the first one's inputs are enough
        if self.count < self.size:
            self.rows.append(batch[:self.size - self.count].copy())
            self.count += len(self.rows[-1])

    def array(self) -> np.ndarray:
        return np.concatenate(self.rows)


def verify(reference: tuple[str, str | Path], candidates: Sequence[tuple], inputs: InputSpec,
           pairs: Pairs | str | Path | None = None, tolerances: dict | None = None,
           progress: Progress | None = None, localize: bool | None = None, localize_inputs: int = 4,
           reference_options: dict | None = None, output_kinds: dict | None = None,
           embedding_output: str | None = None) -> dict:
    """Run every input through the reference and each candidate and return the report dict.

    A reference with several outputs (a detector) has each output of each candidate compared on its
    own (matched by name, see `match_outputs`), with tolerances by precision and by what the output
    holds (`output_kinds`: {output: 'prob'|'box'|'landmarks'|'embedding'|'tensor'}, default from
    its name): the candidate gets an `outputs` list, one row per output. `reference_options` open
    the reference (input_name, output_name, input_shape, signature, custom_objects for TensorFlow).
    `inputs.sizes` runs a free-size model at each (H, W).

    `reference` is (backend, path) or an open Runner; `candidates` are (backend, path),
    (backend, path, precision), (backend, path, precision, runner options) or (open Runner,
    precision), the runner closed at the end; a missing precision
    is read from the artifact, missing runner options open it as users do (OpenCV with its .pbtxt).
    `tolerances` overrides the per-precision defaults for every candidate (keys of `Tolerances`,
    None values ignored). With `pairs` (a file or a `Pairs`) the report gets a `pairs` block,
    computed on the output `embedding_output` names (default: see `validate.embedding_output`).
    Only embeddings of pair images are kept; everything else is compared batch by batch.
    `localize`: True localises every candidate, None (default) only the failing ones, False none;
    a localised candidate gets a `localize` block (see `facecvt.validate.localize`, one first
    divergence per output too), computed on the first `localize_inputs` inputs.
    """
    if not candidates:
        raise FacecvtError("give at least one candidate artifact to compare with the reference")
    if embedding_output and pairs is None:
        raise FacecvtError("--embedding-output names the output --pairs compares; give --pairs FILE too")
    if pairs is not None and not isinstance(pairs, Pairs):
        pairs = read_pairs(pairs, inputs.images)
    chosen = _candidates(candidates, tolerances)
    paths = _input_paths(inputs, pairs)
    if localize_inputs < 1:
        raise FacecvtError(f"--localize-inputs needs at least 1 input, got {localize_inputs}")
    sample = _Sample(localize_inputs)
    with contextlib.ExitStack() as stack:
        if isinstance(reference, runners.Runner):  # already open (export reuses its loaded model)
            ref_runner, reference = reference, (reference.backend, reference.path)
        else:
            ref_runner = stack.enter_context(open_runner(reference[0], reference[1], reference_options))
        cand_runners = [stack.enter_context(c.runner or open_runner(c.backend, c.path, c.options)) for c in chosen]
        shape_hwc = _image_shape(ref_runner, cand_runners)
        kept = None
        if pairs is not None:
            index = requested_embedding(ref_runner.output_names, embedding_output, str(ref_runner.path))
            kept = _PairEmbeddings(pairs, paths, len(chosen) + 1, index)
        sizes = _sizes(inputs, shape_hwc)
        verify_path = _verify_outputs if len(ref_runner.output_names) > 1 else _verify_embeddings
        entries = verify_path(ref_runner, chosen, cand_runners, inputs, paths, kept, shape_hwc, sizes, progress,
                              sample, localize, output_kinds)
    block = None
    if kept is not None:
        backends = [(reference[0], Path(reference[1]), ref_runner.executed_by, "fp32")] + [
            (c.backend, c.path, runner.executed_by, c.precision) for c, runner in zip(chosen, cand_runners)]
        block = _pairs_result(pairs, backends, kept, ref_runner.output_names[kept.index])
    block_inputs = _inputs_block(inputs, paths, pairs, shape_hwc)
    if sizes != [None]:
        block_inputs["sizes"] = [list(size) for size in sizes]
    report = build_report((reference[0], reference[1]), entries, block_inputs, block)
    report["outputs"] = [{"name": name, "shape": shape, "dtype": "float32"}
                         for name, shape in zip(ref_runner.output_names, _output_shapes(entries, ref_runner))]
    warnings = calibration_overlap(chosen, paths)
    if warnings:
        report["warnings"] = warnings
    return report


def calibration_overlap(candidates, paths) -> list[str]:
    """A warning per int8 candidate scored on images it was calibrated on, naming them."""
    from facecvt.core.digests import overlap

    warnings = []
    for candidate in candidates:
        record = quantization_record(candidate.backend, candidate.path) if paths else None
        if not record or not record.get("calibration_files"):
            continue
        shared = overlap(paths, record["calibration_files"])
        if shared:
            names = ", ".join(p.name for p in shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
            warnings.append(f"{candidate.path.name} was calibrated on {len(shared)} of the {len(paths)} images it "
                            f"is scored on ({names}): its accuracy is flattered; score it on other faces")
    return warnings



def _output_shapes(entries: list, ref_runner) -> list:
    """Per reference output, its shape as the comparison saw it (None for a free dimension)."""
    if entries and entries[0].get("outputs"):
        return [row["shape"] for row in entries[0]["outputs"]]
    return [None for _ in ref_runner.output_names]


def _sizes(inputs: InputSpec, shape_hwc) -> list:
    """[None] (the model's own size) or the (H, W) sizes of --sizes, checked against the model."""
    if not inputs.sizes:
        return [None]
    for h, w in inputs.sizes:
        for index, (fixed, asked) in enumerate(zip(shape_hwc[:2], (h, w))):
            if fixed is not None and fixed != asked:
                raise FacecvtError(f"--sizes {h}x{w}: the models take a fixed {'height' if index == 0 else 'width'} "
                                   f"of {fixed}; --sizes is for models whose input size is free")
    return [tuple(size) for size in inputs.sizes]


def verification_batches(inputs: InputSpec, pairs: Pairs | str | Path | None, shape_hwc):
    """Every batch `verify` feeds the models for these inputs (each size, in verify's order): what an
    export worker runs its artifact on, for the parent to compare (validate/runners/replay.py)."""
    if pairs is not None and not isinstance(pairs, Pairs):
        pairs = read_pairs(pairs, inputs.images)
    paths = _input_paths(inputs, pairs)
    for _, batch in _size_batches(inputs, paths, shape_hwc, _sizes(inputs, shape_hwc)):
        yield batch


def _size_batches(inputs: InputSpec, paths, shape_hwc, sizes):
    """(input (H, W), batch) over every size: the whole input stream once per size."""
    for size in sizes:
        shape = shape_hwc if size is None else (*size, shape_hwc[2])
        for _, batch in _batches(inputs, paths, shape):
            yield shape[:2], batch


def _verify_embeddings(ref_runner, chosen, cand_runners, inputs, paths, kept, shape_hwc, sizes, progress, sample,
                       localize, output_kinds=None):
    """The single-output path: one embedding comparator per candidate (and the pairs' embeddings in
    `kept`); `output_kinds` do not apply (the one output is judged as an embedding)."""
    comparators = [EmbeddingComparator(c.tolerances) for c in chosen]
    total = (len(paths) if paths is not None else inputs.random) * len(sizes)
    done = 0
    for _, batch in _size_batches(inputs, paths, shape_hwc, sizes):
        sample.add(batch)
        ref_emb = _embed(ref_runner, batch)
        embeddings = [ref_emb]
        for runner, comparator in zip(cand_runners, comparators):
            emb = _embed(runner, batch)
            if emb.shape != ref_emb.shape:
                raise FacecvtError(f"{runner.describe()} returns {emb.shape[1]}-D embeddings but the reference "
                                   f"{ref_runner.describe()} returns {ref_emb.shape[1]}-D; compare exports "
                                   f"of the same model")
            comparator.update(ref_emb, emb)
            embeddings.append(emb)
        dimension = ref_emb.shape[1]
        if kept is not None:
            kept.add(embeddings)
        done += batch.shape[0]
        if progress is not None:
            progress(done, total)
    entries = []
    for candidate, runner, comparator in zip(chosen, cand_runners, comparators):
        entry = candidate_entry(candidate.backend, candidate.path, candidate.precision, comparator.result(),
                                runner.executed_by)
        entry["distribution"] = comparator.distribution()
        entry["dimension"] = dimension
        entry["outputs"] = [_embedding_row(ref_runner, runner, entry)]
        if localize or (localize is None and not entry["pass"]):
            entry["localize"] = _localized(ref_runner, runner, sample.array(), candidate.precision, entry["outputs"])
        entries.append(entry)
    return entries


def _embedding_row(ref_runner, runner, entry: dict) -> dict:
    """The one `outputs` row of an embedding model: the candidate's own measures, under the output's name."""
    dims = [None, entry.get("dimension")] if entry.get("dimension") else None
    return {"name": ref_runner.output_names[0], "candidate_name": runner.output_names[0], "kind": "embedding",
            "shape": dims, **{k: entry.get(k) for k in ("max_abs", "mean_abs", "p99_abs", "min_cosine")},
            "tolerances": entry.get("tolerances"), "pass": entry["pass"], "failed": entry["failed"]}


def _verify_outputs(ref_runner, chosen, cand_runners, inputs, paths, kept, shape_hwc, sizes, progress, sample,
                    localize, output_kinds):
    """Several outputs: each output of each candidate compared on its own, judged by its kind; the
    embedding output of every backend kept for the pairs in `kept`."""
    names = ref_runner.output_names
    kinds = [(output_kinds or {}).get(name) or infer_output_kind(name) for name in names]
    orders = [match_outputs(names, runner.output_names, runner.describe()) for runner in cand_runners]
    comparators = [[OutputComparator(name, kind, OutputTolerances.for_output(c.precision, kind),
                                     runner.output_names[index])
                    for name, kind, index in zip(names, kinds, order)]
                   for c, runner, order in zip(chosen, cand_runners, orders)]
    total = (len(paths) if paths is not None else inputs.random) * len(sizes)
    done = 0
    for size_hw, batch in _size_batches(inputs, paths, shape_hwc, sizes):
        sample.add(batch)
        reference = _run(ref_runner, batch)
        candidates = []
        for runner, order, outputs in zip(cand_runners, orders, comparators):
            got = _run(runner, batch)
            for comparator, ref, index in zip(outputs, reference, order):
                comparator.update(ref, got[index], size_hw)
            candidates.append(got)
        if kept is not None:
            kept.add_outputs(reference, candidates, orders, names, str(ref_runner.path))
        done += batch.shape[0]
        if progress is not None:
            progress(done, total)
    entries = []
    for candidate, runner, outputs in zip(chosen, cand_runners, comparators):
        rows = [comparator.result() for comparator in outputs]
        failed = [f"{row['name']}: {measure}" for row in rows for measure in row["failed"]]
        entry = candidate_entry(candidate.backend, candidate.path, candidate.precision,
                                {"count": outputs[0].values.count, "pass": not failed, "failed": failed,
                                 "outputs": rows}, runner.executed_by)
        if localize or (localize is None and not entry["pass"]):
            entry["localize"] = _localized(ref_runner, runner, sample.array(), candidate.precision, rows)
        entries.append(entry)
    return entries


def parse_sizes(text: str | None) -> tuple | None:
    """--sizes '12x12,48x64' -> ((12, 12), (48, 64)) as (H, W)."""
    if not text:
        return None
    sizes = []
    for item in text.split(","):
        h, sep, w = item.strip().lower().partition("x")
        if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
            raise FacecvtError(f"--sizes {text!r}: write HxW[,HxW...] with positive numbers, e.g. 12x12,48x64")
        sizes.append((int(h), int(w)))
    return tuple(sizes)


def parse_output_kinds(items) -> dict:
    """--output-kind NAME=KIND (repeatable) -> {NAME: KIND}."""
    kinds = {}
    for item in items or ():
        name, sep, kind = item.partition("=")
        if not sep or kind not in OUTPUT_KINDS:
            raise FacecvtError(f"--output-kind {item!r}: write NAME=KIND with KIND one of {', '.join(OUTPUT_KINDS)}")
        kinds[name.strip()] = kind
    return kinds


# how a TensorFlow reference is opened (TensorFlowRunner's keywords, load_model's) -> the option that sets it
REFERENCE_OPTIONS = {"input_name": "--input", "output_name": "--output", "input_shape": "--input-shape",
                     "signature": "--signature", "custom_objects": "--custom-objects"}


def verify_specs(reference: str, candidates: Sequence[str], inputs: InputSpec, pairs=None,
                 tolerances: dict | None = None, progress: Progress | None = None, localize: bool | None = None,
                 localize_inputs: int = 4, backend_options: dict | None = None,
                 reference_options: dict | None = None, output_kinds: dict | None = None,
                 embedding_output: str | None = None) -> dict:
    """`verify` on command-line specs: REFERENCE and CANDIDATE are PATH or BACKEND=PATH.

    Every argument is checked (one input source, every path exists) before a runtime is loaded.
    `backend_options` adds runner options per backend (`{"opencv": {"engine": "classic"}}`) to the
    options a candidate is opened with as users open it; `reference_options` open a TensorFlow
    reference as `load_model` reads any input (input_name, output_name, input_shape, signature,
    custom_objects: the keys of REFERENCE_OPTIONS); `output_kinds` and `embedding_output` see `verify`.
    """
    if inputs.images is None and inputs.random is None and pairs is None:
        raise FacecvtError("give inputs: --images DIR (face images), --random N, or --pairs FILE")
    if inputs.images is not None and inputs.random is not None:
        raise FacecvtError("--images and --random exclude each other; choose one")
    if inputs.random is not None and inputs.random < 1:
        raise FacecvtError("--random N needs N >= 1")
    if pairs is not None and inputs.sizes:
        raise FacecvtError("--pairs compares embeddings of the images at the model's own input size; "
                           "--sizes is for free-size models (detectors): drop one of them")
    ref_backend, ref_path = runners.parse_candidate(reference, role="reference")
    parsed = [runners.parse_candidate(c) for c in candidates]
    for _, path in [(ref_backend, ref_path), *parsed]:
        if not path.exists():
            raise FacecvtError(f"{path} does not exist")
    extra = backend_options or {}
    parsed = [(b, p, None, {**default_runner_options(b, p), **extra[b]}) if b in extra else (b, p) for b, p in parsed]
    options = {k: v for k, v in (reference_options or {}).items() if v}
    unknown = set(options) - set(REFERENCE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown reference option(s) {sorted(unknown)}; known: {sorted(REFERENCE_OPTIONS)}")
    if options and ref_backend != "tensorflow":
        flags = "/".join(REFERENCE_OPTIONS[k] for k in REFERENCE_OPTIONS if k in options)
        raise FacecvtError(f"{flags} read{'s' if len(options) == 1 else ''} a TensorFlow or Keras reference "
                           f"(.pb, checkpoint or SavedModel folder, .keras, .h5); {ref_path} is run by {ref_backend}")
    return verify((ref_backend, ref_path), parsed, inputs, pairs=pairs, tolerances=tolerances, progress=progress,
                  localize=localize, localize_inputs=localize_inputs, reference_options=options,
                  output_kinds=output_kinds, embedding_output=embedding_output)
