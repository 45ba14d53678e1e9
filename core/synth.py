"""Synthetic "dancing person" videos laid out exactly like the lab's Lab-4 dataset.

The lab's dataset (frames of people dancing, each with an OpenPose rendering of its
pose) is not redistributable, so this module generates a stand-in with the same
folder layout and the same conditional structure: every RGB frame is a
deterministic function of a per-video appearance and the pose at that instant, and
the pose image is an OpenPose-style drawing of that same pose.

Layout written under ``out`` (frame numbers are plain integers starting at 0)::

    train/train_img/frame{N}.png   train/train_label/frame{N}.png
    val/val_img/frame{N}.png       val/val_label/frame{N}.png
    test/test_img/{i}/frame0.png   test/test_label/{i}/frame{N}.png
    test/test_gt/{i}/frame{N}.png  (ground truth; the lab's loaders ignore it)
    synth.json                     (arguments + format version: the cache key)

The dancer is an 18-keypoint (OpenPose/COCO order) skeleton posed by forward
kinematics from joint angles that are sums of sinusoids at multiples of a
per-video tempo, so the motion is smooth, periodic and provably stays inside the
frame (see :meth:`DancerMotion.sample`).
"""

from __future__ import annotations

import colorsys
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FORMAT_VERSION = 1
MANIFEST_NAME = "synth.json"
NUM_KEYPOINTS = 18
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
# The 17 limbs OpenPose draws (its limbSeq without the two ear-shoulder links), 0-based.
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# OpenPose's rainbow palette: colour i is used for limb i and for keypoint i.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

# Rendering happens at this many times the output resolution and is box-filtered
# down, which anti-aliases every edge for the price of one cheap reduce().
_SUPERSAMPLE = 4
# Frames per worker task: small enough to balance the default 1600-frame train set
# over several workers, large enough that re-sampling a video's parameters is free.
_CHUNK_FRAMES = 128

# Joint angle limits in degrees. DancerMotion keeps every trajectory inside them,
# and the in-frame guarantee is derived from them.
_SWAY_MAX = 12.0  # torso lean from vertical
_HEAD_TILT_MAX = 15.0  # head relative to torso
_SHOULDER_RANGE = (10.0, 165.0)  # upper-arm abduction from hanging down
_ELBOW_RANGE = (-30.0, 120.0)  # forearm rotation relative to the upper arm
_HIP_RANGE = (-8.0, 30.0)  # leg spread outwards from vertical
_KNEE_RANGE = (0.0, 60.0)  # knee flexion, seen from the front as knees bowing outwards
_HOP_MAX = 0.03  # small jump, in body heights
# Conservative extents beyond the keypoints, in body heights: hair above the nose
# and half-thickness of limbs/hands/shoes. Appearance.sample stays within them.
_HEAD_TOP = 0.14
_PAD = 0.07
# Harmonics of the tempo used by every joint; 0.5 gives phrases spanning two beats.
_HARMONICS = np.array([0.5, 1.0, 2.0])


@dataclass(frozen=True)
class Skeleton:
    """Bone lengths of one dancer, in body heights (ankle to top of head ~ 1)."""

    torso: float  # mid-hip to neck
    neck: float  # neck to nose
    shoulder_half: float  # neck to each shoulder
    shoulder_drop: float  # shoulders sit slightly below the neck keypoint
    hip_half: float  # mid-hip to each hip
    upper_arm: float
    forearm: float
    thigh: float
    shin: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Skeleton:
        """Draws average human proportions with a few percent of per-person variation."""
        j = rng.uniform(0.94, 1.06, size=9)
        return cls(
            torso=0.30 * j[0], neck=0.11 * j[1], shoulder_half=0.11 * j[2], shoulder_drop=0.02 * j[3],
            hip_half=0.06 * j[4], upper_arm=0.16 * j[5], forearm=0.15 * j[6],
            thigh=0.24 * j[7], shin=0.24 * j[8],
        )  # fmt: skip

    def extents(self) -> tuple[float, float, float]:
        """Bounds on how far the drawn body reaches from the mid-hip, in body heights.

        Returns:
            ``(up, leg, lateral)``: the most the body (hair included) can rise above
            the mid-hip, the most the lowest ankle can sit below it, and the most
            anything can reach sideways. They follow from the angle limits above.
        """
        sway = math.radians(_SWAY_MAX)
        head = math.radians(_SWAY_MAX + _HEAD_TILT_MAX)
        arm = self.upper_arm + self.forearm
        up = self.torso + max(self.neck + _HEAD_TOP, self.shoulder_half * math.sin(sway) + arm + _PAD)
        lateral = _PAD + max(
            self.hip_half + self.thigh + self.shin,
            self.torso * math.sin(sway) + self.shoulder_half + arm,
            self.torso * math.sin(sway) + self.neck * math.sin(head) + _HEAD_TOP,
        )
        return up, self.thigh + self.shin, lateral


