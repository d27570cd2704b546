# Sourced by bench/gpu_run.sh and tools/gpu_train.sh on the GPU machine: quiet offline settings, diffusers from the
# carried wheels (.whl/, see the header of bench/gpu_run.sh) when the machine lacks it, and pintor from src/.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "install the wheels first (see the header of bench/gpu_run.sh)"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
