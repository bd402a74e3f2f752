#!/usr/bin/env bash
# Installs d2-yolov7 and everything it needs into a virtual environment (default: .venv in
# the repository root; override with VENV=/some/path). Safe to run again: each step checks
# what is already there and skips it.
#
#   1. the virtual environment           (python3 -m venv)
#   2. torch==2.14.1 torchvision==0.29.1 (skipped when already at those versions)
#   3. detectron2                        (kept when `import detectron2` already works, e.g. an
#                                          upstream build from its repository with its _C;
#                                          otherwise detectron2 0.6's Python code from PyPI's
#                                          pb1-detectron2 sdist, without the C++/CUDA ops)
#   4. this package, editable, with its test extras  (pip install -e .[test])
#   5. sas-yolov7==1.0.7 with --no-deps  (GPL-3.0 test-only reference, never vendored)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
REPO="$(pwd)"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
TORCH_NEEDS_MB=6300  # the venv ends at about 6.2 GB: torch, torchvision and the CUDA libraries they pull in
DETECTRON2_SDIST="pb1-detectron2==0.6"
# pip >= 26 refuses to even download pb1-detectron2 because its (unused) "all" extra names a
# direct URL; this pip, run from its wheel, only does that one download.
DOWNLOAD_PIP="pip==25.3"
SAS_YOLOV7="sas-yolov7==1.0.7"

START=$SECONDS
log() { echo "[install.sh +$((SECONDS - START))s] $*"; }

# ---------------------------------------------------------------- 1. virtual environment
if [ -x "$VENV/bin/python" ]; then
    log "1/5 virtual environment: keeping existing $VENV"
else
    log "1/5 virtual environment: creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
pip() { "$PY" -m pip "$@"; }
"$PY" - <<'EOF'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"d2-yolov7 needs Python >= 3.10, the venv has {sys.version.split()[0]}")
EOF

# ---------------------------------------------------------------- 2. torch / torchvision
torch_versions() {
    "$PY" - <<'EOF' 2>/dev/null || echo "none none"
import importlib.metadata as md
print(md.version("torch").split("+")[0], md.version("torchvision").split("+")[0])
EOF
}
# "missing", "broken DIR ERROR...", or "compiled|python-only VERSION DIR"
detectron2_state() {
    (cd / && "$PY" - <<'EOF' 2>/dev/null) || echo "missing"
import importlib.util, os
spec = importlib.util.find_spec("detectron2")
if spec is None:
    print("missing")
    raise SystemExit
try:
    import detectron2
except Exception as e:
    print("broken", list(spec.submodule_search_locations or [spec.origin])[0], repr(e))
    raise SystemExit
try:
    import detectron2._C
    state = "compiled"
except ImportError:
    state = "python-only"
print(state, detectron2.__version__, os.path.dirname(detectron2.__file__))
EOF
}

read -r have_torch have_tv <<<"$(torch_versions)"
if [ "$have_torch" = "$TORCH_VERSION" ] && [ "$have_tv" = "$TORCHVISION_VERSION" ]; then
    log "2/5 torch: keeping torch $have_torch / torchvision $have_tv"
elif [ "$have_torch" != "none" ] && [ "$(detectron2_state | cut -d' ' -f1)" = "compiled" ]; then
    # A compiled detectron2 only works with the torch it was built against: leave both alone.
    log "2/5 torch: keeping torch $have_torch / torchvision $have_tv, because the detectron2" \
        "installed here has compiled ops built against it (tested: $TORCH_VERSION / $TORCHVISION_VERSION)"
else
    # The x86_64 wheels are the CUDA build (5.6 GB in the venv, CPU machines included): a full
    # disk would otherwise surface as pip's "[Errno 28] No space left on device" half-way.
    free_mb="$(df -Pm "$VENV" | awk 'NR == 2 {print $4}')"
    if [ "$free_mb" -lt "$TORCH_NEEDS_MB" ]; then
        log "2/5 torch: needs about $TORCH_NEEDS_MB MB free for $VENV, but its file system" \
            "($(df -P "$VENV" | awk 'NR == 2 {print $6}')) has $free_mb MB: free some space" \
            "(old virtual environments, checkouts under /tmp) or put the venv elsewhere" \
            "with VENV=/other/disk/venv bash install.sh" >&2
        exit 1
    fi
    log "2/5 torch: installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION" \
        "(found: torch $have_torch / torchvision $have_tv; about 5.6 GB, 1-2 minutes)"
    pip install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# ---------------------------------------------------------------- 3. detectron2
read -r d2_state d2_version d2_dir <<<"$(detectron2_state)"
if [ "$d2_state" = "compiled" ]; then
    log "3/5 detectron2: keeping the installed detectron2 $d2_version at $d2_dir (with its compiled _C ops)"
