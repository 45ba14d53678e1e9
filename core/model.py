"""The Lab-4 conditional VAE: the five modules with the lab's structure and parameter names.

Checkpoints interchange with the lab's ``VAE_Model``: every attribute name below is part of the
``state_dict`` key (``frame_transformation.0.conv1.weight``, ...), so nothing here may be renamed.
See ``shared/lab4/MODEL.md`` for the specification this file follows.
"""

from __future__ import annotations

import os

import torch
from cvae.core.config import ModelConfig
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    """conv3x3 -> LeakyReLU(0.01) -> conv3x3 -> LeakyReLU(0.01), plus a 1x1 ``skip`` when channels change."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.inplace = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place by default: see set_inplace_activations.
        out = F.leaky_relu(self.conv1(x), 0.01, inplace=self.inplace)
        out = F.leaky_relu(self.conv2(out), 0.01, inplace=self.inplace)
        shortcut = self.skip(x) if self.skip is not None else x
        # Without autograd (validation, rollouts) the sum goes into the block's own fresh output: the same sum.
        return out + shortcut if torch.is_grad_enabled() else out.add_(shortcut)


class DepthConv(nn.Module):
    """1x1 conv + LeakyReLU(0.01), 3x3 depthwise conv, 1x1 conv; shortcut ``adaptor`` when channels change."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        # A Sequential so that the key is ``conv1.0.weight``, as in the lab's checkpoints.
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, in_ch, 1), nn.LeakyReLU(0.01, inplace=True))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1)
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.adaptor(x) if self.adaptor is not None else x
        out = self.conv2(self.depth_conv(self.conv1(x)))
        return out + identity if torch.is_grad_enabled() else out.add_(identity)


