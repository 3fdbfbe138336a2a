"""Recovering a pruned model from its teacher: PWP (freeze before the first pruned block) and SGDistill.

Modules: ``data`` (captioned images), ``cache`` (text embeddings and VAE latents computed
once), ``losses`` (output and feature distillation), ``weighting`` (per-block weights and
optimiser groups), ``trainer`` (the training loop behind ``hprune distill``).
"""
