"""Tests of the synthetic dancing-person dataset (core/synth.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from cvae.core import synth
from PIL import Image

SMALL = dict(train_frames=40, val_frames=20, test_sequences=2, test_frames=12, train_video_len=16)
H, W = 64, 128


def _names(n: int) -> set[str]:
    return {f"frame{i}.png" for i in range(n)}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    synth.generate_dataset(root, seed=0, **SMALL)
    return root


def test_layout_counts_and_image_format(dataset: Path) -> None:
    assert {p.name for p in dataset.iterdir()} == {"train", "val", "test", synth.MANIFEST_NAME}
    assert {p.name for p in (dataset / "train").iterdir()} == {"train_img", "train_label"}
    assert {p.name for p in (dataset / "val").iterdir()} == {"val_img", "val_label"}
    assert {p.name for p in (dataset / "test").iterdir()} == {"test_img", "test_label", "test_gt"}
    expected = {
        "train/train_img": 40, "train/train_label": 40, "val/val_img": 20, "val/val_label": 20,
        "test/test_img/0": 1, "test/test_img/1": 1, "test/test_label/0": 12, "test/test_label/1": 12,
        "test/test_gt/0": 12, "test/test_gt/1": 12,
    }  # fmt: skip
    for folder in ("test/test_img", "test/test_label", "test/test_gt"):
        assert {p.name for p in (dataset / folder).iterdir()} == {"0", "1"}
    for folder, n in expected.items():
        assert {p.name for p in (dataset / folder).iterdir()} == _names(n), folder
    pngs = list(dataset.rglob("*.png"))
    assert len(pngs) == sum(expected.values())
    for path in pngs:
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (W, H)), path
    for i in range(2):  # the test input frame is the ground truth's first frame
        first = (dataset / f"test/test_img/{i}/frame0.png").read_bytes()
        assert first == (dataset / f"test/test_gt/{i}/frame0.png").read_bytes()


def test_summary_and_manifest(tmp_path: Path) -> None:
    summary = synth.generate_dataset(tmp_path / "d", seed=3, size=(32, 64), **SMALL)
    assert summary["root"] == str(tmp_path / "d")
    assert (summary["train_frames"], summary["val_frames"], summary["test_sequences"]) == (40, 20, 2)
    assert summary["train_videos"] == 3 and summary["size"] == (32, 64) and not summary["cached"]
    assert summary["frames_written"] == 40 + 20 + 2 * 12 and summary["seconds"] > 0
    manifest = json.loads((tmp_path / "d" / synth.MANIFEST_NAME).read_text())
    assert manifest["format_version"] == synth.FORMAT_VERSION and manifest["complete"]
    assert manifest["args"] == {**SMALL, "seed": 3, "size": [32, 64]}
    with Image.open(tmp_path / "d/val/val_img/frame0.png") as img:
        assert img.size == (64, 32)


def test_deterministic_and_worker_independent(dataset: Path, tmp_path: Path) -> None:
    reference = _files(dataset)
    synth.generate_dataset(tmp_path / "again", seed=0, **SMALL)
    assert _files(tmp_path / "again") == reference
    synth.generate_dataset(tmp_path / "pool", seed=0, workers=2, **SMALL)
    assert _files(tmp_path / "pool") == reference
    synth.generate_dataset(tmp_path / "other", seed=1, **SMALL)
    other = _files(tmp_path / "other")
    assert other.keys() == reference.keys()
    assert all(other[k] != reference[k] for k in reference)


def test_pose_images_are_openpose_style(dataset: Path) -> None:
    for folder in ("train/train_label", "val/val_label", "test/test_label/1"):
        pose = _load(dataset / folder / "frame5.png")
        black = (pose == 0).all(-1)
        assert black.mean() > 0.8, "pose image background must be black"
        assert black[0].all() and black[-1].all() and black[:, 0].all() and black[:, -1].all()
        saturation = pose.max(-1) - pose.min(-1)
        assert (saturation > 150).sum() > 30, "pose image must contain coloured limbs"
        # Limbs of both sides: OpenPose's palette gives the right arm orange/yellow and the left leg blue.
        assert ((pose[..., 0] > 120) & (pose[..., 2] < 60)).any() and (
            (pose[..., 2] > 120) & (pose[..., 0] < 60)
        ).any()


def test_rgb_frames_have_scene_and_dancer(dataset: Path) -> None:
    frame = _load(dataset / "train/train_img/frame0.png")
    assert frame[0].max() > 60 and frame[:, 0].max() > 60, "background must not be black"
    # The dancer covers a good part of the frame and differs from the background.
    background = np.median(frame[0], axis=0)
    assert (np.abs(frame - background).sum(-1) > 60).mean() > 0.05


def test_frames_change_smoothly_within_a_video_and_differ_between_videos(dataset: Path) -> None:
    frames = [_load(dataset / f"train/train_img/frame{i}.png") for i in range(40)]
    within = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(40 - 1) if (i + 1) % 16]
    assert min(within) > 0, "consecutive frames must differ (the dancer moves)"
    assert max(within) < 6, "consecutive frames must be similar"
    # Every training video (frames 0-15, 16-31, 32-39) has its own look: compare the
    # top-left background pixel, which the dancer never reaches.
    corners = [tuple(frames[i][0, 0]) for i in (0, 15, 16, 31, 32, 39)]
    assert corners[0] == corners[1] and corners[2] == corners[3] and corners[4] == corners[5]
    assert len({corners[0], corners[2], corners[4]}) == 3
    across = [np.abs(frames[a] - frames[b]).mean() for a, b in ((15, 16), (31, 32))]
    assert min(across) > 2 * max(within)
    val = _load(dataset / "val/val_img/frame0.png")
    tests = [_load(dataset / f"test/test_gt/{i}/frame0.png") for i in range(2)]
    looks = {tuple(f[0, 0]) for f in (frames[0], frames[16], frames[32], val, *tests)}
    assert len(looks) == 6, "every video must have its own appearance"


@pytest.mark.parametrize("dancers", [1, 2])
def test_shared_dancers_keep_their_look_and_setting_across_videos(tmp_path: Path, dancers: int) -> None:
    """With ``dancers=N`` video v shows dancer v % N (validation: 0, test i: i % N), always in the same look and
    setting; the motion stays every video's own. Without it, the same seed gives the per-video looks above."""
    root = tmp_path / "d"
    synth.generate_dataset(root, seed=0, dancers=dancers, **SMALL)
    firsts = [_load(root / f"train/train_img/frame{i}.png") for i in (0, 16, 32)]
    firsts += [_load(root / "val/val_img/frame0.png")] + [_load(root / f"test/test_gt/{i}/frame0.png") for i in range(2)]
    dancer_of = [0 % dancers, 1 % dancers, 2 % dancers, 0, 0 % dancers, 1 % dancers]
    corners = [tuple(f[0, 0]) for f in firsts]  # the background, which the dancer never reaches
    for a in range(6):
        for b in range(6):
            assert (corners[a] == corners[b]) == (dancer_of[a] == dancer_of[b]), (a, b)
    # Same look, other motion: the first frames of two videos of one dancer still differ (pose, place).
    assert np.abs(firsts[0] - firsts[3]).mean() > 0.5
    assert json.loads((root / synth.MANIFEST_NAME).read_text())["args"]["dancers"] == dancers
    with pytest.raises(ValueError, match="different arguments"):
        synth.generate_dataset(root, seed=0, **SMALL)  # the per-video dataset is another one
    with pytest.raises(ValueError, match="dancers"):
        synth.generate_dataset(tmp_path / "bad", seed=0, dancers=0, **SMALL)


