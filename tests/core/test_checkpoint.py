"""core/checkpoint.py: what a bad checkpoint file says, a full disk, nested signal deferral, stale temp files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core import checkpoint as ckpt_io
from core.checkpoint import CheckpointError
from core.model import CVAE, ModelDims

DIMS = ModelDims(16, 8, 4, 16)


def cvae_state_dict(dims: ModelDims = DIMS) -> dict[str, torch.Tensor]:
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
