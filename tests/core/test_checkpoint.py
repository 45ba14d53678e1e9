"""core/checkpoint.py: what a bad checkpoint file says, a full disk, nested signal deferral, stale temp files."""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from cvae.core import checkpoint as ckpt_io
from cvae.core.checkpoint import CheckpointError
from cvae.core.config import ModelConfig
from cvae.core.model import CVAE

DIMS = ModelConfig(16, 8, 4, 16)


def cvae_state_dict(dims: ModelConfig = DIMS) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return CVAE(dims).state_dict()


# -- load: files that are not a cVAE checkpoint ------------------------------------------------------------


def test_a_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("epoch 3 looked good\n")
    with pytest.raises(CheckpointError) as info:
        ckpt_io.load(path)
    assert str(info.value) == (f"{path}: not a PyTorch checkpoint (no torch.save zip archive or pickle; it starts "
                               "with 'epoch 3 looked good')")


def test_an_empty_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: empty file, not a checkpoint$"):
        ckpt_io.load(path)


def test_a_truncated_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": cvae_state_dict()}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError) as info:
        ckpt_io.load(path)
    assert str(info.value).startswith(f"{path}: cannot read checkpoint (")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, expected", [
    ({"state_dict": {}}, "'state_dict' is empty: the checkpoint holds no weights"),
    ({"state_dict": "weights.bin"}, "'state_dict' is a str, not a mapping of parameter names to tensors"),
    ({"state_dict": [torch.ones(2)]}, "'state_dict' is a list, not a mapping of parameter names to tensors"),
    ({"state_dict": {"w": 3.0}}, "'state_dict' entry 'w' is a float, not a tensor"),
    ({"state_dict": {1: torch.ones(2)}}, "'state_dict' has a key 1 that is not a parameter name"),
    ({"weights": {"w": torch.ones(2)}}, "not a cVAE checkpoint (no 'state_dict' key)"),
    ([torch.ones(2)], "not a cVAE checkpoint (no 'state_dict' key)"),
], ids=["empty", "string", "list", "float-value", "int-key", "no-state_dict", "not-a-dict"])
def test_a_checkpoint_without_a_state_dict_of_tensors_is_refused(tmp_path: Path, content, expected: str) -> None:
    path = tmp_path / "odd.ckpt"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        ckpt_io.load(path)
    assert str(info.value) == f"{path}: {expected}"


def test_another_models_state_dict_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet.ckpt"
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict()
    torch.save({"state_dict": other}, path)
    state_dict = ckpt_io.load(path)["state_dict"]
    with pytest.raises(CheckpointError) as info:
        ckpt_io.state_dict_dims(state_dict, path)
    message = str(info.value)
    assert message.startswith(f"{path}: the state_dict is not this cVAE's: ")
    n_keys = len(CVAE(DIMS).state_dict())
    assert f"{n_keys} missing key(s) (frame_transformation." in message
    assert "7 unexpected key(s) (0.weight, 0.bias, 1.weight, ... (4 more))" in message
    assert "\n" not in message


def test_load_weights_names_the_keys_and_shapes_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    model = CVAE(DIMS)
    good = cvae_state_dict()
    extra = {**good, "head.weight": torch.ones(2)}
    with pytest.raises(CheckpointError, match=r"x\.ckpt: the state_dict is not this cVAE's: 1 unexpected key\(s\) "
                                              r"\(head\.weight\)$"):
        ckpt_io.load_weights(model, extra, path)
    fewer = {k: v for k, v in good.items() if k != "Decoder_Fusion.5.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \(Decoder_Fusion\.5\.bias\)$"):
        ckpt_io.load_weights(model, fewer, path)
    reshaped = {**good, "Decoder_Fusion.5.bias": torch.ones(3)}
    with pytest.raises(CheckpointError, match=r"entry 'Decoder_Fusion\.5\.bias' has shape \(3,\), the model's is "
                                              r"\(16,\)$"):
        ckpt_io.load_weights(model, reshaped, path)
    ckpt_io.load_weights(model, good, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())


# -- atomic_save on a full disk ----------------------------------------------------------------------------


