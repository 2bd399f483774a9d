#!/bin/sh
# The Python environment of the interoperability tests: a virtual environment
# in build/pyenv with numpy and safetensors from PyPI. Reference tools only:
# the engine never needs Python.
set -eu
cd "$(dirname "$0")/.."
ENV=build/pyenv
if [ ! -x "$ENV/bin/python" ]; then
    python3 -m venv "$ENV"
fi
if ! "$ENV/bin/python" -c 'import numpy, safetensors' 2>/dev/null; then
    echo "python-env: installing numpy and safetensors into $ENV"
    "$ENV/bin/python" -m pip install -q --disable-pip-version-check numpy 'safetensors>=0.4'
fi
"$ENV/bin/python" -c 'import numpy, safetensors; print("python-env: numpy", numpy.__version__, "safetensors", safetensors.__version__)'
