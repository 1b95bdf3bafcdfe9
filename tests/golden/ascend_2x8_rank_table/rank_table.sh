#!/bin/bash
# packrun: rank-table launch of run demo: 2 server(s) x 8 Ascend card(s), 16 ranks.
# Usage: bash rank_table.sh SERVER_INDEX, on every server: its place in rank_table.json and in
# hosts, 0..1.
# Logs: logs/worker_<rank>.log. Exits non-zero if any rank failed.
set -uo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR" || exit 1
export RANK_TABLE_FILE="$RUN_DIR/rank_table.json"
export RANK_SIZE=16
export HCCL_CONNECT_TIMEOUT=120
SERVER_INDEX=${1:?usage: bash rank_table.sh SERVER_INDEX (0..1, this server in rank_table.json)}
if ! [[ $SERVER_INDEX =~ ^[0-9]+$ ]] || [ "$SERVER_INDEX" -ge 2 ]; then
    echo "rank_table.sh: SERVER_INDEX is '$SERVER_INDEX'; give 0..1" >&2
    exit 2
fi
RANK_START=$((SERVER_INDEX * 8))
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null' INT TERM
for ((i = 0; i < 8; i++)); do
    export DEVICE_ID=$i RANK_ID=$((RANK_START + i))
    echo "packrun: rank $RANK_ID on device $DEVICE_ID, log $RUN_DIR/logs/worker_$RANK_ID.log"
    "$PYTHON" /opt/packrun/src/train.py "$RUN_DIR" > "$RUN_DIR/logs/worker_$RANK_ID.log" 2>&1 &
    PIDS+=("$!")
done
FAILED=""
for i in "${!PIDS[@]}"; do
    wait "${PIDS[$i]}" || FAILED="$FAILED $((RANK_START + i))"
done
if [ -n "$FAILED" ]; then
    echo "packrun: rank(s)$FAILED failed; see $RUN_DIR/logs/worker_<rank>.log" >&2
    exit 1
fi
echo "packrun: all 8 rank(s) of server $SERVER_INDEX finished"
