"""`make demo`: sample the released FaceNet training graph, inspect it, freeze it, and say what happened."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> None:
    print(f"\n$ facecvt {' '.join(args)}", flush=True)
    status = subprocess.call([sys.executable, "-m", "facecvt.cli", *args])
    if status:
        sys.exit(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raw, clean = args.out / "facenet_raw.pb", args.out / "facenet_clean.pb"
    run("sample", "facenet", "--weights", "released", "-o", str(raw), "--force")
    run("inspect", str(raw))
    run("freeze", str(raw), "-o", str(clean), "--force")
    run("inspect", str(clean))
    print(f"\ndemo done: raw training graph {raw}, clean inference graph {clean}")


if __name__ == "__main__":
    main()
