#!/bin/bash
# packrun: rank-table launch of run demo: 2 server(s) x 8 Ascend card(s), 16 ranks.
# Usage: bash rank_table.sh [SERVER_INDEX], on every server: its place in rank_table.json,
# 0..1; without it, the server whose server_id is one of this machine's addresses.
# Each rank runs in ranks/<rank>/ (compile cache, dumps), bound to its own range of cores.
# Logs: logs/worker_<rank>.log, CANN's logs/ascend/rank_<rank>/. packrun's supervisor of local
# ranks (launcher/supervise/supervisor.py) starts the commands below: the first rank that fails
# stops the others of this server and its exit status is the script's; ranks that stop on
# request (exit status 75) let the others finish their step.
set -uo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR" || exit 1
export RANK_TABLE_FILE="$RUN_DIR/rank_table.json"
export RANK_SIZE=16
export MS_RETRY_INTERVAL_LOWER=1
export MS_RETRY_INTERVAL_UPPER=1
export HCCL_CONNECT_TIMEOUT=600
export HCCL_EXEC_TIMEOUT=1836
if [ $# -ge 1 ]; then
    SERVER_INDEX=$1
    if ! [[ $SERVER_INDEX =~ ^[0-9]+$ ]] || [ "$SERVER_INDEX" -ge 2 ]; then
        echo "rank_table.sh: SERVER_INDEX is '$SERVER_INDEX'; give 0..1" >&2
        exit 2
    fi
else
    SERVER_INDEX=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node server-index "$RANK_TABLE_FILE") || exit 2
fi
# The node checks (npu-smi, hccn_tool, CANN environment: launcher/preflight/node.py) before any
# rank starts.
PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node check "$RUN_DIR" "$SERVER_INDEX" >/dev/null || exit 2
DEVICE_IDS=(0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7)
RANK_IDS=(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
# One contiguous, NUMA-local range of the cores this script may use per rank (launcher/core/cores.py)
CORE_LIST=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 8) || exit 2
read -ra CORES <<< "$CORE_LIST"
# Each rank: its environment (env VAR=VALUE ...) and command, started in ranks/<rank>/
RANKS=()
for ((i = 0; i < 8; i++)); do
    SLOT=$((SERVER_INDEX * 8 + i))
    DEVICE_ID=${DEVICE_IDS[$SLOT]} RANK_ID=${RANK_IDS[$SLOT]}
    ASCEND_LOG="$RUN_DIR/logs/ascend/rank_$RANK_ID"
    mkdir -p "$RUN_DIR/ranks/$RANK_ID" "$ASCEND_LOG" || exit 1
    BIND=(taskset -c "${CORES[$i]}")
    echo "packrun: rank $RANK_ID on device $DEVICE_ID, cores ${CORES[$i]}, log $RUN_DIR/logs/worker_$RANK_ID.log"
    RANKS+=(--rank "$RANK_ID" env DEVICE_ID="$DEVICE_ID" RANK_ID="$RANK_ID" ASCEND_PROCESS_LOG_PATH="$ASCEND_LOG"
            "${BIND[@]}" "$PYTHON" /opt/packrun/src/train.py "$RUN_DIR")
done
# exec: the supervisor becomes this script's process (a signal to the script stops every rank)
PYTHONPATH=/opt/packrun${PYTHONPATH:+:$PYTHONPATH} exec "$PYTHON" -m launcher.node supervise-ranks "$RUN_DIR" "$SERVER_INDEX" "${RANKS[@]}"
