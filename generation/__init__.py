"""Everything that touches diffusion models: adapters, toy models, contribution analysis, pruning, distillation, quantisation, profiling, rendering, scoring, and the mini world."""
