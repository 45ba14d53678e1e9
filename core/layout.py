"""The lab's dataset layout, checked from file names alone (no image is decoded, torch is not imported): what
``cvae sweep run`` checks before it starts its workers, and what :mod:`core.data` reads.

- ``train/train_img/frame{N}.png`` with ``train/train_label/frame{N}.png``, numeric order;
- ``val/val_img`` with ``val/val_label``;
- ``test/test_img/<i>/``, ``test/test_label/<i>/`` and, where there is ground truth, ``test/test_gt/<i>/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_FRAME_RE = re.compile(r"^frame(\d+)\.png$", re.IGNORECASE)


class DatasetError(ValueError):
    """A dataset that does not follow the lab's layout; the message names the path."""


def list_frames(folder: Path) -> list[Path]:
    """``frame{N}.png`` files of a folder in numeric order.

    Raises:
        DatasetError: the folder is missing, empty, or holds a PNG not named ``frame{N}.png``.
    """
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    numbered = []
    for entry in os.scandir(folder):
        if not entry.name.lower().endswith(".png"):
            continue
        match = _FRAME_RE.match(entry.name)
        if match is None:
            raise DatasetError(f"{folder / entry.name}: expected frame files named frame<N>.png")
        numbered.append((int(match.group(1)), Path(entry.path)))
    if not numbered:
        raise DatasetError(f"{folder}: no frame<N>.png files")
    numbered.sort()
    return [p for _, p in numbered]


def check_numbering(folder: Path) -> None:
    """Frames numbered without a gap or a repeat (``frame0..frame9`` then ``frame11`` is a missing frame 10).

    Raises:
        DatasetError: the folder is unreadable as :func:`list_frames` says, a number is missing between the
            first and the last, or two files carry the same number (``frame7.png``, ``frame007.png``).
    """
    numbers = [int(_FRAME_RE.match(p.name).group(1)) for p in list_frames(folder)]
    for a, b in zip(numbers, numbers[1:], strict=False):
        if a == b:
            same = sorted(p.name for p in folder.iterdir() if (m := _FRAME_RE.match(p.name)) and int(m.group(1)) == a)
            raise DatasetError(f"{folder}: frame number {a} is used more than once ({', '.join(same)})")
    present = set(numbers)
    missing = [n for n in range(numbers[0], numbers[-1] + 1) if n not in present]
    if missing:
        shown = ", ".join(str(n) for n in missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        which = f"frame{missing[0]}.png is" if len(missing) == 1 else f"frames {shown} are"
        raise DatasetError(f"{folder}: frame numbering has a gap: {which} missing (the frames run from "
                           f"frame{numbers[0]}.png to frame{numbers[-1]}.png)")


def check_layout(root: str | os.PathLike) -> None:
    """Check the numbering (:func:`check_numbering`) of every frame folder of the layout that exists:
    ``train/train_img``, ``train/train_label``, ``val/...``, ``test/test_img/<i>``, ``test/test_label/<i>``,
    ``test/test_gt/<i>``. Missing folders are left to :func:`load_split` and :func:`load_test` to report.

    Raises:
        DatasetError: a gap or a repeated number, naming the folder and the frames.
    """
    for folder in frame_folders(root):
        if folder.is_dir():
            check_numbering(folder)


def frame_folders(root: str | os.PathLike) -> list[Path]:
    """The layout's frame folders: ``train/train_img``, ``train/train_label``, ``val/...`` (whether they exist
    or not), then the test sequences' ``test/test_img/<i>``, ``test_label/<i>``, ``test_gt/<i>`` that exist."""
    root = Path(root)
    folders = [root / split / f"{split}_{kind}" for split in ("train", "val") for kind in ("img", "label")]
    for kind in ("test_img", "test_label", "test_gt"):
        base = root / "test" / kind
        if base.is_dir():
            folders += sorted((p for p in base.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return folders


def paired_frames(img_dir: Path, label_dir: Path) -> tuple[list[Path], list[Path]]:
    """The frames of ``img_dir`` in numeric order, and the pose image of the same name in ``label_dir`` for each.

    Raises:
        DatasetError: a folder is missing or unreadable as :func:`list_frames` says, or a frame has no pose image.
    """
    images = list_frames(img_dir)
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: folder not found")
    labels = [label_dir / p.name for p in images]
    for image, label in zip(images, labels, strict=True):
        if not label.is_file():
            raise DatasetError(f"{image}: frame has no pose image {label}")
    return images, labels