class ConvFFN(nn.Module):
    """Gated 1x1 feed-forward block: ``x + conv_out(a * LeakyReLU(0.1)(b))`` with ``a, b = chunk(conv(x))``."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        # The lab's layer caps the hidden width at 1024 (but never below 2*ch); at every size the lab
        # uses (ch <= 256) this is 4*ch, as MODEL.md states.
        hidden = max(min(ch * 4, 1024), ch * 2)
        self.conv = nn.Conv2d(ch, hidden, 1)
        self.conv_out = nn.Conv2d(hidden // 2, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        if torch.is_grad_enabled():
            return x + self.conv_out(a * F.leaky_relu(b, 0.1))
        # Without autograd, the same arithmetic in the hidden tensor's own memory: no new tensor for the
        # activation and the gate (a third of a batched rollout's time went to these elementwise passes).
        return self.conv_out(a.mul_(F.leaky_relu_(b, 0.1))).add_(x)


class DepthConvBlock(nn.Module):
    """``block`` = [DepthConv(in, out), ConvFFN(out)]."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(DepthConv(in_ch, out_ch), ConvFFN(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class RGB_Encoder(nn.Sequential):
    """Frame encoder: 3 -> F channels at full resolution."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            ResidualBlock(in_chans, out_chans // 8),
            DepthConvBlock(out_chans // 8, out_chans // 8),
            ResidualBlock(out_chans // 8, out_chans // 4),
            DepthConvBlock(out_chans // 4, out_chans // 4),
            ResidualBlock(out_chans // 4, out_chans // 2),
            DepthConvBlock(out_chans // 2, out_chans // 2),
            nn.Conv2d(out_chans // 2, out_chans, 3, padding=1),
        )


class Label_Encoder(nn.Sequential):
    """Pose encoder: 3 -> L channels. Item 3 is the lab's ``LeakyReLU(True)``: slope 1.0, an identity."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_chans, out_chans // 2, 7, padding=0),
            nn.BatchNorm2d(out_chans // 2),
            nn.LeakyReLU(negative_slope=1.0),
            ResidualBlock(out_chans // 2, out_chans),
        )


class Gaussian_Predictor(nn.Sequential):
    """Posterior q(z | x_t, P_t): returns ``(z, mu, logvar)`` with the reparameterization trick."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            ResidualBlock(in_chans, out_chans // 4),
            DepthConvBlock(out_chans // 4, out_chans // 4),
            ResidualBlock(out_chans // 4, out_chans // 2),
            DepthConvBlock(out_chans // 2, out_chans // 2),
            ResidualBlock(out_chans // 2, out_chans),
            nn.LeakyReLU(negative_slope=1.0),  # the lab's LeakyReLU(True): an identity, kept for the indices
            nn.Conv2d(out_chans, out_chans * 2, 1),
        )

    def posterior(self, img: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z | frame features, pose features), without sampling."""
        mu, logvar = super().forward(torch.cat([img, label], dim=1)).chunk(2, dim=1)
        return mu, logvar

    def forward(  # type: ignore[override]
        self, img: torch.Tensor, label: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample z = mu + exp(logvar / 2) * eps; ``eps`` defaults to a fresh N(0, I) draw."""
        mu, logvar = self.posterior(img, label)
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class Decoder_Fusion(nn.Sequential):
    """Fuses (previous-frame features, pose features, z), concatenated in that order, into D channels."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            DepthConvBlock(in_chans, in_chans),
            ResidualBlock(in_chans, in_chans // 4),
            DepthConvBlock(in_chans // 4, in_chans // 2),
            ResidualBlock(in_chans // 2, in_chans // 2),
            DepthConvBlock(in_chans // 2, out_chans // 2),
            nn.Conv2d(out_chans // 2, out_chans, 1),
        )

    def forward(  # type: ignore[override]
        self, img: torch.Tensor, label: torch.Tensor, parm: torch.Tensor
    ) -> torch.Tensor:
        return super().forward(torch.cat([img, label, parm], dim=1))


class Generator(nn.Sequential):
    """Decodes D channels to an RGB frame. No output activation: predictions are not clamped."""

    def __init__(self, input_nc: int, output_nc: int) -> None:
        super().__init__(
            DepthConvBlock(input_nc, input_nc),
            ResidualBlock(input_nc, input_nc // 2),
            DepthConvBlock(input_nc // 2, input_nc // 2),
            ResidualBlock(input_nc // 2, input_nc // 4),
            DepthConvBlock(input_nc // 4, input_nc // 4),
            ResidualBlock(input_nc // 4, input_nc // 8),
            DepthConvBlock(input_nc // 8, input_nc // 8),
            nn.Conv2d(input_nc // 8, output_nc, 1),
        )


def _size_onednn_cache() -> None:
    # oneDNN (torch's CPU convolutions) keeps 1024 compiled kernels by default. Training mixes batch shapes
    # (whole-chunk and per-step calls, NHWC, forward and two backward passes per convolution, batched
    # rollouts), which overflows it: kernels were rebuilt over and over (benchmarks/core_throughput.py at the
    # lab's sizes, teacher forcing off: 5.7 -> 6.3 frames/s). A documented oneDNN setting, read when the first
    # kernel is built, so set when the first model is: not on import. The user's own value wins.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")


class CVAE(nn.Module):
    """The lab's ``VAE_Model`` network: same submodule names, so lab ``state_dict``s load with strict=True."""

    def __init__(self, dims: ModelConfig | None = None) -> None:
        """``dims``: the channel sizes; default the lab's (``ModelConfig()``)."""
        _size_onednn_cache()
        super().__init__()
        self.dims = dims = ModelConfig() if dims is None else dims
        self.frame_transformation = RGB_Encoder(3, dims.F_dim)
        self.label_transformation = Label_Encoder(3, dims.L_dim)
        self.Gaussian_Predictor = Gaussian_Predictor(dims.F_dim + dims.L_dim, dims.N_dim)
        self.Decoder_Fusion = Decoder_Fusion(dims.F_dim + dims.L_dim + dims.N_dim, dims.D_out_dim)
        self.Generator = Generator(dims.D_out_dim, 3)

    def decode(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x̂_t = Generator(Decoder_Fusion(f_{t-1}, p_t, z))."""
        return self.Generator(self.Decoder_Fusion(frame_feat, pose_feat, z))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frame features for a (..., 3, H, W) tensor; leading dims are folded into one batched call.

        The frame encoder has no batch-dependent layer, so batching over time is the same math.
        """
        lead = frames.shape[:-3]
        out = self.frame_transformation(frames.reshape(-1, *frames.shape[-3:]))
        return out.reshape(*lead, *out.shape[1:])

    def encode_poses(self, poses: torch.Tensor) -> torch.Tensor:
        """Pose features for a (..., 3, H, W) tensor in one batched call.

        Only for eval mode: in train mode BatchNorm's statistics depend on the batch, so the training step
        encodes one time step at a time, as the lab does.
        """
        lead = poses.shape[:-3]
        out = self.label_transformation(poses.reshape(-1, *poses.shape[-3:]))
        return out.reshape(*lead, *out.shape[1:])


def dims_from_state_dict(state_dict: dict[str, torch.Tensor]) -> ModelConfig:
    """Infer the channel sizes from a (lab or own) state_dict's tensor shapes."""
    try:
        return ModelConfig(
            F_dim=int(state_dict["frame_transformation.6.weight"].shape[0]),
            L_dim=int(state_dict["label_transformation.4.conv2.weight"].shape[0]),
            N_dim=int(state_dict["Gaussian_Predictor.6.weight"].shape[0]) // 2,
            D_out_dim=int(state_dict["Decoder_Fusion.5.weight"].shape[0]),
        )
    except KeyError as err:
        raise ValueError(f"not a Lab-4 cVAE state_dict: key {err.args[0]!r} is missing") from None


def set_inplace_activations(model: nn.Module, inplace: bool) -> nn.Module:
    """Run the LeakyReLUs that follow a convolution in place (the default) or out of place (the lab's code).

    The same numbers either way: a convolution's backward does not need its output, and LeakyReLU's
    backward can use its own output (slope > 0). In place saves a tensor and a pass over memory each.
    """
    for m in model.modules():
        if isinstance(m, ResidualBlock):
            m.inplace = inplace
        elif isinstance(m, DepthConv):
            m.conv1[1].inplace = inplace
    return model