@pytest.mark.parametrize("size", [(64, 128), (32, 64), (64, 64), (96, 40)])
def test_keypoints_stay_inside_the_frame_and_move_smoothly(size: tuple[int, int]) -> None:
    height, width = size
    t = np.arange(2000)
    for video in range(8):
        rng = np.random.default_rng(np.random.SeedSequence(video, spawn_key=(9, video)))
        motion = synth.DancerMotion.sample(rng, size)
        pts = motion.keypoints(t)
        assert pts.shape == (2000, 18, 2)
        assert (pts[..., 0] >= 0).all() and (pts[..., 0] < width).all()
        assert (pts[..., 1] >= 0).all() and (pts[..., 1] < height).all()
        step = np.linalg.norm(np.diff(pts, axis=0), axis=-1)
        assert step.max() < 0.15 * height, "keypoints must move smoothly"
        torso = np.linalg.norm(pts[:, 1] - (pts[:, 8] + pts[:, 11]) / 2, axis=-1).mean()
        assert pts[:, 4].std(0).max() > 0.1 * torso, "the wrists must dance"
        assert np.allclose(motion.keypoints(123), pts[123])


def test_render_frame_is_a_function_of_pose_and_appearance() -> None:
    rng = np.random.default_rng(5)
    motion, look = synth.DancerMotion.sample(rng, (H, W)), synth.Appearance.sample(rng)
    pose = motion.keypoints(17)
    rgb, label = synth.render_frame(pose, look, (H, W))
    rgb2, label2 = synth.render_frame(pose.copy(), look, (H, W))
    assert rgb.tobytes() == rgb2.tobytes() and label.tobytes() == label2.tobytes()
    assert (rgb.mode, rgb.size, label.mode, label.size) == ("RGB", (W, H), "RGB", (W, H))
    assert synth.render_pose(pose, (H, W)).tobytes() == label.tobytes()
    with pytest.raises(ValueError, match="pose"):
        synth.render_frame(pose[:17], look, (H, W))


