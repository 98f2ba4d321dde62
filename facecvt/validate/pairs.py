"""Face-verification pairs: a CSV `left,right,same` or an LFW `pairs.txt`, told apart by content.

LFW `pairs.txt`: a header "FOLDS PAIRS" (or just "PAIRS" for one fold, as pairsDevTrain.txt),
then per fold PAIRS same-person lines `name n1 n2` followed by PAIRS different-person lines
`name1 n1 name2 n2`. Image `name n` is DIR/name/name_%04d.jpg (or .png).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError

LFW_SUFFIXES = (".jpg", ".png", ".jpeg")
TRUE_LABELS = {"1", "true", "yes", "same", "y", "t"}
FALSE_LABELS = {"0", "false", "no", "different", "diff", "n", "f"}
SHOW_MISSING = 5
_LFW_HEADER = re.compile(r"^\s*\d+(\s+\d+)?\s*$")


@dataclass
class Pairs:
    """Labelled image pairs; `folds` holds the pair indices of each fold when the file defines folds."""

    pairs: list[tuple[Path, Path, bool]]
    folds: list[np.ndarray] | None = None
    source: Path | None = None
    format: str = "csv"

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def labels(self) -> np.ndarray:
        """(P,) bool: True for a same-person pair."""
        return np.array([same for _, _, same in self.pairs], dtype=bool)

    def unique_images(self) -> list[Path]:
        """Every image the pairs name, once, in order of first appearance."""
        return list(dict.fromkeys(p for left, right, _ in self.pairs for p in (left, right)))

    def index_pairs(self, images: list[Path], resolve: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(left_idx, right_idx) positions of each pair's images in `images` (compared resolved if `resolve`)."""
        key = (lambda p: Path(p).resolve()) if resolve else Path
        position = {key(p): i for i, p in enumerate(images)}
        left = np.array([position[key(a)] for a, _, _ in self.pairs], dtype=np.int64)
        right = np.array([position[key(b)] for _, b, _ in self.pairs], dtype=np.int64)
        return left, right


def detect_format(text: str) -> str:
    """"lfw" when the first line is the LFW header of numbers, "csv" when it has commas."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if _LFW_HEADER.match(first):
        return "lfw"
    if "," in first:
        return "csv"
    raise FacecvtError(f"cannot tell the pairs format from its first line {first[:60]!r}; "
                       f"use a CSV with header left,right,same or an LFW pairs.txt")


def read_pairs(path: str | Path, images_dir: str | Path | None = None) -> Pairs:
    """Read a pairs file; image paths are relative to `images_dir` (default: the pairs file's folder).

    Raises FacecvtError when the file is malformed or names images that do not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FacecvtError(f"pairs file {path} does not exist; pass --pairs with a pairs.csv or LFW pairs.txt")
    images_dir = Path(images_dir) if images_dir is not None else path.parent
    if not images_dir.is_dir():
        raise FacecvtError(f"images folder {images_dir} for the pairs in {path} does not exist; "
                           f"pass --images with the folder the pairs are relative to")
    text = path.read_text(encoding="utf-8-sig")
    fmt = detect_format(text)
    if fmt == "lfw":
        pairs, folds = _parse_lfw(text, path, images_dir)
    else:
        pairs, folds = _parse_csv(text, path, images_dir), None
    if not pairs:
        raise FacecvtError(f"{path} holds no pairs; add lines to it")
    _check_exist(pairs, path, " (as .jpg or .png)" if fmt == "lfw" else "")
    return Pairs(pairs=pairs, folds=folds, source=path, format=fmt)


def _parse_label(value: str, path: Path, line: int) -> bool:
    token = value.strip().lower()
    if token in TRUE_LABELS:
        return True
    if token in FALSE_LABELS:
        return False
    raise FacecvtError(f"{path} line {line}: label {value!r} is not 1/0 or true/false; fix the `same` column")


def _parse_csv(text: str, path: Path, images_dir: Path) -> list[tuple[Path, Path, bool]]:
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1) if any(c.strip() for c in row)]
    columns = (0, 1, 2)
    header = [c.strip().lower() for c in rows[0][1]] if rows else []
    if header and {"left", "right", "same"} <= set(header):
        columns = (header.index("left"), header.index("right"), header.index("same"))
        rows = rows[1:]
    pairs = []
    for line, row in rows:
        if len(row) <= max(columns):
            raise FacecvtError(f"{path} line {line}: expected left,right,same, got {','.join(row)!r}")
        left, right, same = (row[c].strip() for c in columns)
        pairs.append((images_dir / left, images_dir / right, _parse_label(same, path, line)))
    return pairs


def _parse_lfw(text: str, path: Path, images_dir: Path) -> tuple[list, list[np.ndarray] | None]:
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    header = [int(v) for v in lines[0][1]]
    n_folds, per_half = (header[0], header[1]) if len(header) == 2 else (1, header[0])
    body = lines[1:]
    expected = n_folds * 2 * per_half
    if len(body) != expected:
        raise FacecvtError(f"{path}: header says {n_folds} folds x 2 x {per_half} pairs = {expected} lines, "
                           f"found {len(body)}; the file is truncated or not an LFW pairs.txt")
    locate = _LfwLocator(images_dir)
    pairs = []
    for line, fields in body:
        if len(fields) == 3:
            name, a, b = fields
            pairs.append((locate(name, a, path, line), locate(name, b, path, line), True))
        elif len(fields) == 4:
            name_a, a, name_b, b = fields
            pairs.append((locate(name_a, a, path, line), locate(name_b, b, path, line), False))
        else:
            raise FacecvtError(f"{path} line {line}: expected `name n1 n2` or `name1 n1 name2 n2`, "
                               f"got {' '.join(fields)!r}")
    fold_size = 2 * per_half
    folds = [np.arange(k * fold_size, (k + 1) * fold_size) for k in range(n_folds)] if n_folds > 1 else None
    return pairs, folds


class _LfwLocator:
    """Maps (name, number) to DIR/name/name_%04d with whichever suffix exists (.jpg first)."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self.cache: dict[tuple[str, int], Path] = {}

    def __call__(self, name: str, number: str, path: Path, line: int) -> Path:
        try:
            key = (name, int(number))
        except ValueError:
            raise FacecvtError(f"{path} line {line}: image number {number!r} is not an integer") from None
        if key not in self.cache:
            stem = self.images_dir / name / f"{name}_{key[1]:04d}"
            found = [stem.with_suffix(s) for s in LFW_SUFFIXES if stem.with_suffix(s).is_file()]
            self.cache[key] = found[0] if found else stem.with_suffix(LFW_SUFFIXES[0])
        return self.cache[key]


def _check_exist(pairs, path: Path, suffix_note: str) -> None:
    images = dict.fromkeys(p for left, right, _ in pairs for p in (left, right))
    missing = [p for p in images if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:SHOW_MISSING])
        more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
        raise FacecvtError(f"{len(missing)} of the {len(images)} images named in {path} are missing{suffix_note}: "
                           f"{shown}{more}; pass --images with the folder they are relative to")
