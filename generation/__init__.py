"""Everything that touches diffusion models: adapters, toy models, contribution analysis, pruning, distillation, quantisation, profiling, rendering, scoring, and the mini world."""

from generation.quiet import drop_optional_package_notices

drop_optional_package_notices()  # before diffusers or bitsandbytes log them (see generation.quiet)
