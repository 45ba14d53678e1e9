"""The Lab-4 cVAE trainer: model, data, schedules, training loop, rollouts, checkpoints."""
