"""Sweeps: a YAML spec in, an Optuna study out, every trial a tracked W&B run."""