# Order of the rows of DancerMotion.centres / amplitudes / phases.
_JOINTS = (
    "sway",
    "head",
    "r_shoulder",
    "r_elbow",
    "l_shoulder",
    "l_elbow",
    "r_hip",
    "r_knee",
    "l_hip",
    "l_knee",
)
_JOINT_LIMITS = {
    "sway": (-_SWAY_MAX, _SWAY_MAX),
    "head": (-_HEAD_TILT_MAX, _HEAD_TILT_MAX),
    "r_shoulder": _SHOULDER_RANGE,
    "l_shoulder": _SHOULDER_RANGE,
    "r_elbow": _ELBOW_RANGE,
    "l_elbow": _ELBOW_RANGE,
    "r_hip": _HIP_RANGE,
    "l_hip": _HIP_RANGE,
    "r_knee": _KNEE_RANGE,
    "l_knee": _KNEE_RANGE,
}
# Largest swing (sum of the harmonic amplitudes) per joint, so that no joint sweeps
# its whole range within a beat and consecutive frames stay close.
_JOINT_SWING = {"sway": 10.0, "head": 12.0, "shoulder": 60.0, "elbow": 55.0, "hip": 18.0, "knee": 28.0}


def _swing_cap(joint: str) -> float:
    return _JOINT_SWING[joint.split("_")[-1]]


@dataclass(frozen=True)
class DancerMotion:
    """Smooth, periodic, in-frame motion of one dancer; ``keypoints(t)`` is pure in ``t``.

    Angles are in degrees and every joint angle is
    ``centre + sum_k amplitude_k * sin(2 pi * harmonic_k * tempo * t + phase_k)``.
    """

    skeleton: Skeleton
    tempo: float  # beats per frame
    centres: tuple[float, ...]
    amplitudes: tuple[tuple[float, ...], ...]
    phases: tuple[tuple[float, ...], ...]
    hop: float  # jump height in body heights, at twice the tempo
    hop_phase: float
    scale: float  # pixels per body height at the scale oscillation's centre
    scale_amp: float  # relative amplitude of the slow scale change
    scale_period: float
    scale_phase: float
    ground_y: float  # pixel row the lowest ankle rests on
    centre_x: float
    drift_amp: float  # pixels of slow horizontal wandering
    drift_period: float
    drift_phase: float

    @classmethod
    def sample(cls, rng: np.random.Generator, size: tuple[int, int],
               skeleton: Skeleton | None = None) -> DancerMotion:
        """Draws a dancer's proportions (unless ``skeleton`` gives them), tempo, choreography and placement.

        The body is scaled so that, even at the largest scale, fully stretched and
        mid-hop, everything fits between the top and bottom rows, and the drift is
        limited by the horizontal room that is left, so all keypoints (and the drawn
        body) stay inside the frame for every ``t``.

        Args:
            rng: Source of all randomness of this dancer.
            size: ``(H, W)`` of the frames in pixels.

        Returns:
            The sampled motion.
        """
        height, width = size
        if skeleton is None:
            skeleton = Skeleton.sample(rng)
        tempo = 1.0 / rng.uniform(30.0, 72.0)
        centres, amplitudes, phases = [], [], []
        for joint in _JOINTS:
            lo, hi = _JOINT_LIMITS[joint]
            centre = rng.uniform(lo + 0.3 * (hi - lo), hi - 0.3 * (hi - lo))
            swing = min(centre - lo, hi - centre, _swing_cap(joint)) * rng.uniform(0.5, 1.0)
            weights = rng.dirichlet(np.ones(len(_HARMONICS)))
            centres.append(float(centre))
            amplitudes.append(tuple(float(a) for a in swing * weights))
            phases.append(tuple(float(p) for p in rng.uniform(0.0, 2 * math.pi, len(_HARMONICS))))
        hop = float(rng.uniform(0.0, _HOP_MAX))
        hop_phase = float(rng.uniform(0.0, 2 * math.pi))

        up, leg, lateral = skeleton.extents()
        margin = 0.5  # keeps keypoints strictly inside the pixel grid
        max_scale = min(
            (height - 1 - 2 * margin) / (_PAD + leg + _HOP_MAX + up),
            ((width - 1) / 2 - margin) / lateral,
        )
        scale_amp = float(rng.uniform(0.02, 0.06))
        scale = max_scale / (1 + scale_amp)
        ground_y = height - 1 - margin - _PAD * max_scale
        slack = max(0.0, (width - 1) / 2 - margin - lateral * max_scale)
        return cls(
            skeleton=skeleton, tempo=float(tempo),
            centres=tuple(centres), amplitudes=tuple(amplitudes), phases=tuple(phases),
            hop=hop, hop_phase=hop_phase, scale=float(scale), scale_amp=scale_amp,
            scale_period=float(rng.uniform(150.0, 400.0)), scale_phase=float(rng.uniform(0, 2 * math.pi)),
            ground_y=float(ground_y), centre_x=(width - 1) / 2, drift_amp=float(slack * rng.uniform(0.2, 0.9)),
            drift_period=float(rng.uniform(200.0, 600.0)), drift_phase=float(rng.uniform(0, 2 * math.pi)),
        )  # fmt: skip

    def angles(self, t: np.ndarray | float) -> dict[str, np.ndarray]:
        """Joint angles in radians at time(s) ``t`` (frames), keyed by joint name."""
        t = np.asarray(t, dtype=np.float64)
        omega = 2 * math.pi * self.tempo * _HARMONICS  # (K,)
        arg = t[..., None, None] * omega + np.asarray(self.phases)  # (..., J, K)
        deg = np.asarray(self.centres) + (np.asarray(self.amplitudes) * np.sin(arg)).sum(-1)
        rad = np.deg2rad(deg)
        return {name: rad[..., j] for j, name in enumerate(_JOINTS)}

    def keypoints(self, t: np.ndarray | float) -> np.ndarray:
        """The 18 OpenPose keypoints in pixel coordinates ``(x, y)`` at time(s) ``t``.

        Args:
            t: Frame index or array of them (fractional times are fine).

        Returns:
            Array of shape ``t.shape + (18, 2)``.
        """
        t = np.asarray(t, dtype=np.float64)
        sk, a = self.skeleton, self.angles(t)

        def vec(angle: np.ndarray, length: float) -> np.ndarray:
            # Angle 0 points straight down in image coordinates, positive towards +x.
            return length * np.stack([np.sin(angle), np.cos(angle)], axis=-1)

        zero = np.zeros(t.shape + (2,))
        up = -vec(a["sway"], 1.0)  # the torso's "up" direction
        right = np.stack([-up[..., 1], up[..., 0]], axis=-1)  # towards image +x
        neck = sk.torso * up
        # The dancer faces the camera, so their right side is on the image's left.
        r_shoulder = neck - sk.shoulder_half * right - sk.shoulder_drop * up
        l_shoulder = neck + sk.shoulder_half * right - sk.shoulder_drop * up
        head = a["sway"] + a["head"]
        head_up = -vec(head, 1.0)
        head_right = np.stack([-head_up[..., 1], head_up[..., 0]], axis=-1)
        nose = neck + sk.neck * head_up

        def arm(shoulder: np.ndarray, side: float, raise_: np.ndarray, bend: np.ndarray) -> list[np.ndarray]:
            elbow = shoulder + vec(side * raise_, sk.upper_arm)
            return [elbow, elbow + vec(side * (raise_ + bend), sk.forearm)]

        def leg(hip: np.ndarray, side: float, spread: np.ndarray, knee_bend: np.ndarray) -> list[np.ndarray]:
            # Seen from the front a bent knee moves outwards while the foot stays
            # under the hip, like a plie, instead of the legs crossing.
            knee = hip + vec(side * (spread + knee_bend / 2), sk.thigh)
            return [hip, knee, knee + vec(side * (spread - knee_bend / 2), sk.shin)]

        r_hip = zero + np.array([-sk.hip_half, 0.0])
        l_hip = zero + np.array([sk.hip_half, 0.0])
        pts = np.stack(
            [nose, neck, r_shoulder, *arm(r_shoulder, -1.0, a["r_shoulder"], a["r_elbow"]),
             l_shoulder, *arm(l_shoulder, 1.0, a["l_shoulder"], a["l_elbow"]),
             *leg(r_hip, -1.0, a["r_hip"], a["r_knee"]), *leg(l_hip, 1.0, a["l_hip"], a["l_knee"]),
             nose + 0.025 * head_up - 0.022 * head_right, nose + 0.025 * head_up + 0.022 * head_right,
             nose + 0.010 * head_up - 0.050 * head_right, nose + 0.010 * head_up + 0.050 * head_right],
            axis=-2,
        )  # fmt: skip
        # Feet stay planted: the lower ankle rests on the ground, so bending the knees
        # lowers the body; the hop lifts it off briefly on every half beat.
        lowest_ankle = np.maximum(pts[..., 10, 1], pts[..., 13, 1])
        hop = self.hop * 0.5 * (1 - np.cos(4 * math.pi * self.tempo * t + self.hop_phase))
        scale = self.scale * (
            1 + self.scale_amp * np.sin(2 * math.pi * t / self.scale_period + self.scale_phase)
        )
        x = self.centre_x + self.drift_amp * np.sin(2 * math.pi * t / self.drift_period + self.drift_phase)
        y = self.ground_y - scale * (lowest_ankle + hop)
        return pts * scale[..., None, None] + np.stack([x, y], axis=-1)[..., None, :]


