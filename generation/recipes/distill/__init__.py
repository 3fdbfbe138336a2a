"""Recovering a pruned model from its teacher: PWP (freeze before the first pruned block) and SGDistill.

Modules: ``data`` (captioned images), ``cache`` (text embeddings and VAE latents computed
once), ``pair`` (teacher and student matched by original block index), ``freeze`` (PWP),
``prefix`` (the shared frozen prefix run once), ``losses`` (output and feature distillation),
``weighting`` (per-block weights and optimiser groups), ``config`` (the run's settings),
``sampling`` (the stateless sample stream), ``step`` (one training step and its set-up),
``checkpoints`` (exact resume and the run log), ``trainer`` (the run behind ``hprune distill``).
"""
