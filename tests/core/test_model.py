"""The model against the lab's specification: keys, shapes, parameter counts, and the arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cvae.core.config import ModelConfig
from cvae.core.model import CVAE, dims_from_state_dict
from cvae.core.rollout import rollout
from cvae.core.trainer import forward_clip, memory_format
from torch.nn import functional as F


def _load_reference():
    """benchmarks/reference.py, the lab's protocol written straight (not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reference.py"
    spec = importlib.util.spec_from_file_location("lab_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_reference = _load_reference()
lab_clip_forward, lab_rollout = _reference.lab_clip_forward, _reference.lab_rollout

KEYS_FILE = Path(__file__).parents[1] / "fixtures" / "lab4_state_dict_keys.txt"


def lab_keys() -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in KEYS_FILE.read_text().splitlines():
        key, shape = line.split(" ", 1)
        out.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return out


def test_state_dict_has_the_lab_keys_and_shapes_in_order():
    sd = CVAE().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == lab_keys()


@pytest.mark.parametrize(("n_dim", "expected"), [(12, 1_585_620), (32, 1_735_403)])
def test_parameter_count(n_dim, expected):
    """The lab's parameter counts (default sizes, and N_dim=32)."""
    assert sum(p.numel() for p in CVAE(ModelConfig(N_dim=n_dim)).parameters()) == expected


def test_lab_state_dict_loads_strict():
    lab_sd = {k: torch.randn(shape) if shape else torch.tensor(7) for k, shape in lab_keys()}
    model = CVAE()
    model.load_state_dict(lab_sd, strict=True)
    assert torch.equal(model.Generator[7].weight, lab_sd["Generator.7.weight"])


def test_dims_inferred_from_tensors():
    dims = ModelConfig(F_dim=64, L_dim=16, N_dim=20, D_out_dim=96)
    assert dims_from_state_dict(CVAE(dims).state_dict()) == dims
    with pytest.raises(ValueError, match="Decoder_Fusion.5.weight"):
        dims_from_state_dict({k: v for k, v in CVAE().state_dict().items() if not k.startswith("Decoder")})


# --- an independent, functional transcription of MODEL.md -----------------------------------------------
def _conv(sd, p, x, pad=None, groups=1):
    w = sd[p + "weight"]
    return F.conv2d(x, w, sd[p + "bias"], padding=w.shape[-1] // 2 if pad is None else pad, groups=groups)


def _res(sd, p, x):
    h = F.leaky_relu(_conv(sd, p + "conv1.", x), 0.01)
    h = F.leaky_relu(_conv(sd, p + "conv2.", h), 0.01)
    return h + (_conv(sd, p + "skip.", x) if p + "skip.weight" in sd else x)


def _dcb(sd, p, x):
    d = p + "block.0."
    h = F.leaky_relu(_conv(sd, d + "conv1.0.", x), 0.01)
    h = _conv(sd, d + "depth_conv.", h, groups=h.shape[1])
    x = _conv(sd, d + "conv2.", h) + (_conv(sd, d + "adaptor.", x) if d + "adaptor.weight" in sd else x)
    a, b = _conv(sd, p + "block.1.conv.", x).chunk(2, 1)
    return x + _conv(sd, p + "block.1.conv_out.", a * F.leaky_relu(b, 0.1))


def _seq(sd, name, x, kinds):
    for i, kind in enumerate(kinds):
        p = f"{name}.{i}."
        x = {"r": _res, "d": _dcb, "c": _conv}[kind](sd, p, x) if kind != "id" else x
    return x


def reference_step(sd, prev, cur, pose, eps):
    """One training step of the lab's protocol, in train mode (BatchNorm with batch statistics)."""
    enc = "rdrdrdc"
    f_prev, f_cur = _seq(sd, "frame_transformation", prev, enc), _seq(sd, "frame_transformation", cur, enc)
    h = _conv(sd, "label_transformation.1.", F.pad(pose, (3, 3, 3, 3), mode="reflect"), pad=0)
    h = F.batch_norm(h, None, None, sd["label_transformation.2.weight"], sd["label_transformation.2.bias"],
                     training=True)
    p = _res(sd, "label_transformation.4.", h)  # item 3: LeakyReLU(slope 1.0) is the identity
    g = _seq(sd, "Gaussian_Predictor", torch.cat([f_cur, p], 1), ["r", "d", "r", "d", "r", "id", "c"])
    mu, logvar = g.chunk(2, 1)
    z = mu + torch.exp(0.5 * logvar) * eps
    d = _seq(sd, "Decoder_Fusion", torch.cat([f_prev, p, z], 1), "drdrdc")
    return _seq(sd, "Generator", d, "drdrdrdc"), mu, logvar


def test_forward_equals_the_specification():
    torch.manual_seed(0)
    model = CVAE(ModelConfig(F_dim=32, L_dim=16, N_dim=8, D_out_dim=32)).train()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    prev, cur, pose = torch.rand(3, 2, 3, 16, 32).unbind(0)
    eps = torch.randn(2, 8, 16, 32)
    want, want_mu, want_logvar = reference_step(sd, prev, cur, pose, eps)
    z, mu, logvar = model.Gaussian_Predictor(model.frame_transformation(cur), model.label_transformation(pose), eps)
    got = model.decode(model.frame_transformation(prev), model.label_transformation(pose), z)
    torch.testing.assert_close(mu, want_mu)
    torch.testing.assert_close(logvar, want_logvar)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("channels_last", [False, True])
def test_without_autograd_the_blocks_compute_in_place_with_the_same_bits(channels_last):
    """Validation and rollouts run without autograd, where the residual sums and ConvFFN's gate go into the
    blocks' own fresh tensors: the same arithmetic, so the same bits as the autograd path."""
    torch.manual_seed(0)
    model = CVAE(ModelConfig(F_dim=32, L_dim=16, N_dim=8, D_out_dim=32)).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    prev, pose = (t.contiguous(memory_format=fmt) for t in torch.rand(2, 3, 3, 16, 32).unbind(0))
    z = torch.randn(3, 8, 16, 32)
    inputs = [prev.clone(), pose.clone(), z.clone()]
    step = lambda: model.decode(model.frame_transformation(prev), model.encode_poses(pose), z)  # noqa: E731
    with torch.enable_grad():
        tracked = step()
    with torch.no_grad():
        untracked = step()
    assert tracked.requires_grad and not untracked.requires_grad
    assert torch.equal(tracked.detach(), untracked)
    assert all(torch.equal(a, b) for a, b in zip(inputs, (prev, pose, z), strict=True))  # inputs left as they were


# --- the optimized clip forward against the lab's plain step loop (benchmarks/reference.py) -------------
@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize(("time_chunk", "channels_last"), [(None, False), (1, False), (3, False), (1, True),
                                                            (None, True)])
def test_forward_clip_equals_the_lab_loop(teacher_forcing, time_chunk, channels_last):
    torch.manual_seed(0)
    dims = ModelConfig(F_dim=32, L_dim=16, N_dim=8, D_out_dim=32)
    a, b = CVAE(dims).train(), CVAE(dims).train()
    b.load_state_dict(a.state_dict())
    a.to(memory_format=memory_format(channels_last))
    frames, poses = torch.rand(2, 2, 5, 3, 16, 32).unbind(0)
    eps = torch.randn(2, 4, 8, 16, 32)
    preds, mse_t, kl_t = forward_clip(a, frames, poses, teacher_forcing, eps, time_chunk=time_chunk)
    want_preds, want_mse, want_kl = lab_clip_forward(b, frames, poses, teacher_forcing=teacher_forcing, eps=eps)
    torch.testing.assert_close(preds, want_preds, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mse_t, want_mse, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(kl_t, want_kl, rtol=1e-4, atol=1e-4)
    (mse_t.mean() + kl_t.mean()).backward()
    (want_mse.mean() + want_kl.mean()).backward()
    largest = max(float(p.grad.abs().max()) for p in b.parameters())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if name == "label_transformation.1.bias":
            # The bias of the conv before BatchNorm: its gradient is zero in exact arithmetic (BatchNorm removes
            # the mean), so both sides hold rounding noise, whose size depends on the memory format.
            assert float(pa.grad.abs().max()) < 1e-4 * largest and float(pb.grad.abs().max()) < 1e-4 * largest
            continue
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-6 * max(largest, 10.0), msg=name)
    # BatchNorm's running statistics saw the same batches in the same order.
    torch.testing.assert_close(a.label_transformation[2].running_mean, b.label_transformation[2].running_mean)


@pytest.mark.parametrize("channels_last", [False, True])
def test_rollout_equals_the_lab_validation_loop(channels_last):
    """Poses encoded over time in one call, no posterior, NHWC or not: the lab's per-step loop's frames."""
    torch.manual_seed(0)
    dims = ModelConfig(F_dim=32, L_dim=16, N_dim=8, D_out_dim=32)
    a, b = CVAE(dims), CVAE(dims)
    a.train().label_transformation(torch.rand(4, 3, 16, 32))  # non-trivial BatchNorm running statistics
    b.load_state_dict(a.state_dict())
    a.to(memory_format=memory_format(channels_last))
    frames = torch.rand(1, 9, 3, 16, 32)
    poses_u8 = torch.randint(0, 256, (1, 9, 3, 16, 32), dtype=torch.uint8)
    got = rollout(a, frames[:, 0], poses_u8, generator=torch.Generator().manual_seed(7))
    want = lab_rollout(b, frames, poses_u8.float() / 255, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert a.training and b.training  # both restored to the mode they were in
