"""The lab's dataset layout, read once into uint8 tensors.

Layout (the lab's ``Dataset_Dance``; :mod:`core.layout` checks it from the file names):

- ``train/train_img/frame{N}.png`` with ``train/train_label/frame{N}.png``, numeric order;
- ``val/val_img`` with ``val/val_label`` (one 630-frame video);
- ``test/test_img/<i>/`` (the first frame) with ``test/test_label/<i>/`` (630 poses), i = 0, 1, ...

Every PNG is decoded and resized once (PIL bilinear, exactly the lab's ``transforms.Resize`` on a PIL
image, so the cached uint8 values are the lab's ``ToTensor()`` values times 255) and cached on disk, keyed
by the file list, sizes, modification times and the frame size; any change to the files rebuilds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cvae.core.checkpoint import atomic_save
from cvae.core.layout import DatasetError, list_frames, paired_frames
from PIL import Image, UnidentifiedImageError

log = logging.getLogger("cvae")

CACHE_FORMAT = 1
ASPECT_TOLERANCE = 0.05
"""A decode size whose width/height ratio is further than this share from the files' distorts them."""


@dataclass(frozen=True)
class FrameSequence:
    """Frames and their pose images as uint8 tensors of shape (N, 3, H, W)."""

    frames: torch.Tensor
    poses: torch.Tensor
    key: str | None = None
    """The decoded frames' cache key (files, sizes, modification times, frame size), when read from disk."""

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device) -> FrameSequence:
        """The sequence on ``device`` (on a GPU the whole uint8 dataset fits: 12 KiB per 32x64 frame pair)."""
        return FrameSequence(self.frames.to(device), self.poses.to(device), self.key)


