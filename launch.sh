#!/usr/bin/env bash
# Launch segjax.main here, or on every worker of a Cloud TPU VM (pod slices included).
#
#   ./launch.sh local CONFIG WORKDIR [--config.x=y ...]
#   ./launch.sh tpu NAME ZONE ACCELERATOR CONFIG WORKDIR [--config.x=y ...]
#
# tpu: creates the TPU VM NAME if it does not exist (ACCELERATOR e.g. v4-32; runtime
# $TPU_VERSION, default tpu-ubuntu2204-base), copies this checkout to every worker, installs
# segjax with jax[tpu] into a venv there, and runs the same command on all workers
# (--worker=all). JAX discovers the pod's coordinator itself, so no --coordinator_address is
# needed. WORKDIR must be storage every worker sees (a gs:// bucket for pods). Datasets and
# pretrained weights must already be on the workers (no downloads at run time).
set -euo pipefail

usage() { sed -n '2,13p' "$0"; exit 2; }
[[ $# -ge 1 ]] || usage
mode=$1; shift
repo=$(cd "$(dirname "$0")" && pwd)

case "$mode" in
  local)
    [[ $# -ge 2 ]] || usage
    config=$1; workdir=$2; shift 2
    cd "$repo"
    if [[ ! -x .venv/bin/python ]]; then
      python3 -m venv .venv && .venv/bin/pip install -q -e .
    fi
    exec .venv/bin/python -m segjax.main --config="$config" --workdir="$workdir" "$@"
    ;;
  tpu)
    [[ $# -ge 5 ]] || usage
    name=$1; zone=$2; accel=$3; config=$4; workdir=$5; shift 5
    version=${TPU_VERSION:-tpu-ubuntu2204-base}
    if ! gcloud compute tpus tpu-vm describe "$name" --zone="$zone" >/dev/null 2>&1; then
      echo "creating TPU VM $name ($accel, $version) in $zone"
      gcloud compute tpus tpu-vm create "$name" --zone="$zone" \
        --accelerator-type="$accel" --version="$version"
    fi
    tarball=$(mktemp -t segjax.XXXXXX.tar.gz)
    git -C "$repo" ls-files -z | tar -C "$repo" --null -T - -czf "$tarball"
    gcloud compute tpus tpu-vm scp "$tarball" "$name":segjax.tar.gz --zone="$zone" --worker=all
    rm -f "$tarball"
    extra=$(printf ' %q' "$@")
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
      set -e
      mkdir -p ~/segjax && tar -xzf ~/segjax.tar.gz -C ~/segjax && cd ~/segjax
      [[ -x .venv/bin/python ]] || python3 -m venv .venv
      .venv/bin/pip install -q -e . 'jax[tpu]'
      .venv/bin/python -m segjax.main --config=$config --workdir=$workdir$extra"
    ;;
  *) usage ;;
esac
