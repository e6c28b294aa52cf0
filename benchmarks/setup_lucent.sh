#!/usr/bin/env bash
# Create the separate virtual environment of the torch-lucent comparison (benchmarks/bench_synthesis.py,
# benchmarks/lucent_worker.py): benchmarks/.lucent-venv (~1.2 GB; set LUCENT_VENV to put it elsewhere).
#
# What it takes (torch-lucent 0.1.8, its last release, pins kornia<=0.4.1 and requires torchvision):
#   * torch 2.13.0, the same CPU build as the project's venv, so both sides run the same kernels;
#   * torch-lucent 0.1.8 and kornia 0.4.1 with --no-deps (their pins would pull torchvision and an old
#     torch); kornia 0.4.1 imports and runs under torch 2.13.0 (lucent calls kornia.warp_affine,
#     kornia.get_rotation_matrix2d and kornia.geometry.transform.translate, all present in 0.4.1);
#   * lucent's pure-Python imports: numpy, tqdm, pillow, decorator, ipython (not scikit-learn, pytest,
#     coveralls: lucent.optvis never imports them);
#   * a torchvision shim: no torchvision build imports beside torch 2.13.0, and lucent.optvis imports
#     only torchvision.transforms.Normalize (used by render_vis(preprocess=True), i.e. ImageNet
#     normalisation, which the benchmark turns off). The shim defines that one class.
#
# Usage: bash benchmarks/setup_lucent.sh [PYTHON]     (PYTHON defaults to python3; 3.11 was used)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LUCENT_VENV:-$here/.lucent-venv}"
python="${1:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import lucent.optvis.render, kornia" 2>/dev/null; then
    echo "torch-lucent venv already set up: $venv"
    exit 0
fi

"$python" -m venv "$venv"
echo '*' > "$venv/.gitignore"  # git ignores the whole venv (as Python >= 3.13 does by itself)
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "torch==2.13.0"
"$venv/bin/pip" install -q --no-deps "torch-lucent==0.1.8" "kornia==0.4.1"
"$venv/bin/pip" install -q numpy tqdm pillow decorator ipython
site="$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
mkdir -p "$site/torchvision/transforms"
cat > "$site/torchvision/__init__.py" <<'PY'
"""Shim for torch-lucent (benchmarks/setup_lucent.sh): only torchvision.transforms.Normalize."""
PY
cat > "$site/torchvision/transforms/__init__.py" <<'PY'
"""Shim: the one torchvision name lucent.optvis imports (ImageNet normalisation, preprocess=True)."""
import torch


class Normalize:
    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, tensor):
        return (tensor - self.mean.to(tensor)) / self.std.to(tensor)
PY
"$venv/bin/python" -c "import torch, kornia, lucent; from lucent.optvis import render; print('ok: torch', torch.__version__, 'kornia', kornia.__version__, 'torch-lucent', lucent.__version__)"
echo "torch-lucent venv ready: $venv"
