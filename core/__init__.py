"""The Lab-4 cVAE trainer: model, data, schedules, training loop, rollouts, checkpoints."""

import os

# oneDNN (torch's CPU convolutions) keeps 1024 compiled kernels by default. Training mixes batch shapes
# (whole-chunk and per-step calls, NHWC, forward and two backward passes per convolution, batched
# rollouts), which overflows it: kernels were rebuilt over and over (benchmarks/core_throughput.py at the
# lab's sizes, teacher forcing off: 5.7 -> 6.3 frames/s). A documented oneDNN setting, read when the first
# kernel is built; the user's own value wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")