elif [ "$d2_state" = "broken" ]; then
    log "3/5 detectron2: a detectron2 is installed at $d2_version but does not import ($d2_dir);" \
        "not overwriting it: fix or uninstall it, then run install.sh again" >&2
    exit 1
elif [ "$d2_state" = "python-only" ]; then
    log "3/5 detectron2: keeping the installed detectron2 $d2_version at $d2_dir (Python-only, no _C;" \
        "yolov7_d2/compat.py bridges it)"
else
    log "3/5 detectron2: not importable; installing its Python dependencies"
    pip install fvcore "iopath>=0.1.7,<0.1.10" pycocotools yacs termcolor tabulate cloudpickle \
        tqdm tensorboard "omegaconf>=2.1,<2.4" "hydra-core>=1.1" matplotlib pydot "setuptools<81"

    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    log "3/5 detectron2: downloading the $DETECTRON2_SDIST sdist (detectron2 v0.6's Python code," \
        "no C++/CUDA sources) into $work"
    pip download --no-deps -d "$work/pip" "$DOWNLOAD_PIP"
    pip_wheel="$(ls "$work"/pip/pip-*.whl)"
    # --no-build-isolation: its setup.py imports torch to prepare its metadata.
    "$PY" "$pip_wheel/pip" download --no-deps --no-build-isolation -d "$work" "$DETECTRON2_SDIST"
    tar -xzf "$work"/pb1-detectron2-*.tar.gz -C "$work"
    src="$(ls -d "$work"/pb1-detectron2-*/)"

    log "3/5 detectron2: building it without extension modules (ext_modules=[])"
    "$PY" - "$src/setup.py" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
old_ext = "ext_modules=get_extensions(),"
old_cmd = 'cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},'
if old_ext not in text or old_cmd not in text:
    sys.exit(f"unexpected {path}: cannot find {old_ext!r} / {old_cmd!r}")
text = text.replace(old_ext, "ext_modules=[],").replace(old_cmd, "")
open(path, "w").write(text)
EOF
    pip install --no-deps --no-build-isolation "$src"
    rm -rf "$work"
    trap - EXIT
    "$PY" -c "import detectron2; print('detectron2', detectron2.__version__, 'installed (Python-only)')"
fi

# ---------------------------------------------------------------- 4. this package
# Skipped when this checkout is already installed (editable) with the same setup.py.
stamp="$VENV/.d2-yolov7-setup.sha256"
want_stamp="$(sha256sum setup.py | cut -d' ' -f1) $REPO"
installed_here() {  # run from / so that the checkout itself is not on sys.path
    (cd / && "$PY" - "$REPO" <<'EOF' >/dev/null 2>&1)
import importlib.metadata as md, importlib.util, os, sys
md.version("d2-yolov7")
spec = importlib.util.find_spec("yolov7_d2")
assert spec is not None and spec.origin is not None
assert os.path.realpath(spec.origin).startswith(os.path.realpath(sys.argv[1]) + os.sep)
EOF
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && installed_here; then
    log "4/5 d2-yolov7: keeping the editable install of $REPO (setup.py unchanged)"
else
    log "4/5 d2-yolov7: pip install -e .[test]"
    pip install -e ".[test]"
    echo "$want_stamp" >"$stamp"
fi

# ---------------------------------------------------------------- 5. test-only reference
have_sas="$("$PY" -c "import importlib.metadata as md; print(md.version('sas-yolov7'))" 2>/dev/null || true)"
if [ "$have_sas" = "${SAS_YOLOV7#*==}" ]; then
    log "5/5 $SAS_YOLOV7: keeping it (test-only reference implementation)"
else
    # --no-deps: its requirements pin numpy<1.24; what its model code imports (pyyaml, scipy,
    # requests, opencv) comes with the test extras above.
    log "5/5 $SAS_YOLOV7: installing with --no-deps (GPL-3.0, used only by tests as a reference)"
    pip install --no-deps "$SAS_YOLOV7"
fi

log "checking the install"
cd /  # import from the install, not from the checkout's directory
OMP_NUM_THREADS=1 "$PY" -W "ignore::FutureWarning" - <<'EOF'
import torch, torchvision
import yolov7_d2  # applies yolov7_d2.compat before it imports detectron2
from yolov7_d2 import compat
import detectron2, detectron2.layers, detectron2.modeling, detectron2.engine, detectron2.data
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__} ({'compiled _C' if compat.HAS_D2_C else 'Python-only'}), "
      f"CUDA available: {torch.cuda.is_available()}; compat: {compat.APPLIED or 'nothing needed'}")
import sas_yolov7.models.yolo, sas_yolov7.utils.loss  # the test-only reference imports too
EOF
cd "$REPO"
log "done in $((SECONDS - START))s. Run the tests with: $VENV/bin/python -m pytest -q tests"
