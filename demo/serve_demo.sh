#!/usr/bin/env bash
# `make demo`: set up the demo study and serve it on http://127.0.0.1:5000 (DEMO_PORT to change).
# Serves demo/stimuli (the shipped mini-world set) when it is there; otherwise renders a small
# stand-in set from random-weight toy models, and the pages say so. Re-running reuses what exists
# and never changes the admin password: a running demo keeps working.
set -euo pipefail
cd "$(dirname "$0")/.."
H="${HPRUNE:-.venv/bin/hprune}"                  # HPRUNE: another hprune (the tests use it)
PY="$(dirname "$H")/python"
export HPRUNE_INSTANCE="${HPRUNE_INSTANCE:-$PWD/instance/demo}"
unset DATABASE_URL   # the demo keeps its own SQLite database in the instance folder
PORT="${DEMO_PORT:-5000}"

# First, before anything is touched: is the port free? (A demo may be running there.)
BUSY=0
"$PY" - "$PORT" <<'PYTHON' || BUSY=$?
import sys
from hprune.errors import UserError
from study.wsgi import ensure_port_free
try:
    ensure_port_free("127.0.0.1", int(sys.argv[1]))
except UserError:
    sys.exit(3)
PYTHON
if [ "$BUSY" -eq 3 ]; then
  cat >&2 <<MSG
make demo: port $PORT is in use, perhaps by a demo already running (http://127.0.0.1:$PORT/).
  Nothing was changed. To run another demo beside it: DEMO_PORT=$((PORT + 1)) make demo
MSG
  exit 1
elif [ "$BUSY" -ne 0 ]; then
  exit "$BUSY"
fi

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
# Only a new admin gets a (temporary) password; an existing one keeps the password it has.
ADMIN=$($H study admin create --username admin --generate --exist-ok)
PASSWORD=$(printf '%s\n' "$ADMIN" | awk -F': ' '/temporary password/ {print $2}')
if [ -n "$PASSWORD" ]; then
  LOGIN="user admin, temporary password $PASSWORD (you choose your own at the first login)"
else
  LOGIN="user admin, the password you chose (lost it? $H study admin create --username admin --generate --reset)"
fi
cat <<MSG

  Demo study:  $URL?PROLIFIC_PID=demo-$RANDOM&STUDY_ID=demo&SESSION_ID=demo
               ($NOTE)
  Admin:       http://127.0.0.1:$PORT/admin/  $LOGIN

  The study commands find this demo's database with:
    export HPRUNE_INSTANCE=$HPRUNE_INSTANCE
  (or DATABASE_URL=sqlite:///$HPRUNE_INSTANCE/study.sqlite3), e.g.
    hprune study export --study demo --out demo-export/

MSG
HPRUNE_DEMO_NOTE="$NOTE" exec $H study serve --host 127.0.0.1 --port "$PORT"
