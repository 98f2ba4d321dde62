"""`facecvt embed`: every face of every image -> box, score, five landmarks, vector."""

from __future__ import annotations

import time
from pathlib import Path

from facecvt.pipeline.images import read_image


def embed_images(pipeline, paths, *, crop: bool = False, progress=None) -> dict:
    """Run `pipeline` (a FacePipeline) on each image; a report ready for JSON.

    `crop`: each image is one already aligned face crop, embedded without detection.
    `progress(done, total)` is called after each image.
    """
    paths = [Path(p) for p in paths]
    images, total_faces = [], 0
    started = time.perf_counter()
    for done, path in enumerate(paths, 1):
        image = read_image(path)
        faces = [pipeline.embed_crop(image)] if crop else pipeline.faces(image)
        total_faces += len(faces)
        images.append({"path": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
                       "faces": [face.to_json() for face in faces]})
        if progress:
            progress(done, len(paths))
    seconds = time.perf_counter() - started
    return {
        "model": getattr(pipeline, "model", None),
        "backend": getattr(pipeline, "backend", None),
        "detector_backend": getattr(pipeline, "detector_backend", None),
        "pipeline": pipeline.config.to_dict(),
        "input_size": pipeline.input_size,
        "mode": "crop" if crop else "detect",
        "images": images,
        "faces": total_faces,
        "seconds": round(seconds, 3),
    }


def summary_lines(report: dict) -> list[str]:
    """One line per face (image, box, score), and a total."""
    lines = []
    for image in report["images"]:
        if not image["faces"]:
            lines.append(f"{image['path']}: no face")
        for k, face in enumerate(image["faces"]):
            box = ", ".join(f"{v:.0f}" for v in face["box"])
            lines.append(f"{image['path']} face {k}: box [{box}] score {face['score']:.4f} "
                         f"vector {len(face['vector'])}-D")
    lines.append(f"{report['faces']} faces in {len(report['images'])} images, {report['seconds']:.1f} s "
                 f"({report['backend']}, alignment {report['pipeline']['alignment']})")
    return lines