def test_same_arguments_are_a_cached_no_op(dataset: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}
    began = time.perf_counter()
    summary = synth.generate_dataset(dataset, seed=0, workers=2, progress=True, **SMALL)
    assert time.perf_counter() - began < 0.5
    assert summary["cached"] and summary["frames_written"] == 0
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == before


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"train_frames": 41}, {"size": (32, 64)}, {"train_video_len": 20}, {"test_frames": 13}],
)
def test_different_arguments_are_refused(dataset: Path, change: dict) -> None:
    with pytest.raises(ValueError, match="different arguments"):
        synth.generate_dataset(dataset, **{**SMALL, "seed": 0, **change})


def test_refuses_foreign_data_and_resumes_interrupted_runs(tmp_path: Path) -> None:
    (tmp_path / "foreign" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="refusing"):
        synth.generate_dataset(tmp_path / "foreign", **SMALL)
    # Unrelated content is fine as long as it is not a dataset split.
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "notes.txt").write_text("hi")
    synth.generate_dataset(tmp_path / "mixed", **SMALL)
    assert (tmp_path / "mixed" / "notes.txt").read_text() == "hi"
    # A run that died before finishing is redone rather than taken as a cache hit.
    manifest_path = tmp_path / "mixed" / synth.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "complete": False}))
    missing = tmp_path / "mixed" / "val" / "val_img" / "frame3.png"
    missing.unlink()
    summary = synth.generate_dataset(tmp_path / "mixed", **SMALL)
    assert not summary["cached"] and missing.exists()
    assert json.loads(manifest_path.read_text())["complete"]


