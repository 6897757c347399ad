#!/usr/bin/env bash
# The PyTorch example under the worker agent, one slot per GPU, against a local server on
# SQLite: the check that issue 4 asks for on a GPU machine (docs/GPU_CHECK.md records a run).
#   PYTHON=python3 OUT=/tmp/gpu-check scripts/gpu_agent_check.sh
# Without a GPU it runs the same way on one CPU slot.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/tuner-gpu-check}
PORT=${PORT:-8765}
mkdir -p "$OUT"
work=$(mktemp -d)
export TUNER_ADMIN_TOKEN=gpu-check-token TUNER_TOKEN=gpu-check-token
export TUNER_URL="http://127.0.0.1:$PORT"

(nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader || echo "no nvidia-smi") \
  | tee "$OUT/gpus.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())" \
  | tee -a "$OUT/gpus.txt"

"$PY" -m tuner.cli server --port "$PORT" --db "sqlite:///$work/tuner.db" >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
"$PY" - <<PYEOF
import time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("$TUNER_URL/healthz", timeout=1); break
    except OSError:
        time.sleep(0.5)
else:
    raise SystemExit("the server did not start: see server.log")
PYEOF

"$PY" -m tuner.cli submit examples/pytorch.yaml | tee "$OUT/submit.txt"
start=$(date +%s)
"$PY" -m tuner.cli worker --experiment 1 --gpus all --exit-when-done --echo \
  --checkpoint-root "$work/checkpoints" -- "$PY" examples/pytorch_mnist_like.py \
  >"$OUT/agent.log" 2>&1
echo "agent finished in $(( $(date +%s) - start )) s" | tee "$OUT/summary.txt"
grep -c "on cuda" "$OUT/agent.log" | sed 's/^/epochs trained on cuda: /' | tee -a "$OUT/summary.txt" || true
grep -c "resumed from" "$OUT/agent.log" | sed 's/^/resumes from a checkpoint: /' | tee -a "$OUT/summary.txt" || true
"$PY" -m tuner.cli show 1 | tee "$OUT/show.txt"
