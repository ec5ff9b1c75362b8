"""Shared code for the pipeline stages: params, data, augmentation, models, training."""