def test_progress_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth.generate_dataset(tmp_path / "d", progress=True, **SMALL)
    captured = capsys.readouterr()
    assert captured.out == "" and "84/84" in captured.err


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"train_frames": 0}, "train_frames"),
        ({"train_frames": 2.5}, "train_frames"),
        ({"train_frames": True}, "train_frames"),
        ({"val_frames": 0}, "val_frames"),
        ({"test_sequences": 0}, "test_sequences"),
        ({"test_frames": 1}, "test_frames"),
        ({"size": (0, 128)}, "size"),
        ({"size": (64, -1)}, "size"),
        ({"size": (64,)}, "size"),
        ({"size": (8, 8)}, "size"),
        ({"seed": -1}, "seed"),
        ({"train_video_len": 1}, "train_video_len"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        synth.generate_dataset(tmp_path / "d", **{**SMALL, **kwargs})
    assert not os.path.exists(tmp_path / "d"), "nothing may be written for bad arguments"


def test_shared_backgrounds_are_independent_of_the_dancers(tmp_path: Path) -> None:
    """``backgrounds=N``: one dancer (same clothes) in N settings; training video v shows setting
    (v // dancers) % N, held-out video i setting i % N; the manifest records the option."""
    root = tmp_path / "b"
    synth.generate_dataset(root, seed=0, dancers=1, backgrounds=2, **SMALL)
    firsts = [_load(root / f"train/train_img/frame{i}.png") for i in (0, 16, 32)]
    firsts += [_load(root / "val/val_img/frame0.png")] + [_load(root / f"test/test_gt/{i}/frame0.png") for i in range(2)]
    setting_of = [0, 1, 0, 0, 0, 1]
    corners = [tuple(f[0, 0]) for f in firsts]
    for a in range(6):
        for b in range(6):
            assert (corners[a] == corners[b]) == (setting_of[a] == setting_of[b]), (a, b)
    assert json.loads((root / synth.MANIFEST_NAME).read_text())["args"]["backgrounds"] == 2
    with pytest.raises(ValueError, match="backgrounds"):
        synth.generate_dataset(tmp_path / "bad", seed=0, backgrounds=0, **SMALL)


def test_spotlight_wanders_at_random_and_is_seen_in_every_frame(tmp_path: Path) -> None:
    """The spotlight changes only the lit part of each frame; its centre moves a little every frame, by steps
    that are not a function of the past (they look like independent noise), and stays in the picture."""
    plain, lit = tmp_path / "plain", tmp_path / "lit"
    synth.generate_dataset(plain, seed=0, dancers=1, **SMALL)
    synth.generate_dataset(lit, seed=0, dancers=1, spotlight=True, **SMALL)
    assert json.loads((lit / synth.MANIFEST_NAME).read_text())["args"]["spotlight"] is True
    a, b = _load(plain / "val/val_img/frame5.png"), _load(lit / "val/val_img/frame5.png")
    assert np.array_equal(_load(plain / "val/val_label/frame5.png"), _load(lit / "val/val_label/frame5.png"))
    assert np.abs(a - b).max() > 60, "the light must be visible"
    assert (np.abs(a - b).max(axis=-1) < 2).mean() > 0.1, "and leave part of the frame as it was"
    rng = np.random.default_rng(3)
    light = synth.Spotlight.sample(rng, (H, W))
    path = light.path(4000, rng)
    assert path.shape == (4000, 2)
    steps = np.diff(path, axis=0)
    assert 0 < np.abs(steps).mean() < 0.05 * W, "smooth: small steps"
    assert abs(np.corrcoef(steps[:-1, 0], steps[1:, 0])[0, 1]) < 0.1, "each step drawn afresh"
    assert (path >= 0).all() and (path[:, 0] <= W - 1).all() and (path[:, 1] <= H - 1).all()


def test_lighting_scales_every_video_by_its_own_gain(tmp_path: Path) -> None:
    """``lighting``: one gain per colour channel per video, over the whole frame; pose images untouched."""
    plain, lit = tmp_path / "plain", tmp_path / "lit"
    synth.generate_dataset(plain, seed=0, dancers=1, **SMALL)
    synth.generate_dataset(lit, seed=0, dancers=1, lighting=True, **SMALL)
    assert json.loads((lit / synth.MANIFEST_NAME).read_text())["args"]["lighting"] is True
    ratios = []
    for frame in (0, 5, 16, 20):  # two frames of each of two training videos
        a, b = _load(plain / f"train/train_img/frame{frame}.png"), _load(lit / f"train/train_img/frame{frame}.png")
        assert np.array_equal(_load(plain / f"train/train_label/frame{frame}.png"),
                              _load(lit / f"train/train_label/frame{frame}.png"))
        bright = a > 40
        ratios.append(np.array([np.median(b[..., c][bright[..., c]] / a[..., c][bright[..., c]]) for c in range(3)]))
    assert np.allclose(ratios[0], ratios[1], atol=0.02) and np.allclose(ratios[2], ratios[3], atol=0.02)
    assert np.abs(ratios[0] - ratios[2]).max() > 0.02, "each video its own light"
    assert all(((r > 0.45) & (r < 1.15)).all() for r in ratios)
