"""Load user code named in a config: ``path/to/file.py:Name`` or ``package.module:Name``.

Reward functions (``reward.functions``) and plug-in stages (``curriculum.name`` and the other
stage sections) are both given this way. The rule: nothing is imported that the config does not
name.

* A file is imported only by the path the config gives. An absolute path is used as it is; a
  relative one is looked up in the YAML file's directory first, then in the current directory,
  and the first that exists wins (a ``rewards.py`` beside the config beats one in the current
  directory). No directory is scanned and no entry points are read.
* While the file runs, its directory is on ``sys.path`` at the end, so it can import helper
  modules beside it, but a file there never shadows an installed module. Afterwards ``sys.path``
  is exactly what it was before (additions made by the plug-in itself included).
* ``package.module:Name`` imports that module through the normal ``sys.path``, as Python would.
* A missing file is an error that lists every path looked at.

A leaf module apart from ``errors``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from rlengine.errors import did_you_mean


class PluginError(ValueError):
    """User code named in a config cannot be found or imported."""


def is_plugin_spec(text: str) -> bool:
    """True for ``file.py:Name`` / ``package.module:Name`` (as opposed to a built-in name)."""
    return ":" in text


def _names_a_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def absolute_spec(spec: str, base_dir: str | os.PathLike[str] | None = None) -> str:
    """``spec`` with its file made absolute (``/abs/dir/file.py:Name``), so that it names the same
    object from any directory and process; a ``package.module:Name`` spec comes back unchanged.
    Raises :class:`PluginError` as :func:`resolve_file` does."""
    target, _, attr = spec.strip().rpartition(":")
    if not target or not attr:
        raise PluginError(f"invalid spec {spec!r}: expected 'file.py:Name' or 'package.module:Name'")
    if not _names_a_file(target):
        return spec.strip()
    return f"{resolve_file(target, base_dir)}:{attr}"


def resolve_file(path_str: str, base_dir: str | os.PathLike[str] | None) -> Path:
    """The file ``path_str`` names: absolute, or relative to ``base_dir`` (the config's directory),
    then the current directory. Raises :class:`PluginError` listing every path looked at."""
    path = Path(path_str).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = ([Path(base_dir) / path] if base_dir is not None else []) + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise PluginError(f"file not found: {path_str!r} (looked in: {looked})")


def import_file(path: Path) -> Any:
    """Import a Python file as a module once per process.

    Its folder is appended to ``sys.path`` while it runs, so it can import helpers next to it
    without shadowing installed modules; ``sys.path`` is restored exactly afterwards."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"_rlengine_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    saved_path = list(sys.path)
    sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        if isinstance(exc, SyntaxError):
            reason = f"SyntaxError: {exc.msg} (line {exc.lineno})"
        elif isinstance(exc, Exception):
            reason = f"{type(exc).__name__}: {exc}"
        elif isinstance(exc, SystemExit):
            reason = f"it called sys.exit({exc.code})"
        else:
            raise
        raise PluginError(f"failed to import {path}: {reason}") from exc
    finally:
        sys.path[:] = saved_path
    return module


def load_object(spec: str, base_dir: str | os.PathLike[str] | None = None, *, what: str = "object") -> Any:
    """The attribute ``spec`` names (``file.py:Name`` or ``package.module:Name``).

    ``what`` words the errors (``reward function``, ``curriculum class``). Raises
    :class:`PluginError` for a missing file, an import failure or a missing attribute (naming
    the attributes the module defines and the closest one).
    """
    target, _, attr = spec.strip().rpartition(":")
    if not target or not attr:
        raise PluginError(f"invalid {what} {spec!r}: expected 'file.py:Name' or 'package.module:Name'")
    if _names_a_file(target):
        path = resolve_file(target, base_dir)
        module, where = import_file(path), str(path)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise PluginError(
                f"cannot import module {target!r} for {what} {spec!r}: {type(exc).__name__}: {exc}"
            ) from exc
        where = f"module {target}"
    if not hasattr(module, attr):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise PluginError(
            f"{what} {attr!r} not found in {where}{did_you_mean(attr, defined)}; defined there: {defined}"
        )
    return getattr(module, attr)
