#!/bin/bash
# The full-size efficiency table on one CUDA GPU, as run once on an H200 (docs/benchmarks.md,
# "Where we stand against the paper"; profiles in docs/h200/): peak memory of one transformer
# forward and step/image latency of SD3.5 Large Turbo and FLUX.1-schnell, original and cut + NF4,
# random weights from the full-size configs, then the mini teacher's render throughput by batch size.
#
#   ARCH=../shared/data/architectures OUT=profiles bash benchmarks/device_h200.sh
#
# DEV=meta counts bytes only (no GPU), to check the commands before spending GPU time.
set -u
DEV=${DEV:-cuda}
ARCH=${ARCH:-../shared/data/architectures}
OUT=${OUT:-profiles}
PY=${PY:-python3}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SD=$ARCH/stable-diffusion-3.5-large-turbo.json
FX=$ARCH/FLUX.1-schnell.json
# The paper's released SD3.5-LT cuts (docs/hpp-rule.md); FLUX has none published: HPP on position alone.
P20=25-28,31-34
P30=$P20; for b in 13 14 15 16 17 18; do P30=$P30,$b:ff,$b:ff_context; done
P30=$P30,14:norm1_context,15:norm1_context,16:norm1_context
prof() {
  name=$1; shift; echo "== $name"
  $PY -m hprune.cli profile --device "$DEV" --out "$OUT/$name.json" --overwrite --warmup 2 --repeats 5 "$@" 2>&1 | tail -1
}
prof sd35lt_bf16 --arch-config "$SD"
prof sd35lt_20_nf4 --arch-config "$SD" --remove $P20 --scheme nf4
prof sd35lt_30_nf4 --arch-config "$SD" --remove "$P30" --scheme nf4
prof flux_schnell_bf16 --arch-config "$FX"
prof flux_schnell_20_nf4 --arch-config "$FX" --remove 29-45 --scheme nf4
prof flux_schnell_30_nf4 --arch-config "$FX" --remove 20:norm,21-45 --scheme nf4
if [ "$DEV" = cuda ]; then
  $PY benchmarks/render_throughput.py --model mini --device cuda --prompts 24 --seeds 2 \
    --batch-sizes 1,16,64,auto --repeats 2 | tee "$OUT/render_throughput.txt"
fi