def test_a_full_disk_during_a_save_is_enospc_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    """torch's zip writer hides the errno (``RuntimeError: [enforce fail at inline_container.cc:672] . unexpected
    pos``): next to no free space right after the failure is taken for a full disk."""
    path = tmp_path / "last.ckpt"
    ckpt_io.atomic_save({"state_dict": {"w": torch.ones(3)}}, path)

    def full_save(obj, fh):
        fh.write(b"part of a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    monkeypatch.setattr(ckpt_io.torch, "save", full_save)
    monkeypatch.setattr(ckpt_io.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError) as info:
        ckpt_io.atomic_save({"state_dict": {"w": torch.zeros(3)}}, path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert str(info.value) == f"[Errno 28] No space left on device: cannot write checkpoint: '{path}'"
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temporary file is gone
    assert torch.equal(ckpt_io.load(path)["state_dict"]["w"], torch.ones(3))


def test_a_failed_save_with_room_left_keeps_its_own_error(tmp_path: Path, monkeypatch) -> None:
    def broken_save(obj, fh):
        raise RuntimeError("something else")

    monkeypatch.setattr(ckpt_io.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="something else"):
        ckpt_io.atomic_save({"w": torch.ones(1)}, tmp_path / "a.ckpt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("numel", [1_000_000, 70_000], ids=["4MB", "280kB"])
def test_a_really_full_disk_is_enospc_and_leaves_no_temporary_file(full_disk_dir: Path, numel: int) -> None:
    path = full_disk_dir / "last.ckpt"
    ckpt_io.atomic_save({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(OSError) as info:
        ckpt_io.atomic_save({"state_dict": {"w": torch.zeros(numel)}}, path)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno 28] No space left on device: cannot write checkpoint: '{path}'"
    assert sorted(p.name for p in full_disk_dir.iterdir()) == ["last.ckpt"]
    assert torch.equal(ckpt_io.load(path)["state_dict"]["w"], torch.ones(3))


# -- signals_deferred --------------------------------------------------------------------------------------


def test_nested_deferral_delivers_a_signal_only_when_the_outer_block_ends() -> None:
    seen: list[str] = []

    def handler(signum, frame):
        seen.append("handler")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with ckpt_io.signals_deferred():
            with ckpt_io.signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                seen.append("inner body")
            seen.append("after inner")
            with ckpt_io.signals_deferred():
                seen.append("second inner")
            seen.append("outer body done")
        seen.append("after outer")
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == ["inner body", "after inner", "second inner", "outer body done", "handler", "after outer"]


def test_a_deferred_signal_replaces_an_exception_leaving_the_block() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt), ckpt_io.signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("the block failed")
        with pytest.raises(ValueError, match="no signal"), ckpt_io.signals_deferred():
            raise ValueError("no signal")
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- stale temporary files ---------------------------------------------------------------------------------


def test_stale_temporaries_match_atomic_saves_names_only(tmp_path: Path, monkeypatch) -> None:
    # Real leftovers: saves killed after writing part of the file (a KeyboardInterrupt here would clean up).
    real_mkstemp = ckpt_io.tempfile.mkstemp
    left: list[str] = []

    def mkstemp_and_keep(**kw):
        fd, name = real_mkstemp(**kw)
        left.append(name)
        return fd, name

    monkeypatch.setattr(ckpt_io.tempfile, "mkstemp", mkstemp_and_keep)
    for name in ("last.ckpt", "best.ckpt", "epoch=12.ckpt"):
        ckpt_io.atomic_save({"w": torch.ones(10)}, tmp_path / name)
    monkeypatch.undo()
    for name in left:  # what a SIGKILL between writing and the rename leaves
        Path(name).write_bytes(b"x" * 1000)
    keep = [".last.ckpt.tmp", ".last.ckpt.abcdefgh.tmp.bak", ".notes.txt.abcdefgh.tmp", "last.ckpt.abcdefgh.tmp",
            ".last.ckpt.ABCDEFGH.tmp", ".last.ckpt.abc.tmp", "metrics.tmp", ".epoch=x.ckpt.abcdefgh.tmp"]
    for name in keep:
        (tmp_path / name).write_text("mine")
    (tmp_path / ".best.ckpt.zzzzzzzz.tmp").mkdir()  # a folder, whatever its name
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".last.ckpt.abcdefgh.tmp").write_text("below save_root")
    assert ckpt_io.stale_temporaries(tmp_path) == sorted(Path(p) for p in left)
    assert ckpt_io.remove_stale_temporaries(tmp_path) == (3, 3000)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*keep, "last.ckpt", "best.ckpt", "epoch=12.ckpt", ".best.ckpt.zzzzzzzz.tmp", "sub"])
    assert ckpt_io.remove_stale_temporaries(tmp_path / "missing") == (0, 0)
