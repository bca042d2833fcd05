"""Metrics: pure functions of tensors. Collecting model outputs (gradients, logits) is kept apart from scoring."""

from .gus import gus_statistic, gus_summary, input_gradients
from .mia import loss_mia, per_sample_loss

__all__ = ["gus_statistic", "gus_summary", "input_gradients", "loss_mia", "per_sample_loss"]
