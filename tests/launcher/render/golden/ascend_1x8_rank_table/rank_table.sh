#!/bin/bash
# packrun: rank-table launch of run demo: 1 server(s) x 8 Ascend card(s), 8 ranks.
# Usage: bash rank_table.sh
# Each rank runs in ranks/<rank>/ (compile cache, dumps), bound to its own range of cores.
# Logs: logs/worker_<rank>.log, CANN's logs/ascend/rank_<rank>/. The first rank that fails
# stops the others of this server; its exit status is the script's.
set -uo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR" || exit 1
export RANK_TABLE_FILE="$RUN_DIR/rank_table.json"
export RANK_SIZE=8
export HCCL_CONNECT_TIMEOUT=120
export HCCL_EXEC_TIMEOUT=1836
SERVER_INDEX=0
DEVICE_IDS=(0 1 2 3 4 5 6 7)
RANK_IDS=(0 1 2 3 4 5 6 7)
# One contiguous, NUMA-local range of the cores this script may use per rank (launcher/core/cores.py)
CORE_LIST=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 8) || exit 2
read -ra CORES <<< "$CORE_LIST"
PIDS=()
RANKS=()
stop_ranks() {
    local pid t alive
    [ "${#PIDS[@]}" -gt 0 ] || return 0
    kill -TERM "${PIDS[@]}" 2>/dev/null
    for ((t = 0; t < 100; t++)); do
        alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" -eq 1 ] || break
        sleep 0.1
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null
    wait
    return 0
}
trap 'stop_ranks; exit 143' TERM
trap 'stop_ranks; exit 130' INT
watch_ranks() {
    local i
    FAILED_RANK="" STATUS=0 RC=0
    while [ "${#PIDS[@]}" -gt 0 ] && [ -z "$FAILED_RANK" ]; do
        for i in "${!PIDS[@]}"; do
            kill -0 "${PIDS[$i]}" 2>/dev/null && continue
            wait "${PIDS[$i]}"
            STATUS=$?
            unset 'PIDS[i]'
            if [ "$STATUS" -eq 75 ]; then
                RC=75
            elif [ "$STATUS" -ne 0 ]; then
                FAILED_RANK=${RANKS[$i]}
                break
            fi
        done
        sleep 0.2
    done
    if [ -n "$FAILED_RANK" ]; then
        if [ "$STATUS" -gt 128 ]; then
            HOW="was killed by signal $((STATUS - 128))"
        else
            HOW="exited with status $STATUS"
        fi
        echo "packrun: rank $FAILED_RANK $HOW; log: $RUN_DIR/logs/worker_$FAILED_RANK.log; stopping the other ranks of this node" >&2
        stop_ranks
        exit "$STATUS"
    fi
}
for ((i = 0; i < 8; i++)); do
    SLOT=$((SERVER_INDEX * 8 + i))
    export DEVICE_ID=${DEVICE_IDS[$SLOT]} RANK_ID=${RANK_IDS[$SLOT]}
    export ASCEND_PROCESS_LOG_PATH="$RUN_DIR/logs/ascend/rank_$RANK_ID"
    mkdir -p "$RUN_DIR/ranks/$RANK_ID" "$ASCEND_PROCESS_LOG_PATH" || exit 1
    BIND=(taskset -c "${CORES[$i]}")
    echo "packrun: rank $RANK_ID on device $DEVICE_ID, cores ${CORES[$i]}, log $RUN_DIR/logs/worker_$RANK_ID.log"
    (cd "$RUN_DIR/ranks/$RANK_ID" && exec "${BIND[@]}" "$PYTHON" /opt/packrun/src/train.py "$RUN_DIR") > "$RUN_DIR/logs/worker_$RANK_ID.log" 2>&1 &
    PIDS+=("$!")
    RANKS+=("$RANK_ID")
done
watch_ranks
if [ "$RC" -ne 0 ]; then
    echo "packrun: the ranks of server $SERVER_INDEX stopped on request (exit $RC)"
    exit "$RC"
fi
echo "packrun: all 8 rank(s) of server $SERVER_INDEX finished"
