# Set up a lent GPU machine (no network) for the benchmarks; source it from the directory that holds
# the carried wheels in .whl/ (this package's own wheel among them):
#
#     . benchmarks/lent_machine.sh
#
# The machine's image has torch 2.11 and transformers 5.17 but no lmms-eval, datasets or decord; the
# wheels bring transformers 5.25 and lmms-eval's imports (benchmarks/RESULTS.md lists them). They go
# to /tmp/site, ahead of the image's packages on PYTHONPATH.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; return 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, lmms_eval, decord, llamavid_eval; print('lent machine:', torch.cuda.get_device_name(), 'torch', torch.__version__, 'transformers', transformers.__version__)"
