"""`facecvt verify --pipeline BUNDLE --images DIR`: each backend's whole pipeline against TensorFlow's.

The reference is the TensorFlow pipeline: the bundle's source model (manifest `source.path`) as
embedder and `facecvt sample mtcnn`'s graphs of the recorded MTCNN weights (`pipeline.detector_source`)
as detector, with the recorded parameters. Each entry of the manifest's `pipeline.artifacts`
(backend, precision) runs the same images; faces are matched to the reference's by box IoU (greedy,
best first, IoU >= 0.5). Per backend: faces the reference found and it missed, faces it added, and
per matched face the box IoU, the largest landmark error in pixels and the embedding cosine; and per
net (P-, R-, O-Net, embedder) its outputs on the inputs the TensorFlow pipeline fed its own net, judged
as `verify` judges an export (`pipeline_nets_check`): a net out of its limits fails the backend and is
named, even where the faces came out the same. With
pairs, each image's best face (highest score) is its vector: the reference's best-accuracy threshold
on squared L2 is applied to both, and the share of pairs decided alike is reported (not judged: a
pair near the threshold may flip legitimately; an image where a pipeline finds no face counts as a
disagreement).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError

MATCH_IOU = 0.5
# precision -> the limits a backend's pipeline must keep (fp32: the issue's; fp16 looser, a judgement)
LIMITS = {"fp32": {"min_iou": 0.95, "max_landmark_px": 1.0, "min_cosine": 0.9999},
          "fp16": {"min_iou": 0.9, "max_landmark_px": 2.0, "min_cosine": 0.999}}


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match(reference: list, faces: list) -> tuple[list, list, list]:
    """(pairs (i, j, iou), unmatched reference indices, unmatched face indices), greedy by IoU."""
    scores = sorted(((iou(r.box, f.box), i, j) for i, r in enumerate(reference) for j, f in enumerate(faces)),
                    reverse=True)
    used_r, used_f, pairs = set(), set(), []
    for value, i, j in scores:
        if value < MATCH_IOU:
            break
        if i in used_r or j in used_f:
            continue
        used_r.add(i), used_f.add(j)
        pairs.append((i, j, value))
    return pairs, [i for i in range(len(reference)) if i not in used_r], \
        [j for j in range(len(faces)) if j not in used_f]


def reference_pipeline(bundle: Path, manifest: dict):
    from facecvt.pipeline.face_pipeline import FacePipeline, PipelineConfig
    from facecvt.validate.runners import load_runner
    from facecvt.workflows.detector_graphs import tensorflow_detector_nets

    block = manifest["pipeline"]
    source = Path(manifest.get("source", {}).get("path", ""))
    weights = Path(block.get("detector_source", {}).get("weights", ""))
    for what, path in (("source model", source), ("MTCNN weights", weights)):
        if not path.exists():
            raise FacecvtError(f"the bundle's {what} {path} is gone: the TensorFlow pipeline needs it "
                               f"(manifest.json records where it was at export)")
    nets = tensorflow_detector_nets(weights)
    return FacePipeline(nets["pnet"], nets["rnet"], nets["onet"], load_runner("tensorflow", source),
                        PipelineConfig.from_dict(block))


def best_vectors(faces_per_image: list) -> np.ndarray:
    """(N, D) the best-scored face's vector of each image; NaN rows where no face was found."""
    size = next((len(f[0].vector) for f in faces_per_image if f), 1)
    return np.array([f[0].vector if f else np.full(size, np.nan) for f in faces_per_image], np.float64)


def pair_agreement(pairs, paths: list, reference_faces: list, faces: list) -> dict:
    from facecvt.validate.metrics import best_threshold, pair_distances

    left, right = pairs.index_pairs(paths, resolve=True)
    reference = pair_distances(best_vectors(reference_faces), left, right)
    candidate = pair_distances(best_vectors(faces), left, right)
    usable = ~np.isnan(reference)
    if not usable.any():
        raise FacecvtError("the TensorFlow pipeline found no face in the pairs' images: nothing to decide")
    threshold, accuracy = best_threshold(reference[usable], pairs.labels[usable])
    # pairs the reference could not decide (no face) are left out; a candidate without a face disagrees
    same_ref = reference[usable] < threshold
    same_cand = candidate[usable] < threshold
    agree = float(np.mean((same_ref == same_cand) & ~np.isnan(candidate[usable])))
    return {"pairs": int(usable.sum()), "threshold": float(threshold), "reference_accuracy": float(accuracy),
            "agreement": agree, "no_face_images": int(np.isnan(best_vectors(faces)[:, 0]).sum())}


