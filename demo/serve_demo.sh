#!/usr/bin/env bash
# `make demo`: set up the demo study and serve it on http://127.0.0.1:5000 (DEMO_PORT to change).
# Serves demo/stimuli (the shipped mini-world set) when it is there; otherwise renders a small
# stand-in set from random-weight toy models, and the pages say so. Re-running reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."
H=.venv/bin/hprune
export HPRUNE_INSTANCE="${HPRUNE_INSTANCE:-$PWD/instance/demo}"
unset DATABASE_URL   # the demo keeps its own SQLite database in the instance folder
PORT="${DEMO_PORT:-5000}"

if [ -f demo/stimuli/manifest.csv ]; then
  STIMULI=demo/stimuli
  NOTE="Demo study serving demo/stimuli: images rendered by the compressed mini-world models."
else
  STIMULI="$HPRUNE_INSTANCE/toy-stimuli"
  NOTE="Demo study serving stand-in images from random-weight toy models (demo/stimuli is not shipped yet): expect noise, not pictures."
  if [ ! -f "$STIMULI/manifest.csv" ]; then
    TOY="$HPRUNE_INSTANCE/toy"
    mkdir -p "$TOY"
    for arch in sd3 sd35 flux; do
      [ -d "$TOY/$arch" ] || $H toy-model --arch "$arch" --out "$TOY/$arch"
    done
    : > "$TOY/variants.yaml"
    for arch in sd3 sd35 flux; do
      printf -- '- name: toy-%s\n  model: %s\n  pipeline: {steps: 2, guidance: 0.0, resolution: 64}\n' \
        "$arch" "$arch" >> "$TOY/variants.yaml"
    done
    printf '%s\n' "a red circle" "two blue squares" "a yellow triangle left of a green circle" \
      "three red squares" "a green square above a blue circle" "a yellow circle" > "$TOY/prompts.txt"
    $H render --variants "$TOY/variants.yaml" --prompts "$TOY/prompts.txt" --seeds 0-1 \
      --out "$STIMULI" --device cpu
  fi
fi

$H study init
URL=$($H study import --manifest "$STIMULI/manifest.csv" --spec demo/study.yaml \
        --base-url "http://127.0.0.1:$PORT" | tee /dev/stderr | awk '/participant URL/ {print $3}')
ADMIN=$($H study admin create --username admin --generate --reset | awk '/one-time password/ {print $3}')
cat <<MSG

  Demo study:  $URL?PROLIFIC_PID=demo-$RANDOM&STUDY_ID=demo&SESSION_ID=demo
               ($NOTE)
  Admin:       http://127.0.0.1:$PORT/admin/  user admin, one-time password $ADMIN

MSG
HPRUNE_DEMO_NOTE="$NOTE" exec $H study serve --host 127.0.0.1 --port "$PORT"
