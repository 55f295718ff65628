#!/usr/bin/env bash
# Runs one command as N JAX processes on this machine, talking over loopback,
# each with D CPU devices (fake ones beyond the first): a multi-host run to
# try or test on one machine.
#
#   launch/local.sh --processes N [--devices-per-process D] [--port P] -- COMMAND...
#
#   launch/local.sh --processes 2 --devices-per-process 4 -- \
#       python -m spectral_jax.train --config configs/vae.py:tiny --workdir runs/vae
#
# Every process gets SPECTRAL_JAX_COORDINATOR_ADDRESS=127.0.0.1:P,
# SPECTRAL_JAX_NUM_PROCESSES=N and SPECTRAL_JAX_PROCESS_ID (its rank; the
# trainer starts jax.distributed from them), JAX_PLATFORMS=cpu and
# --xla_force_host_platform_device_count=D added to XLA_FLAGS. Its output
# lines start with "[RANK] ". P defaults to a free port. COMMAND should be
# the program itself (or exec it): signals and kills reach that process,
# not what it starts.
#
# If a process fails, the others are killed at once (they would wait for it
# in their next collective) and the script exits with the failed process's
# status; otherwise with 0 once all are done. SIGTERM or SIGINT (Ctrl-C)
# reaches every process as SIGTERM, a preemption notice (trainers save the
# step they are at and exit 0); a second one kills them.
set -euo pipefail

usage() {
  echo "usage: $0 --processes N [--devices-per-process D] [--port P] -- COMMAND..." >&2
  exit 2
}

positive() {  # NAME VALUE: VALUE must be a positive integer.
  if ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: $1 must be a positive integer, got '$2'" >&2
    usage
  fi
}

processes="" devices=1 port=""
while [ $# -gt 0 ]; do
  case $1 in
    --processes) [ $# -ge 2 ] || usage; processes=$2; shift 2 ;;
    --devices-per-process) [ $# -ge 2 ] || usage; devices=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "$0: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "$processes" ] || { echo "$0: --processes is required" >&2; usage; }
[ $# -gt 0 ] || { echo "$0: no command after --" >&2; usage; }
positive --processes "$processes"
positive --devices-per-process "$devices"
if [ -z "$port" ]; then
  # The port the kernel picks for a socket bound to port 0 is free.
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
positive --port "$port"

export SPECTRAL_JAX_COORDINATOR_ADDRESS="127.0.0.1:$port"
export SPECTRAL_JAX_NUM_PROCESSES="$processes"
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices"

prefix() {  # RANK: prefixes each line of stdin with "[RANK] ", unbuffered.
  awk -v tag="[$1] " '{ print tag $0; fflush() }'
}

pids=() prefixers=()
signals=0
# shellcheck disable=SC2317  # Called by the trap.
forward() {
  signals=$((signals + 1))
  local signal=TERM
  if [ "$signals" -gt 1 ]; then signal=KILL; fi
  echo "$0: sending SIG$signal to every process" >&2
  kill "-$signal" "${pids[@]}" 2>/dev/null || true
}
# Before the first process starts: with bash's default action a signal that
# came while they start would end the launcher and leave them running.
trap forward TERM INT
for ((rank = 0; rank < processes; rank++)); do
  # Each stream through its own prefixer, opened apart so that its pid can
  # be waited for: the last lines are printed before the script exits.
  exec {out}> >(prefix "$rank"); prefixers+=("$!")
  exec {err}> >(prefix "$rank" >&2); prefixers+=("$!")
  SPECTRAL_JAX_PROCESS_ID=$rank "$@" 1>&"$out" 2>&"$err" &
  pids+=("$!")
  exec {out}>&- {err}>&-
done
if [ "$signals" -gt 0 ]; then  # Also to the processes started after the signal.
  kill -TERM "${pids[@]}" 2>/dev/null || true
fi

# Polled, not `wait -n`: bash drops a killed job from the job table once it
# has reported it, and `wait -n` would then miss it; `wait PID` still
# returns a finished process's status.
status=0 live=("${pids[@]}")
while [ ${#live[@]} -gt 0 ]; do
  sleep 0.2
  remaining=()
  for rank in "${!pids[@]}"; do
    pid=${pids[$rank]}
    [[ " ${live[*]} " == *" $pid "* ]] || continue
    if kill -0 "$pid" 2>/dev/null; then
      remaining+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$code
      echo "$0: process $rank exited with status $code; killing the others" >&2
    fi
  done
  live=("${remaining[@]}")
  if [ "$status" -ne 0 ] && [ ${#live[@]} -gt 0 ]; then
    kill -KILL "${live[@]}" 2>/dev/null || true
  fi
done
wait "${prefixers[@]}"
exit "$status"
