"""Imports of the packages behind optional features (the extras of ``setup.py``): a missing
one fails with the install command, not a bare ModuleNotFoundError."""
import importlib

__all__ = ["import_optional"]


def import_optional(module: str, extra: str, feature: str, alternative: str = ""):
    """``importlib.import_module(module)``; if it (or a package it needs) is missing, an
    ImportError saying that ``feature`` needs the ``extra`` of setup.py, how to install it
    and, if given, the ``alternative`` that needs nothing more."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = getattr(e, "name", None) or module
        instead = f", or {alternative}" if alternative else ""
        raise ImportError(
            f"{feature} needs the Python package {missing!r}, which is not installed: install "
            f"the '{extra}' extra of d2-yolov7 (`pip install -e '.[{extra}]'` in its "
            f"checkout){instead}") from e