def verify_pipeline(bundle: Path, image_paths: list, progress=None, pairs=None) -> dict:
    from facecvt.pipeline.images import read_image
    from facecvt.pipeline.load import _bundle_pipeline_spec, open_pipeline
    from facecvt.workflows.pipeline_nets_check import check_nets, recorded_nets

    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise FacecvtError(f"{bundle} is not an export bundle (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    block = manifest.get("pipeline")
    if not isinstance(block, dict) or not isinstance(block.get("artifacts"), list):
        raise FacecvtError(f"{bundle} is not a pipeline bundle: export it with --detector mtcnn=DIR")
    image_paths = list(image_paths)
    if pairs is not None:
        seen = {Path(p).resolve() for p in image_paths}
        image_paths += [p for p in pairs.unique_images() if Path(p).resolve() not in seen]
    images = [read_image(p) for p in image_paths]
    reference = reference_pipeline(bundle, manifest)
    recorded = recorded_nets(reference)
    ref_faces = [reference.faces(image) for image in images]
    results = []
    entries = block["artifacts"]
    for k, entry in enumerate(entries):
        spec = _bundle_pipeline_spec({**block, "artifacts": [entry]}, bundle, None)
        pipeline = open_pipeline(spec)
        precision = entry.get("precision") if entry.get("precision") in LIMITS else "fp16"
        limits = LIMITS[precision]
        missed, added, ious, landmark_errors, cosines, per_image, all_faces = 0, 0, [], [], [], [], []
        for path, image, ref in zip(image_paths, images, ref_faces):
            faces = pipeline.faces(image)
            all_faces.append(faces)
            matched, lost, extra = match(ref, faces)
            missed, added = missed + len(lost), added + len(extra)
            for i, j, value in matched:
                ious.append(value)
                landmark_errors.append(float(np.abs(ref[i].landmarks - faces[j].landmarks).max()))
                a, b = ref[i].vector, faces[j].vector
                cosines.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
            per_image.append({"path": str(path), "reference_faces": len(ref), "faces": len(faces),
                              "missed": len(lost), "added": len(extra)})
        failed = []
        if missed or added:
            failed.append("faces")
        if ious and min(ious) < limits["min_iou"]:
            failed.append("iou")
        if landmark_errors and max(landmark_errors) > limits["max_landmark_px"]:
            failed.append("landmarks")
        if cosines and min(cosines) < limits["min_cosine"]:
            failed.append("cosine")
        nets = check_nets(recorded, pipeline, precision)
        failed += [net for net, row in nets.items() if not row["pass"]]
        results.append({"backend": entry["backend"], "target": entry.get("target"),
                        "precision": entry.get("precision"), "matched": len(ious), "missed": missed,
                        "added": added, "min_iou": min(ious) if ious else None,
                        "max_landmark_px": max(landmark_errors) if landmark_errors else None,
                        "min_cosine": min(cosines) if cosines else None, "limits": limits,
                        "nets": nets, "pass": not failed, "failed": failed, "images": per_image})
        if pairs is not None:
            results[-1]["pairs"] = pair_agreement(pairs, image_paths, ref_faces, all_faces)
        if progress:
            progress(k + 1, len(entries))
    return {"bundle": str(bundle), "reference": "tensorflow", "images": len(images),
            "reference_faces": sum(len(f) for f in ref_faces), "match_iou": MATCH_IOU,
            "backends": results, "pass": all(r["pass"] for r in results)}


def pipeline_table(report: dict):
    from rich.table import Table

    table = Table(title=f"pipeline {report['bundle']} vs TensorFlow ({report['images']} images, "
                        f"{report['reference_faces']} reference faces)")
    for column in ("backend", "precision", "matched", "missed", "added", "min IoU", "max landmark px",
                   "min cosine", "pairs agree", "nets", "result"):
        table.add_column(column, justify="left" if column in ("backend", "precision", "nets", "result") else "right")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for row in report["backends"]:
        table.add_row(row["backend"], row["precision"], str(row["matched"]), str(row["missed"]), str(row["added"]),
                      fmt(row["min_iou"], ".4f"), fmt(row["max_landmark_px"], ".3f"), fmt(row["min_cosine"], ".6f"),
                      fmt(row.get("pairs", {}).get("agreement"), ".4f"), nets_cell(row.get("nets", {})),
                      "PASS" if row["pass"] else "FAIL " + ", ".join(row["failed"]))
    return table


def nets_cell(nets: dict) -> str:
    """'ok', or each net out of its limits with what failed ('pnet: prob rel_max_abs')."""
    off = [f"{net}: {', '.join(row['failed'])}" for net, row in nets.items() if not row["pass"]]
    return "; ".join(off) or ("ok" if nets else "-")
