#!/usr/bin/env bash
# Prepares a data set with one extraction worker per core, logging to
# DATA_DIR.log, and retries after a crash: `prepare` resumes where it stopped,
# so a retry only redoes the videos that were in flight.
#
#   launch/prepare.sh VIDEOS_DIR DATA_DIR [prepare flags...]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 VIDEOS_DIR DATA_DIR [spectral-jax prepare flags...]" >&2
  exit 2
fi
videos=$1 data=$2
shift 2
log="${data%/}.log"
for attempt in 1 2 3; do
  status=0
  spectral-jax prepare "$videos" -o "$data" --workers "$(nproc)" "$@" 2>>"$log" || status=$?
  [ "$status" -eq 0 ] && exit 0
  # Exit status 2 is bad input: retrying cannot help.
  [ "$status" -eq 2 ] && exit 2
  echo "prepare failed (attempt $attempt, status $status); see $log" >&2
done
exit 1
