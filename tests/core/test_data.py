"""Tests of the dataset reader (core/data.py): layout, decoding, the frame cache, errors, clip batches."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cvae.core import data
from cvae.core.data import ClipBatches, DatasetError, FrameSequence, load_split, load_test, num_clips
from PIL import Image
from torchvision import transforms

SIZE = (32, 64)
CPU = torch.device("cpu")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), "RGB").save(path)


def _solid(value: int, hw: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full((*hw, 3), value, dtype=np.uint8)


def _numbered_split(root: Path, n: int, split: str = "train") -> Path:
    """frame0..frame{n-1}: image pixels = 20 * N, pose pixels = 250 - 20 * N (written in reverse order)."""
    for i in reversed(range(n)):
        _png(root / split / f"{split}_img" / f"frame{i}.png", _solid(20 * i))
        _png(root / split / f"{split}_label" / f"frame{i}.png", _solid(250 - 20 * i))
    return root


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty on-disk cache folder and an empty in-process cache, for this test only."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CVAE_CACHE_DIR", str(cache))
    monkeypatch.setattr(data, "_MEMORY", {})
    return cache


@pytest.fixture
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny dataset."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))


# -- load_split / load_test ------------------------------------------------------------------------------


@pytest.mark.parametrize("split, n", [("train", 96), ("val", 24)])
def test_load_split_shapes_and_dtype(tiny_dataset: Path, split: str, n: int) -> None:
    seq = load_split(tiny_dataset, split, SIZE)
    assert len(seq) == n
    for tensor in (seq.frames, seq.poses):
        assert tensor.dtype == torch.uint8
        assert tuple(tensor.shape) == (n, 3, *SIZE)


def test_load_split_values_equal_the_pngs(tiny_dataset: Path) -> None:
    seq = load_split(tiny_dataset, "val", SIZE)
    for i in (0, 23):
        img = np.asarray(Image.open(tiny_dataset / f"val/val_img/frame{i}.png").convert("RGB"))
        pose = np.asarray(Image.open(tiny_dataset / f"val/val_label/frame{i}.png").convert("RGB"))
        assert torch.equal(seq.frames[i], torch.from_numpy(img.transpose(2, 0, 1).copy()))
        assert torch.equal(seq.poses[i], torch.from_numpy(pose.transpose(2, 0, 1).copy()))


def test_frames_are_in_numeric_order(tmp_path: Path, fresh_cache: Path) -> None:
    root = _numbered_split(tmp_path / "ds", 12)
    seq = load_split(root, "train", SIZE)
    for i in range(12):  # frame10 and frame11 come after frame9, not after frame1
        assert bool((seq.frames[i] == 20 * i).all()), i
        assert bool((seq.poses[i] == 250 - 20 * i).all()), i


def test_load_test_reads_every_sequence(tiny_dataset: Path) -> None:
    tests = load_test(tiny_dataset, SIZE, expected_len=24)
    assert [t.index for t in tests] == [0, 1]
    for t in tests:
        assert (t.first_frame.dtype, tuple(t.first_frame.shape)) == (torch.uint8, (3, *SIZE))
        assert (t.poses.dtype, tuple(t.poses.shape)) == (torch.uint8, (24, 3, *SIZE))


@pytest.mark.parametrize("source_hw", [(64, 128), (50, 90), (16, 32), (32, 64)])
def test_resize_equals_lab_transform(tmp_path: Path, fresh_cache: Path, source_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*source_hw, 3), dtype=np.uint8)
    root = tmp_path / "ds"
    _png(root / "train/train_img/frame0.png", image)
    _png(root / "train/train_label/frame0.png", image[::-1].copy())
    seq = load_split(root, "train", SIZE)
    lab = transforms.Compose([transforms.Resize(SIZE), transforms.ToTensor()])
    for got, path in ((seq.frames[0], "train/train_img/frame0.png"), (seq.poses[0], "train/train_label/frame0.png")):
        with Image.open(root / path) as img:
            expected = (lab(img.convert("RGB")) * 255).round().to(torch.uint8)
        assert torch.equal(got, expected)


# -- the frame cache -------------------------------------------------------------------------------------


def test_second_load_is_served_from_disk_cache(
    tiny_dataset: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_split(tiny_dataset, "val", SIZE)
    assert len(list(fresh_cache.glob("*.pt"))) == 2  # frames and poses

    def no_decode(path: Path, size: tuple[int, int]) -> np.ndarray:
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(data, "_MEMORY", {})
    monkeypatch.setattr(data, "_decode", no_decode)
    second = load_split(tiny_dataset, "val", SIZE)
    assert torch.equal(second.frames, first.frames) and torch.equal(second.poses, first.poses)


def test_cache_is_keyed_by_frame_size(tiny_dataset: Path, fresh_cache: Path) -> None:
    small = load_split(tiny_dataset, "val", (16, 32))
    assert tuple(small.frames.shape[-2:]) == (16, 32)
    assert tuple(load_split(tiny_dataset, "val", SIZE).frames.shape[-2:]) == SIZE
    assert len(list(fresh_cache.glob("*.pt"))) == 4


def _counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = data._decode

    def counting(path: Path, size: tuple[int, int]) -> np.ndarray:
        calls.append(Path(path))
        return real(path, size)

    monkeypatch.setattr(data, "_decode", counting)
    return calls


@pytest.mark.parametrize("new_value", [240, None], ids=["rewritten", "touched"])
def test_changed_png_invalidates_the_cache(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, new_value: int | None
) -> None:
    root = _numbered_split(tmp_path / "ds", 12)
    load_split(root, "train", SIZE)
    target = root / "train/train_img/frame3.png"
    stat = target.stat()
    if new_value is not None:
        _png(target, _solid(new_value))
    later = stat.st_mtime_ns + 5_000_000_000
    os.utime(target, ns=(later, later))

    calls = _counting_decode(monkeypatch)
    seq = load_split(root, "train", SIZE)  # the in-process cache is left as is: it must miss too
    assert sorted(p.name for p in calls) == sorted(f"frame{i}.png" for i in range(12))  # images only
    assert all(p.parent.name == "train_img" for p in calls)
    assert bool((seq.frames[3] == (new_value if new_value is not None else 60)).all())
    assert bool((seq.frames[4] == 80).all())
    assert len(list(fresh_cache.glob("*.pt"))) == 3  # old images, new images, poses


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _numbered_split(tmp_path / "ds", 4)
    first = load_split(root, "train", SIZE)
    for path in fresh_cache.glob("*.pt"):
        path.write_bytes(b"not a tensor")
    monkeypatch.setattr(data, "_MEMORY", {})
    second = load_split(root, "train", SIZE)
    assert torch.equal(second.frames, first.frames) and torch.equal(second.poses, first.poses)


# -- bad datasets ----------------------------------------------------------------------------------------


def _rm(rel: str) -> Callable[[Path], Path]:
    def mutate(root: Path) -> Path:
        target = root / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return target

    return mutate


def _garbage(rel: str) -> Callable[[Path], Path]:
    def mutate(root: Path) -> Path:
        (root / rel).write_bytes(b"\x00garbage, not a PNG" * 10)
        return root / rel

    return mutate


def _truncated(rel: str) -> Callable[[Path], Path]:
    def mutate(root: Path) -> Path:
        blob = (root / rel).read_bytes()
        (root / rel).write_bytes(blob[: len(blob) // 2])
        return root / rel

    return mutate


def _extra(rel: str) -> Callable[[Path], Path]:
    def mutate(root: Path) -> Path:
        shutil.copy(root / "train/train_img/frame0.png", root / rel)
        return root / rel

    return mutate


def _missing_label(root: Path) -> Path:
    (root / "train/train_label/frame5.png").unlink()
    return root / "train/train_img/frame5.png"


def _no_change(rel: str) -> Callable[[Path], Path]:
    return lambda root: root / rel


TRAIN = lambda root: load_split(root, "train", SIZE)  # noqa: E731
VAL = lambda root: load_split(root, "val", SIZE)  # noqa: E731
TEST = lambda root: load_test(root, SIZE, expected_len=24)  # noqa: E731
TEST_630 = lambda root: load_test(root, SIZE, expected_len=630)  # noqa: E731


@pytest.mark.parametrize(
    "mutate, load",
    [
        pytest.param(_rm("train/train_img"), TRAIN, id="missing-train_img"),
        pytest.param(_rm("train/train_label"), TRAIN, id="missing-train_label"),
        pytest.param(_rm("val/val_label"), VAL, id="missing-val_label"),
        pytest.param(_missing_label, TRAIN, id="frame-without-label"),
        pytest.param(_garbage("train/train_img/frame3.png"), TRAIN, id="garbage-png"),
        pytest.param(_truncated("train/train_img/frame3.png"), TRAIN, id="truncated-png"),
        pytest.param(_garbage("val/val_label/frame2.png"), VAL, id="garbage-pose-png"),
        pytest.param(_extra("train/train_img/image7.png"), TRAIN, id="badly-named-png"),
        pytest.param(_extra("train/train_img/frame_7.png"), TRAIN, id="badly-named-png-underscore"),
        pytest.param(_no_change("test/test_label/0"), TEST_630, id="wrong-pose-count"),
        pytest.param(_rm("test/test_img"), TEST, id="missing-test_img"),
        pytest.param(_rm("test/test_label/1"), TEST, id="missing-test_label-sequence"),
    ],
)
def test_bad_dataset_raises_dataset_error_naming_path(
    dataset_copy: Path, mutate: Callable[[Path], Path], load: Callable[[Path], object]
) -> None:
    offending = mutate(dataset_copy)
    with pytest.raises(DatasetError) as info:
        load(dataset_copy)
    assert str(offending) in str(info.value)


def test_empty_image_folder_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "ds/train/train_img"
    folder.mkdir(parents=True)
    (tmp_path / "ds/train/train_label").mkdir()
    with pytest.raises(DatasetError) as info:
        load_split(tmp_path / "ds", "train", SIZE)
    assert str(folder) in str(info.value)


def test_non_png_files_are_ignored(tmp_path: Path, fresh_cache: Path) -> None:
    root = _numbered_split(tmp_path / "ds", 3)
    (root / "train/train_img/notes.txt").write_text("ignored")
    assert len(load_split(root, "train", SIZE)) == 3


# -- clips -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, clip_len, fraction, expected",
    [(96, 16, 1.0, 6), (96, 16, 0.4, 2), (100, 16, 1.0, 6), (15, 16, 1.0, 0), (630, 16, 0.5, 19),
     (1600, 16, 0.3, 30), (10, 3, 0.99, 3)],
)  # fmt: skip
def test_num_clips_follows_lab_rule(n: int, clip_len: int, fraction: float, expected: int) -> None:
    assert num_clips(n, clip_len, fraction) == expected == int(n * fraction) // clip_len


@pytest.fixture(scope="module")
def train_seq(tiny_dataset: Path) -> FrameSequence:
    return load_split(tiny_dataset, "train", SIZE)


def _batches(seq: FrameSequence, clip_len: int, batch: int, fraction: float = 1.0, *, shuffle: bool = False,
             augment: bool = False) -> ClipBatches:
    return ClipBatches(seq, clip_len, batch, fraction, shuffle=shuffle, augment=augment, crop_scale=(0.08, 1.0),
                       device=CPU)  # fmt: skip


@pytest.mark.parametrize(
    "clip_len, batch, fraction, expected_len",
    [(16, 2, 1.0, 3), (16, 4, 1.0, 1), (16, 2, 0.4, 1), (8, 5, 1.0, 2), (16, 7, 1.0, 0)],
)
def test_clip_batches_shapes_range_and_len(
    train_seq: FrameSequence, clip_len: int, batch: int, fraction: float, expected_len: int
) -> None:
    batches = _batches(train_seq, clip_len, batch, fraction)
    assert len(batches) == expected_len
    got = list(batches)
    assert len(got) == expected_len
    for frames, poses in got:
        for x in (frames, poses):
            assert x.dtype == torch.float32
            assert tuple(x.shape) == (batch, clip_len, 3, *SIZE)
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_unshuffled_clip_k_is_frames_kT_to_k1T(train_seq: FrameSequence) -> None:
    T, B = 16, 2
    for b, (frames, poses) in enumerate(_batches(train_seq, T, B)):
        for j in range(B):
            k = b * B + j
            assert torch.equal(frames[j], train_seq.frames[k * T : (k + 1) * T].float() / 255)
            assert torch.equal(poses[j], train_seq.poses[k * T : (k + 1) * T].float() / 255)


def test_shuffled_epoch_visits_every_clip_once_and_is_seeded(train_seq: FrameSequence) -> None:
    T = 16
    clips = [train_seq.frames[k * T : (k + 1) * T].float() / 255 for k in range(6)]

    def epoch() -> list[int]:
        order = []
        for frames, _ in _batches(train_seq, T, 1, shuffle=True):
            order += [k for k, clip in enumerate(clips) if torch.equal(frames[0], clip)]
        return order

    torch.manual_seed(3)
    first = epoch()
    torch.manual_seed(3)
    assert epoch() == first
    assert sorted(first) == list(range(6))


def _constant_sequence(n: int = 8) -> FrameSequence:
    """n identical frames, each pose identical to its frame, of a non-symmetric random image."""
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, *SIZE), dtype=np.uint8))
    frames = image.expand(n, -1, -1, -1).clone()
    return FrameSequence(frames, frames.clone())


def _augmented(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return next(iter(_batches(_constant_sequence(), 4, 2, augment=True)))


def test_augmentation_is_identical_over_a_clip_and_its_poses() -> None:
    frames, poses = _augmented(0)
    assert tuple(frames.shape) == (2, 4, 3, *SIZE)
    assert torch.equal(frames, poses)
    for clip in frames:
        for t in range(1, clip.shape[0]):
            assert torch.equal(clip[t], clip[0])


def test_augmentation_changes_the_frames() -> None:
    frames, _ = _augmented(0)
    original = _constant_sequence().frames[0].float() / 255
    assert not torch.allclose(frames[0, 0], original)


def test_augmentation_is_drawn_per_clip() -> None:
    frames, _ = _augmented(0)
    assert not torch.allclose(frames[0, 0], frames[1, 0])


def test_augmentation_is_reproducible_with_a_fixed_seed() -> None:
    f1, p1 = _augmented(5)
    f2, p2 = _augmented(5)
    assert torch.equal(f1, f2) and torch.equal(p1, p2)
    f3, _ = _augmented(6)
    assert not torch.equal(f1, f3)
