"""`make demo`: the whole job on the released FaceNet weights, as a user would run it.

sample (raw training graph) -> inspect -> freeze -> export (all four targets, verified on the
shared faces when present, random inputs otherwise) -> bench; then says where the bundle is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def run(*args) -> None:
    args = [str(a) for a in args]
    print(f"\n$ facecvt {' '.join(args)}", flush=True)
    status = subprocess.call([sys.executable, "-m", "facecvt", *args])
    if status:
        sys.exit(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raw, clean, bundle = args.out / "facenet_raw.pb", args.out / "facenet_clean.pb", args.out / "bundle"
    run("sample", "facenet", "--weights", "released", "-o", raw, "--force")
    run("inspect", raw)
    run("freeze", raw, "-o", clean, "--force")
    inputs = ["--images", args.faces] if (args.faces / "pairs.csv").exists() else []
    if inputs:
        inputs += ["--pairs", args.faces / "pairs.csv"]
    else:
        print(f"(no face crops at {args.faces}: verifying on random inputs)")
    run("export", raw, "-o", bundle, "--force", *inputs)
    stem = raw.stem
    run("bench", f"tensorflow={raw}", bundle / f"{stem}.onnx", bundle / f"{stem}.tflite", bundle / f"{stem}.pb",
        "--batch", "1", "--batch", "8", "--repeats", "5")
    print(f"\ndemo done: the verified bundle is in {bundle}/ (manifest.json, README.md and the four models)")


if __name__ == "__main__":
    main()
