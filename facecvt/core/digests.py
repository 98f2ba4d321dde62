"""Content digests of image sets: which images calibrated an int8 model, and whether it is scored on them.

A quantised artifact records the digest of its calibration images (and a short digest per file);
`verify` digests the images it scores on and names any file that calibrated the candidate.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# metadata key under which an int8 artifact records its quantisation settings and calibration digest (JSON)
QUANT_METADATA_KEY = "facecvt.quantization"
SHORT = 16  # hex characters kept per file: enough to tell files apart, small in the model's metadata


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_set_digest(paths) -> dict:
    """{"count", "sha256", "files"}: the set's digest (of its sorted file digests) and each file's short one.

    File contents only, never names or order: the same images copied to another folder match.
    """
    files = sorted(file_sha256(p) for p in paths)
    return {"count": len(files), "sha256": hashlib.sha256("".join(files).encode()).hexdigest(),
            "files": [f[:SHORT] for f in files]}


def overlap(paths, short_digests) -> list[Path]:
    """The files among `paths` whose content has one of `short_digests`."""
    wanted = set(short_digests)
    return [Path(p) for p in paths if file_sha256(p)[:SHORT] in wanted]
