"""Import the repository's scripts (demo.py, train_net.py, tools/*.py) as modules, so that
tests call their ``main(argv)`` in-process instead of paying a subprocess start."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """The module of ``ROOT / relative_path`` (e.g. "tools/export_onnx.py"), freshly executed."""
    path = ROOT / relative_path
    name = "script_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module