def default_cache_dir() -> Path:
    """``$CVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cvae``, else ``~/.cache/cvae``."""
    if os.environ.get("CVAE_CACHE_DIR"):
        return Path(os.environ["CVAE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "cvae"


def size_problems(paths: list[Path], size: tuple[int, int]) -> list[str]:
    """What is odd about the sizes of ``paths``, to be decoded at ``size`` (H, W) (see :func:`_describe_sizes`),
    from the PNG headers alone: ``cvae data check`` reports it as a problem.

    Raises:
        DatasetError: a file cannot be read as an image.
    """
    sizes = {}
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes[path] = (im.height, im.width)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DatasetError(f"{path}: unreadable image ({err})") from None
    return _describe_sizes(sizes, size)


def _describe_sizes(sizes: dict[Path, tuple[int, int]], size: tuple[int, int]) -> list[str]:
    """The files of one folder whose (H, W) differs from the folder's common size (named), and a decode
    ``size`` of another shape than the files (resizing distorts them). The lab's loader resizes every file to
    its frame size whatever it is, so training accepts all of this, with a warning when it decodes the files."""
    if not sizes:
        return []
    (common, count), = Counter(sizes.values()).most_common(1)
    problems = []
    odd = [p for p, hw in sizes.items() if hw != common]
    if odd:
        shown = ", ".join(f"{p.name} is {sizes[p][0]}x{sizes[p][1]}" for p in odd[:3])
        more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
        problems.append(f"{odd[0].parent}: {shown}{more}, not {common[0]}x{common[1]} like the other {count} "
                        f"frame(s); every frame is resized to {size[0]}x{size[1]}")
    aspect, target = common[1] / common[0], size[1] / size[0]
    if abs(target / aspect - 1) > ASPECT_TOLERANCE:
        problems.append(f"{next(iter(sizes)).parent}: frames of {common[0]}x{common[1]} (width/height {aspect:.2f}) "
                        f"are resized to frame_H x frame_W = {size[0]}x{size[1]} (width/height {target:.2f}): "
                        "the picture is distorted")
    return problems


_SAID: set[str] = set()
"""Size warnings already given in this process, without their folder: a distortion is said once, not once
for every folder of frames and poses."""


def _warn_sizes(sizes: dict[Path, tuple[int, int]], size: tuple[int, int]) -> None:
    for problem in _describe_sizes(sizes, size):
        what = problem.split(": ", 1)[1]
        if what not in _SAID:
            _SAID.add(what)
            log.warning("warning: %s", problem)


def _decode(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The frame resized to ``size``, and its own (H, W)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            own = (rgb.height, rgb.width)
            if rgb.size != (size[1], size[0]):
                # PIL's bilinear filter is what torchvision's Resize uses on PIL images.
                rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1), own
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"{path}: unreadable image ({err})") from None


def cache_key(paths: list[Path], size: tuple[int, int]) -> str:
    digest = hashlib.sha256(f"cvae-frames/{CACHE_FORMAT}/{size[0]}x{size[1]}".encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


_MEMORY: dict[str, torch.Tensor] = {}
"""Decoded tensors already loaded in this process (a sweep worker runs many trials on the same data)."""


def decode_frames(paths: list[Path], size: tuple[int, int], *, workers: int = 4,
                  cache_dir: str | os.PathLike | None = None, key: str | None = None) -> torch.Tensor:
    """Decode PNGs to a (N, 3, H, W) uint8 tensor, through the in-process and on-disk caches.

    ``key``: the files' :func:`cache_key`, when the caller has it already.

    Raises:
        DatasetError: a file cannot be read as an image.
    """
    key = key or cache_key(paths, size)
    if key in _MEMORY:
        return _MEMORY[key]
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_root / f"{key}.pt"
    if cache_file.is_file():
        try:
            tensor = torch.load(cache_file, weights_only=True, mmap=True)
            if tensor.dtype == torch.uint8 and tuple(tensor.shape) == (len(paths), 3, *size):
                _MEMORY[key] = tensor
                return tensor
        except Exception:  # noqa: BLE001 - a truncated or foreign cache file is rebuilt, never trusted
            pass
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(pool.map(lambda p: _decode(p, size), paths))
    # Each file's own size is known here at no cost: odd ones are said when the files are decoded (later runs
    # read the cache, which a change to any file rebuilds).
    _warn_sizes({p: own for p, (_, own) in zip(paths, decoded, strict=True)}, size)
    tensor = torch.from_numpy(np.stack([array for array, _ in decoded]))
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        atomic_save(tensor, cache_file)
    except OSError:
        pass  # a read-only cache location only costs the next run a re-decode
    _MEMORY[key] = tensor
    return tensor


def load_split(root: str | os.PathLike, split: str, size: tuple[int, int], *, workers: int = 4,
               cache_dir: str | os.PathLike | None = None) -> FrameSequence:
    """Frames and poses of ``train`` or ``val`` (``<root>/<split>/<split>_img`` + ``_label``)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, not {split!r}")
    base = Path(root) / split
    images, labels = paired_frames(base / f"{split}_img", base / f"{split}_label")
    key = cache_key(images, size)
    return FrameSequence(
        decode_frames(images, size, workers=workers, cache_dir=cache_dir, key=key),
        decode_frames(labels, size, workers=workers, cache_dir=cache_dir),
        key,
    )


@dataclass(frozen=True)
class TestSequence:
    """One test sequence: its index, first frame (3, H, W) and poses (T, 3, H, W), uint8."""

    index: int
    first_frame: torch.Tensor
    poses: torch.Tensor
    ground_truth: torch.Tensor | None = None
    """(T, 3, H, W) frames from ``test/test_gt/<i>/`` when the dataset has them (the generated one does;
    the lab's does not)."""


def load_test(root: str | os.PathLike, size: tuple[int, int], *, expected_len: int = 630, workers: int = 4,
              cache_dir: str | os.PathLike | None = None) -> list[TestSequence]:
    """Every test sequence present: ``test/test_img/<i>/`` (first frame) + ``test/test_label/<i>/``, and the
    ground truth ``test/test_gt/<i>/`` where it exists.

    Raises:
        DatasetError: missing folders, a sequence without poses, a pose count other than expected_len, or
            ground truth of another length than the poses.
    """
    img_root = Path(root) / "test" / "test_img"
    label_root = Path(root) / "test" / "test_label"
    if not img_root.is_dir():
        raise DatasetError(f"{img_root}: folder not found")
    indices = sorted(int(p.name) for p in img_root.iterdir() if p.is_dir() and p.name.isdigit())
    if not indices:
        raise DatasetError(f"{img_root}: no sequence folders 0, 1, ...")
    sequences = []
    for i in indices:
        first = list_frames(img_root / str(i))[0]
        poses = list_frames(label_root / str(i))
        if len(poses) != expected_len:
            raise DatasetError(f"{label_root / str(i)}: {len(poses)} pose frames, expected {expected_len}")
        truth = None
        gt_dir = Path(root) / "test" / "test_gt" / str(i)
        if gt_dir.is_dir():
            gt = list_frames(gt_dir)
            if len(gt) != len(poses):
                raise DatasetError(f"{gt_dir}: {len(gt)} ground-truth frames for {len(poses)} poses")
            truth = decode_frames(gt, size, workers=workers, cache_dir=cache_dir)
        sequences.append(
            TestSequence(
                i,
                decode_frames([first], size, workers=1, cache_dir=cache_dir)[0],
                decode_frames(poses, size, workers=workers, cache_dir=cache_dir),
                truth,
            )
        )
    return sequences


def num_clips(n_frames: int, clip_len: int, fraction: float) -> int:
    """The lab's dataset length: ``int(n_frames * fraction) // clip_len`` non-overlapping clips."""
    return int(n_frames * fraction) // clip_len


def clips_of(video: FrameSequence, clip_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A video cut into its non-overlapping ``clip_len``-frame clips: (n, clip_len, 3, H, W) frames and poses.

    The validation rollout and its baselines (:mod:`core.baselines`) both use this cut, so they score the same
    frames.
    """
    n = num_clips(len(video), clip_len, 1.0)
    return (video.frames[: n * clip_len].unflatten(0, (n, clip_len)),
            video.poses[: n * clip_len].unflatten(0, (n, clip_len)))


def to_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] on ``device`` (pinned, asynchronous copies from the host to CUDA)."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True).float().div_(255)
    return x.to(device).float().div_(255)


class ClipBatches:
    """Batches of training clips from a :class:`FrameSequence`, as (frames, poses) float tensors.

    Clip k covers frames ``[k*T, (k+1)*T)``, the lab's non-overlapping cut; the last incomplete batch is
    dropped (the lab's ``drop_last=True``). Shuffling and augmentation draw from torch's global RNG, which
    the trainer checkpoints, so a resumed epoch sees the same batches.
    """

    def __init__(self, seq: FrameSequence, clip_len: int, batch_size: int, fraction: float, *,
                 shuffle: bool, augment: bool, crop_scale: tuple[float, float], device: torch.device) -> None:
        self.seq = seq
        self.clip_len = clip_len
        self.batch_size = batch_size
        self.n_clips = num_clips(len(seq), clip_len, fraction)
        self.shuffle = shuffle
        self.device = device
        self.transform = None
        if augment:
            from torchvision.transforms import v2

            size = tuple(seq.frames.shape[-2:])
            self.transform = v2.Compose(
                [v2.RandomResizedCrop(size, scale=crop_scale, antialias=True), v2.RandomHorizontalFlip(0.5)]
            )

    def __len__(self) -> int:
        return self.n_clips // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.n_clips) if self.shuffle else torch.arange(self.n_clips)
        steps = torch.arange(self.clip_len)
        for b in range(len(self)):
            clips = order[b * self.batch_size : (b + 1) * self.batch_size]
            idx = clips[:, None] * self.clip_len + steps  # (B, T) frame indices
            frames = to_float(self.seq.frames[idx], self.device)
            poses = to_float(self.seq.poses[idx], self.device)
            if self.transform is not None:
                frames, poses = self._augment(frames, poses)
            yield frames, poses

    def _augment(self, frames: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        out_f, out_p = [], []
        for f, p in zip(frames, poses, strict=True):
            # One call per clip: v2 draws the crop and flip once and applies them to every frame and pose.
            tf, tp = self.transform(tv_tensors.Video(f), tv_tensors.Video(p))
            out_f.append(tf.as_subclass(torch.Tensor))
            out_p.append(tp.as_subclass(torch.Tensor))
        return torch.stack(out_f), torch.stack(out_p)