Color = tuple[int, int, int]


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _distance(c1: Color, c2: Color) -> float:
    return float(np.linalg.norm(np.subtract(c1, c2, dtype=np.float64)))


def _sample_background(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float],
                       value_end: tuple[float, float]) -> tuple[str, Color, Color]:
    """A background's kind ("flat", or a "vertical" or "horizontal" gradient) and its two end colours: one
    hue, the end's nudged, saturation and value drawn from the given ranges."""
    background = ("flat", "vertical", "horizontal")[int(rng.integers(3))]
    hue = rng.uniform()
    start = _hsv(hue, rng.uniform(*saturation), rng.uniform(*value))
    end = start
    if background != "flat":
        end = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(*saturation), rng.uniform(*value_end))
    return background, start, end


@dataclass(frozen=True)
class Appearance:
    """Everything about a video's look that does not change over time.

    Sizes are in units of the torso length measured from the pose (neck to mid-hip),
    so a rendered frame depends only on the appearance and the keypoints.
    """

    background: str  # "flat", "vertical" (top to bottom) or "horizontal" (left to right) gradient
    bg_start: Color
    bg_end: Color
    skin: Color
    hair: Color
    shirt: Color
    trousers: Color
    shoes: Color
    arm_width: float
    leg_width: float
    neck_width: float
    torso_widen: float  # extra half-width of the shirt beyond the shoulder/hip keypoints
    head_rx: float
    head_ry: float
    head_lift: float  # head centre above the nose along the head's axis

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Appearance:
        """Draws background, clothing, skin and hair colours and body build.

        Clothing colours are redrawn until they contrast with the background (and
        each other), so the dancer never disappears into the scene.
        """
        background, bg_start, bg_end = _sample_background(rng, (0.1, 0.6), (0.45, 0.95), (0.35, 1.0))
        bg_mean = tuple((a + b) // 2 for a, b in zip(bg_start, bg_end, strict=True))

        def contrasting(draw: Callable[[], Color], avoid: list[Color], min_dist: float) -> Color:
            # A bounded number of tries keeps sampling deterministic and terminating;
            # the last draw is kept even if unlucky.
            for _ in range(20):
                color = draw()
                if all(_distance(color, c) >= min_dist for c in avoid):
                    break
            return color

        shirt = contrasting(
            lambda: _hsv(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.35, 0.95)), [bg_mean], 110
        )
        trousers = contrasting(
            lambda: _hsv(rng.uniform(), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.7)), [bg_mean, shirt], 80
        )
        light, dark = np.array([255, 219, 172]), np.array([120, 72, 36])
        skin = tuple(
            int(v)
            for v in np.clip(np.rint(light + rng.uniform() * (dark - light) + rng.uniform(-8, 8, 3)), 0, 255)
        )
        hair_palette = ((25, 20, 18), (70, 45, 25), (120, 80, 40), (200, 170, 100), (150, 60, 30))
        hair = tuple(
            int(v)
            for v in np.clip(
                np.add(hair_palette[int(rng.integers(len(hair_palette)))], rng.integers(-10, 11, 3)), 0, 255
            )
        )
        shoes = ((30, 30, 30), (235, 235, 235), (110, 60, 30))[int(rng.integers(3))]
        return cls(
            background=background, bg_start=bg_start, bg_end=bg_end, skin=skin, hair=hair, shirt=shirt,
            trousers=trousers, shoes=shoes, arm_width=float(rng.uniform(0.18, 0.24)),
            leg_width=float(rng.uniform(0.22, 0.30)), neck_width=float(rng.uniform(0.12, 0.15)),
            torso_widen=float(rng.uniform(0.03, 0.09)), head_rx=float(rng.uniform(0.18, 0.21)),
            head_ry=float(rng.uniform(0.23, 0.26)), head_lift=float(rng.uniform(0.07, 0.09)),
        )  # fmt: skip

    def in_setting(self, rng: np.random.Generator) -> Appearance:
        """The same dancer in another setting: background drawn from ``rng``, kept apart from the shirt."""
        for _ in range(20):
            background, bg_start, bg_end = _sample_background(rng, (0.15, 0.8), (0.3, 0.95), (0.25, 1.0))
            bg_mean = tuple((a + b) // 2 for a, b in zip(bg_start, bg_end, strict=True))
            if _distance(bg_mean, self.shirt) >= 90 and _distance(bg_mean, self.trousers) >= 60:
                break
        return replace(self, background=background, bg_start=bg_start, bg_end=bg_end)


@dataclass(frozen=True)
class Spotlight:
    """A soft, coloured light that wanders about a resting place in the scene, at random.

    Its centre follows a discretised Ornstein-Uhlenbeck process: every frame it moves back towards ``home``
    by a share ``1 - keep`` of its distance and takes an independent Gaussian step. Where it is shows in the
    previous frame; where it goes next neither the pose nor the past determines (the cVAE's z can carry
    it); and it stays near home, so no prediction loses the light altogether over a long video.
    """

    size: tuple[int, int]  # (H, W) of the frames it lights
    home: tuple[float, float]  # (x, y) in pixels
    spread: float  # stationary standard deviation of the centre about home, along each axis, in pixels
    keep: float  # share of the offset from home kept from one frame to the next
    radius: float  # of the light's Gaussian profile, in pixels
    strength: float  # share of the way to the light's colour at its centre
    color: Color

    @classmethod
    def sample(cls, rng: np.random.Generator, size: tuple[int, int]) -> Spotlight:
        """Draws the light's colour, size, strength and resting place for frames of ``size`` (H, W)."""
        height, width = size
        return cls(size=(height, width), home=(float(width * rng.uniform(0.2, 0.8)), float(height * rng.uniform(0.2, 0.6))),
                   spread=float(width * rng.uniform(0.06, 0.1)), keep=float(rng.uniform(0.96, 0.985)),
                   radius=float(height * rng.uniform(0.25, 0.35)), strength=float(rng.uniform(0.55, 0.75)),
                   color=_hsv(rng.uniform(), rng.uniform(0.4, 0.8), 1.0))  # fmt: skip

    def path(self, frames: int, rng: np.random.Generator) -> np.ndarray:
        """``(frames, 2)`` centres ``(x, y)``, starting from the process's stationary distribution; a centre
        that would leave the picture stops at its border, so that the light always shows."""
        home = np.asarray(self.home)
        border = np.array([self.size[1] - 1.0, self.size[0] - 1.0])
        step = self.spread * math.sqrt(1.0 - self.keep**2)
        out = np.empty((frames, 2))
        offset = rng.normal(0.0, self.spread, 2)
        for t in range(frames):
            out[t] = np.clip(home + offset, 0.0, border)
            offset = self.keep * offset + rng.normal(0.0, step, 2)
        return out

    def light(self, img: Image.Image, centre: np.ndarray) -> Image.Image:
        """``img`` lit by the light at ``centre``, in output pixel coordinates."""
        pixels = np.asarray(img, dtype=np.float64)
        rows, cols = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
        weight = self.strength * np.exp(-((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (2 * self.radius**2))
        lit = pixels + weight[..., None] * (np.asarray(self.color, np.float64) - pixels)
        return Image.fromarray(np.clip(np.rint(lit), 0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Lighting:
    """A video's exposure and the colour of its light: every pixel's channels scaled by one gain each."""

    gain: tuple[float, float, float]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Lighting:
        """An exposure between 55 % and 100 % of the rendered scene's, tinted by up to 10 % per channel."""
        exposure = rng.uniform(0.55, 1.0)
        return cls(tuple(float(exposure * t) for t in rng.uniform(0.9, 1.1, 3)))  # type: ignore[arg-type]

    def apply(self, img: Image.Image) -> Image.Image:
        pixels = np.asarray(img, dtype=np.float64) * np.asarray(self.gain)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


@lru_cache(maxsize=8)
def _background(appearance: Appearance, shape: tuple[int, int]) -> Image.Image:
    # Cached because every frame of a video shares it; callers must copy() it.
    height, width = shape
    start, end = np.array(appearance.bg_start, np.float64), np.array(appearance.bg_end, np.float64)
    if appearance.background == "vertical":
        ramp = np.linspace(0.0, 1.0, height)[:, None, None] * np.ones((1, width, 1))
    elif appearance.background == "horizontal":
        ramp = np.linspace(0.0, 1.0, width)[None, :, None] * np.ones((height, 1, 1))
    else:
        ramp = np.zeros((height, width, 1))
    pixels = np.rint(start + ramp * (end - start)).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _check_pose(pose: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (NUM_KEYPOINTS, 2):
        raise ValueError(f"pose must have shape (18, 2), got {pose.shape}")
    height, width = _check_size(size)
    # Pixel centres of the output sit at integers; map them onto the supersampled grid.
    return (pose + 0.5) * _SUPERSAMPLE - 0.5, height * _SUPERSAMPLE, width * _SUPERSAMPLE


def _disc(draw: ImageDraw.ImageDraw, centre: np.ndarray, radius: float, color: Color) -> None:
    x, y = float(centre[0]), float(centre[1])
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)


def _capsule(draw: ImageDraw.ImageDraw, p: np.ndarray, q: np.ndarray, width: float, color: Color) -> None:
    # A thick segment with round ends, so consecutive bones join without gaps.
    draw.line([tuple(p), tuple(q)], fill=color, width=max(1, round(width)))
    _disc(draw, p, width / 2, color)
    _disc(draw, q, width / 2, color)


def _ellipse(
    centre: np.ndarray, axis_x: np.ndarray, axis_y: np.ndarray, n: int = 28
) -> list[tuple[float, float]]:
    # PIL only draws axis-aligned ellipses; a tilted head needs a polygon.
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    pts = centre + np.cos(a)[:, None] * axis_x + np.sin(a)[:, None] * axis_y
    return [tuple(p) for p in pts]


def render_frame(
    pose: np.ndarray, appearance: Appearance, size: tuple[int, int]
) -> tuple[Image.Image, Image.Image]:
    """Draws one video frame and its OpenPose-style pose image.

    Args:
        pose: ``(18, 2)`` keypoints ``(x, y)`` in output pixel coordinates, in
            OpenPose/COCO order (see ``KEYPOINT_NAMES``).
        appearance: The video's look.
        size: ``(H, W)`` of both images.

    Returns:
        ``(rgb_frame, pose_image)``, both RGB images of size ``W x H``.

    Raises:
        ValueError: If ``pose`` is not ``(18, 2)`` or ``size`` is not two positive ints.
    """
    p, height, width = _check_pose(pose, size)
    unit = float(np.linalg.norm(p[1] - (p[8] + p[11]) / 2))  # torso length, supersampled pixels
    img = _background(appearance, (height, width)).copy()
    draw = ImageDraw.Draw(img)
    ap = appearance

    leg_w, arm_w = ap.leg_width * unit, ap.arm_width * unit
    # The dancer faces the camera: the right leg (and foot) is on the image's left.
    for hip, knee, ankle, outward in ((8, 9, 10, -1.0), (11, 12, 13, 1.0)):
        _capsule(draw, p[hip], p[knee], leg_w, ap.trousers)
        _capsule(draw, p[knee], p[ankle], leg_w * 0.9, ap.trousers)
        foot = p[ankle] + np.array([outward * 0.08, 0.05]) * unit
        _capsule(draw, p[ankle], foot, leg_w * 0.8, ap.shoes)

    spine = p[1] - (p[8] + p[11]) / 2
    across = (p[5] - p[2]) / max(float(np.linalg.norm(p[5] - p[2])), 1e-6)
    widen = ap.torso_widen * unit * across
    waist_r, waist_l = p[8] + 0.25 * spine, p[11] + 0.25 * spine
    draw.polygon([tuple(waist_r - widen), tuple(waist_l + widen), tuple(p[11] + widen), tuple(p[8] - widen)],
                 fill=ap.trousers)  # fmt: skip
    _capsule(draw, p[8], p[11], leg_w, ap.trousers)
    draw.polygon([tuple(p[2] - widen), tuple(p[5] + widen), tuple(waist_l + widen), tuple(waist_r - widen)],
                 fill=ap.shirt)  # fmt: skip
    _capsule(draw, p[2], p[5], arm_w, ap.shirt)

    head_up = (p[0] - p[1]) / max(float(np.linalg.norm(p[0] - p[1])), 1e-6)
    head_right = np.array([-head_up[1], head_up[0]])
    _capsule(draw, p[1], p[1] + 0.6 * (p[0] - p[1]), ap.neck_width * unit, ap.skin)
    centre = p[0] + ap.head_lift * unit * head_up
    rx, ry = ap.head_rx * unit, ap.head_ry * unit
    # Hair: a slightly larger ellipse pushed up, peeking out above the face.
    draw.polygon(_ellipse(centre + 0.04 * unit * head_up, (rx + 0.02 * unit) * head_right, (ry + 0.02 * unit) * head_up),
                 fill=ap.hair)  # fmt: skip
    draw.polygon(_ellipse(centre - 0.01 * unit * head_up, rx * head_right, ry * head_up), fill=ap.skin)

    for shoulder, elbow, wrist in ((2, 3, 4), (5, 6, 7)):
        _capsule(draw, p[shoulder], p[elbow], arm_w, ap.shirt)
        _capsule(draw, p[elbow], p[wrist], arm_w * 0.85, ap.skin)
        _disc(draw, p[wrist], arm_w * 0.6, ap.skin)

    frame = img.reduce(_SUPERSAMPLE)
    return frame, _render_pose_scaled(p, height, width, unit)


def render_pose(pose: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Draws the OpenPose-style pose image alone (limbs at 60 % colour, joints on top).

    Args:
        pose: ``(18, 2)`` keypoints in output pixel coordinates.
        size: ``(H, W)`` of the image.

    Returns:
        An RGB image on black.
    """
    p, height, width = _check_pose(pose, size)
    return _render_pose_scaled(p, height, width, float(np.linalg.norm(p[1] - (p[8] + p[11]) / 2)))


def _render_pose_scaled(p: np.ndarray, height: int, width: int, unit: float) -> Image.Image:
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    # OpenPose blends limbs at 60 % over black and scales the stick with the person.
    stick = max(0.12 * unit, 1.5 * _SUPERSAMPLE)
    for i, (a, b) in enumerate(OPENPOSE_LIMBS):
        color = tuple(round(0.6 * c) for c in OPENPOSE_COLORS[i])
        _capsule(draw, p[a], p[b], stick, color)
    for i in range(NUM_KEYPOINTS):
        _disc(draw, p[i], 0.6 * stick, OPENPOSE_COLORS[i])
    return img.reduce(_SUPERSAMPLE)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class _Job:
    """A contiguous range of frames of one video and where to write them."""

    spawn_key: tuple[int, ...]  # identifies the video's random stream
    start: int
    stop: int
    img_dir: str
    label_dir: str
    offset: int  # file number of the video's frame 0
    first_img_dir: str | None  # test videos also get their first frame here
    dancer: int | None = None  # the shared look this video shows (``dancers``), None: its own
    setting: int | None = None  # the shared background this video shows (``backgrounds``), None: its look's
    spotlight: bool = False  # a wandering spotlight (``spotlight``)
    lighting: bool = False  # the video's own exposure and colour of light (``lighting``)
    length: int = 0  # frames of the whole video: the light's path is drawn for all of them


def _video_params(
    seed: int, spawn_key: tuple[int, ...], size: tuple[int, int], dancer: int | None = None,
    setting: int | None = None,
) -> tuple[DancerMotion, Appearance]:
    # Keyed by (split, video) rather than by generation order, so any video can be
    # regenerated alone and resizing one split leaves the others' videos unchanged.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))
    if dancer is None:
        motion, appearance = DancerMotion.sample(rng, size), Appearance.sample(rng)
    else:
        # A shared dancer: proportions and look (clothes, skin, hair, background) come from the dancer's own
        # stream, the motion (tempo, choreography, placement) from the video's.
        look = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, dancer)))
        skeleton = Skeleton.sample(look)
        motion, appearance = DancerMotion.sample(rng, size, skeleton=skeleton), Appearance.sample(look)
    if setting is not None:
        appearance = appearance.in_setting(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, setting))))
    return motion, appearance


def _save_png(img: Image.Image, path: str) -> None:
    # Level 1 saves ~30 % of the encoding time of the default level for ~10 % larger
    # files at these sizes; PNG stays lossless either way.
    img.save(path, format="PNG", optimize=False, compress_level=1)


def _run_job(job: _Job, seed: int, size: tuple[int, int]) -> int:
    motion, appearance = _video_params(seed, job.spawn_key, size, job.dancer, job.setting)
    poses = motion.keypoints(np.arange(job.start, job.stop))
    path = None
    gain = None
    if job.lighting:
        gain = Lighting.sample(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*job.spawn_key, 6))))
    if job.spotlight:
        light_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*job.spawn_key, 5)))
        spot = Spotlight.sample(light_rng, size)
        path = spot.path(job.length, light_rng)
    for t, pose in zip(range(job.start, job.stop), poses, strict=True):
        rgb, label = render_frame(pose, appearance, size)
        if path is not None:
            rgb = spot.light(rgb, path[t])
        if gain is not None:
            rgb = gain.apply(rgb)
        name = f"frame{job.offset + t}.png"
        _save_png(rgb, os.path.join(job.img_dir, name))
        _save_png(label, os.path.join(job.label_dir, name))
        if t == 0 and job.first_img_dir is not None:
            _save_png(rgb, os.path.join(job.first_img_dir, name))
    return job.stop - job.start


def _run_job_star(args: tuple[_Job, int, tuple[int, int]]) -> int:
    return _run_job(*args)


def _plan(root: Path, args: dict) -> list[_Job]:
    train_img, train_label = root / "train" / "train_img", root / "train" / "train_label"
    videos: list[tuple[tuple[int, ...], int, Path, Path, int, Path | None]] = []
    for v, start in enumerate(range(0, args["train_frames"], args["train_video_len"])):
        length = min(args["train_video_len"], args["train_frames"] - start)
        videos.append(((0, v), length, train_img, train_label, start, None))
    videos.append(((1, 0), args["val_frames"], root / "val" / "val_img", root / "val" / "val_label", 0, None))
    for i in range(args["test_sequences"]):
        test = root / "test"
        videos.append(((2, i), args["test_frames"], test / "test_gt" / str(i), test / "test_label" / str(i), 0,
                       test / "test_img" / str(i)))  # fmt: skip
    dancers, backgrounds = args.get("dancers"), args.get("backgrounds")
    spotlight, lighting = bool(args.get("spotlight")), bool(args.get("lighting"))
    jobs = []
    for key, length, img_dir, label_dir, offset, first_dir in videos:
        for d in (img_dir, label_dir, first_dir):
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)
        # With shared dancers, training video v shows dancer v % dancers, and the validation video and test
        # sequence i show dancer i % dancers: every held-out video shows a dancer seen in training.
        dancer = None if dancers is None else key[1] % dancers
        # Shared backgrounds cycle independently of the dancers: training video v shows background
        # (v // dancers) % backgrounds, so every dancer meets every background; held-out video i shows i % N.
        setting = None
        if backgrounds is not None:
            setting = (key[1] // (dancers or 1) if key[0] == 0 else key[1]) % backgrounds
        for start in range(0, length, _CHUNK_FRAMES):
            jobs.append(_Job(key, start, min(start + _CHUNK_FRAMES, length), str(img_dir), str(label_dir), offset,
                             None if first_dir is None else str(first_dir), dancer, setting, spotlight, lighting, length))  # fmt: skip
    return jobs


MINIMUMS = {"train_frames": 1, "val_frames": 1, "test_sequences": 1, "test_frames": 2, "seed": 0,
            "train_video_len": 2, "dancers": 1, "backgrounds": 1, "workers": 1}
"""The least value of each integer option of :func:`generate_dataset` (a spec's ``synth:`` is checked
against them before a study is created)."""
MIN_SIDE = 16
"""The smallest frame side a person can be drawn in, in pixels."""
OPTION_HELP = {
    "train_frames": "training frames",
    "val_frames": "validation frames",
    "test_sequences": "test sequences",
    "test_frames": "poses per test sequence (a first frame, then poses to predict)",
    "size": "HxW of the written PNGs (e.g. 64x128, each side >= 16)",
    "seed": "random seed",
    "train_video_len": "frames per training video",
    "dancers": "N: the videos show N dancers, each always in the same look and setting (default: every video its "
               "own dancer and background)",
    "backgrounds": "N: the backgrounds come from N settings, independently of the dancers (default: each look its "
                   "own background)",
    "spotlight": "light every video with a coloured spotlight that wanders at random (its next step is chance: "
                 "what a cVAE's latent is for)",
    "lighting": "give every video its own exposure and colour of light",
    "workers": "processes that render (the output does not depend on them)",
    "progress": "print a progress line to stderr",
}
"""Each keyword option of :func:`generate_dataset`, said for people: `cvae data synth`'s flags and a spec's
``synth:`` keys are both made from the function's signature and these (a test holds them equal)."""


def parse_size(raw: object) -> tuple[int, int]:
    """A frame size given as ``"64x128"`` (H x W, the CLI's and a spec's text) or ``[64, 128]``: ``(64, 128)``.

    Raises:
        ValueError: saying what is wrong ("must be HxW ..." or "each side must be >= 16").
    """
    if isinstance(raw, str) and re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*", raw):
        height, width = (int(v) for v in raw.lower().split("x"))
    elif isinstance(raw, (list, tuple)) and len(raw) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw):
        height, width = raw
    else:
        raise ValueError("must be HxW (e.g. 64x128) or [H, W]")
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"each side must be >= {MIN_SIDE}")
    return height, width


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_size(size: object) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"size must be a (height, width) pair, got {size!r}")
    return _check_int("size[0] (height)", size[0], 1), _check_int("size[1] (width)", size[1], 1)


def _write_manifest(path: Path, manifest: dict) -> None:
    # Write-then-rename so an interrupted run never leaves a half-written manifest.
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _imap(jobs: list[_Job], seed: int, size: tuple[int, int], workers: int) -> Iterator[int]:
    if workers == 1:
        for job in jobs:
            yield _run_job(job, seed, size)
        return
    with multiprocessing.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_run_job_star, [(job, seed, size) for job in jobs])


def generate_dataset(
    out: str | os.PathLike,
    *,
    train_frames: int = 1600,
    val_frames: int = 630,
    test_sequences: int = 5,
    test_frames: int = 630,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
    train_video_len: int = 400,
    dancers: int | None = None,
    backgrounds: int | None = None,
    spotlight: bool = False,
    lighting: bool = False,
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Writes the synthetic dataset under ``out`` in the lab's layout (see module doc).

    The training set concatenates videos of ``train_video_len`` frames (the last one
    shorter if needed), each with its own dancer, numbered continuously; validation
    is one video and every test sequence is its own video. Output is byte-identical
    for identical arguments, whatever ``workers`` is.

    ``out/synth.json`` records the arguments: calling again with the same ones
    returns at once without touching any file, and calling with different ones
    raises instead of mixing two datasets.

    Args:
        out: Dataset root; created if missing.
        train_frames: Number of training frames (>= 1).
        val_frames: Number of validation frames (>= 1).
        test_sequences: Number of test videos (>= 1).
        test_frames: Frames per test video (>= 2: a first frame plus poses to predict).
        size: ``(H, W)`` of every PNG (each >= 16).
        seed: Non-negative master seed.
        train_video_len: Frames per training video (>= 2).
        dancers: None (the default): every video has its own dancer (proportions, clothes, skin, hair)
            and background, so a model must carry the look over from the first frame. N >= 1: the videos
            show N dancers, each always in the same look and setting, as a dataset filmed with a few
            subjects does; training video v shows dancer v % N, the validation video dancer 0 and test
            sequence i dancer i % N. The motion is every video's own either way.
        backgrounds: None (the default): the background comes with the look (the video's, or its
            dancer's). N >= 1: the backgrounds are drawn from N settings, independently of the dancers:
            training video v shows setting (v // dancers) % N, so every dancer meets every setting, and
            held-out video i shows setting i % N. With ``dancers=1`` the previous frame is then the only
            place a model can find the video's background.
        spotlight: Light every video with a soft, coloured spotlight (:class:`Spotlight`) whose centre
            wanders about a resting place, an independent random step each frame: where it is shows in the
            previous frame, where it goes next is chance, which a cVAE's latent can carry.
        lighting: Give every video its own exposure and colour of light (:class:`Lighting`: a gain per
            colour channel over the whole frame), which only its frames show.
        workers: Processes used to render (>= 1); does not change the output.
        progress: Print a progress line to stderr.

    Returns:
        Summary with ``root``, the frame/sequence counts, ``size``, ``seed``,
        ``train_videos``, ``frames_written``, ``cached`` and ``seconds`` (this call).

    Raises:
        ValueError: On an invalid argument (the message names it), or if ``out``
            holds a dataset made with other arguments or data not made by this function.
    """
    began = time.perf_counter()
    args = {
        "train_frames": _check_int("train_frames", train_frames, MINIMUMS["train_frames"]),
        "val_frames": _check_int("val_frames", val_frames, MINIMUMS["val_frames"]),
        "test_sequences": _check_int("test_sequences", test_sequences, MINIMUMS["test_sequences"]),
        "test_frames": _check_int("test_frames", test_frames, MINIMUMS["test_frames"]),
        "size": list(_check_size(size)),
        "seed": _check_int("seed", seed, MINIMUMS["seed"]),
        "train_video_len": _check_int("train_video_len", train_video_len, MINIMUMS["train_video_len"]),
    }
    if dancers is not None:  # recorded only when set: datasets made before the option keep their manifest
        args["dancers"] = _check_int("dancers", dancers, MINIMUMS["dancers"])
    if backgrounds is not None:
        args["backgrounds"] = _check_int("backgrounds", backgrounds, MINIMUMS["backgrounds"])
    for name, value in (("spotlight", spotlight), ("lighting", lighting)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        if value:  # recorded only when set, as dancers
            args[name] = True
    if min(args["size"]) < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE} x {MIN_SIDE} to draw a person, got {tuple(args['size'])}")
    workers = _check_int("workers", workers, MINIMUMS["workers"])
    size_hw = (args["size"][0], args["size"][1])

    root = Path(out)
    manifest_path = root / MANIFEST_NAME
    summary = {
        "root": str(root),
        **{k: v for k, v in args.items() if k != "size"},
        "size": size_hw,
        "train_videos": -(-args["train_frames"] // args["train_video_len"]),
        "format_version": FORMAT_VERSION,
    }
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("args") != args:
            raise ValueError(
                f"{root} already holds a synthetic dataset made with different arguments "
                f"(stored {manifest.get('args')}, format {manifest.get('format_version')}; "
                f"requested {args}, format {FORMAT_VERSION}); use another directory or delete it"
            )
        if manifest.get("complete"):
            return {**summary, "frames_written": 0, "cached": True, "seconds": time.perf_counter() - began}
        # Same arguments but an interrupted run: regenerating overwrites every file
        # with identical bytes, so it is safe to simply start again.
    elif any((root / split).exists() for split in ("train", "val", "test")):
        raise ValueError(f"{root} already contains train/, val/ or test/ data without a {MANIFEST_NAME}; "
                         "refusing to overwrite it, use an empty directory")  # fmt: skip

    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "args": args, "complete": False}
    _write_manifest(manifest_path, manifest)
    jobs = _plan(root, args)
    total = sum(job.stop - job.start for job in jobs)
    done = 0
    for n in _imap(jobs, args["seed"], size_hw, workers):
        done += n
        if progress:
            print(
                f"\rsynth: {done}/{total} frames",
                end="" if done < total else "\n",
                file=sys.stderr,
                flush=True,
            )
    _write_manifest(manifest_path, {**manifest, "complete": True})
    return {**summary, "frames_written": done, "cached": False, "seconds": time.perf_counter() - began}


__all__ = [
    "FORMAT_VERSION",
    "KEYPOINT_NAMES",
    "OPENPOSE_COLORS",
    "OPENPOSE_LIMBS",
    "Appearance",
    "DancerMotion",
    "Skeleton",
    "Lighting",
    "Spotlight",
    "generate_dataset",
    "render_frame",
    "render_pose",
]
