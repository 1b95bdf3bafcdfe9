#!/bin/bash
# packrun: msrun launch of run demo: 2 node(s) x 4 GPU worker(s), 8 in all.
# Started on every node by job.sbatch (srun, one task per node), which exports MASTER_ADDR and
# MASTER_PORT; the node rank is Slurm's node id.
# Logs: logs/worker_<rank>.log, and logs/scheduler.log on the master node.
# Each worker runs in ranks/<rank>/ (bin/python), bound to its own range of this node's cores.
set -euo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR"
# msrun starts each worker as `python SCRIPT`: bin/python is the interpreter rendered with.
export PATH="$RUN_DIR/bin:$PATH"
export MS_RETRY_INTERVAL_LOWER=1
export MS_RETRY_INTERVAL_UPPER=1
NODE_RANK=$SLURM_NODEID
: "${MASTER_ADDR:?MASTER_ADDR is exported by job.sbatch}" "${MASTER_PORT:?MASTER_PORT is exported by job.sbatch}"
# Every node resolves the scheduler's address itself (msrun would fail with a traceback).
MASTER_IP=$(getent ahosts "$MASTER_ADDR" | awk 'NR == 1 {print $1}') || MASTER_IP=""
if [ -z "$MASTER_IP" ]; then
    echo "msrun.sh: $HOSTNAME: the master address '$MASTER_ADDR' does not resolve here; set master_addr to an IP address or to a name every node resolves (DNS or /etc/hosts)" >&2
    exit 2
fi
case $MASTER_IP in
127.* | ::1 | ::ffff:127.*)
    echo "msrun.sh: $HOSTNAME: master_addr '$MASTER_ADDR' resolves to $MASTER_IP, a loopback address the other nodes cannot reach; set master_addr to node 0's network IP, or map the name to that IP in /etc/hosts instead of 127.0.1.1" >&2
    exit 2
    ;;
esac
# srun starts every node at once; workers that register before the scheduler (started by node
# 0's msrun) listens can stall for a minute in a retry loop, so wait for its port first.
if [ "$NODE_RANK" -ne 0 ]; then
    DEADLINE=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/$MASTER_ADDR/$MASTER_PORT") 2>/dev/null; do
        if [ "$SECONDS" -ge "$DEADLINE" ]; then
            echo "packrun: node $NODE_RANK: no scheduler at $MASTER_ADDR:$MASTER_PORT after 60 s (cluster_timeout); is node 0 started?" >&2
            exit 1
        fi
        sleep 0.2
    done
fi
MSRUN_BIND=""
# One contiguous, NUMA-local range of this node's cores per local rank (launcher/core/cores.py):
# msrun binds them (--bind_core) where it can read them; elsewhere bin/python does (taskset).
export PACKRUN_DEVICE=GPU
# (one interpreter start for both: the cpulists' line, then msrun's JSON line or none)
CORES=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 4 --with-msrun) || exit 2
{ IFS= read -r RANK_CORES; IFS= read -r MSRUN_BIND || true; } <<< "$CORES"
if [ -z "$MSRUN_BIND" ]; then
    export PACKRUN_RANK_CORES="$RANK_CORES"
fi
echo "packrun: node $NODE_RANK: cores of local ranks 0..3: $RANK_CORES"
echo "packrun: node $NODE_RANK of 2: msrun with 4 worker(s), scheduler $MASTER_ADDR:$MASTER_PORT"
# msrun, run as its module so that it uses the same interpreter as the workers
exec "$PYTHON" -m mindspore.parallel.cluster.run \
    --worker_num=8 --local_worker_num=4 --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    --log_dir="$RUN_DIR/logs" --join=True --cluster_time_out=60 \
    ${MSRUN_BIND:+"--bind_core=$MSRUN_BIND"} /opt/packrun/src/train.py "$RUN_DIR"
