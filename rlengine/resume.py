"""What a run directory allows before anything starts: a fresh run, or a resume whose config can
continue the saved one.

- A directory with checkpoints is never trained from scratch by accident (``resume=true`` or a new
  ``trainer.output_dir`` is needed).
- ``resume=true`` with no complete checkpoint is an error, not a silent fresh start.
- A resumed run's config is compared with the saved ``config.yaml``: changes that cannot continue the
  saved state are refused (:data:`REFUSED`), the others are listed in a warning. The saved file is
  rewritten only once the resumed run has started (``Trainer``), so a refused resume loses nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from rlengine.checkpoint import latest_checkpoint
from rlengine.errors import ConfigError
from rlengine.schema import to_dict
from rlengine.validation import writable_directory

REFUSED: dict[str, str] = {
    "model.name": "the checkpoint holds this model's weights and optimizer state",
    "model.dtype": "the optimizer state was saved for the other dtype",
    "model.trust_remote_code": "the saved model was loaded with the other setting",
    "learner.zero_stage": "DeepSpeed's optimizer state is partitioned per ZeRO stage",
    "learner.num_ranks": "DeepSpeed's optimizer state is partitioned per rank",
    "rollout.n": "carried and replayed groups hold the saved number of responses",
    "data.source": "the data cursor indexes the saved source",
    "data.limit": "the data cursor indexes the saved source",
    "data.validation_size": "the data cursor indexes the saved training rows",
    "trainer.seed": "data order and sampling seeds continue the saved run",
}
"""Keys a resumed run may not change, and why."""

UNCHECKED = ("resume", "config_dir", "trainer.output_dir", "trainer.ray_address")
"""Keys that say where and how this process runs, not what is trained."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` for every leaf that differs."""
    old, new = flatten(saved), flatten(current)
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and not key.startswith(UNCHECKED)
    }


def checkpoint_to_resume(cfg: Any, create: bool = True) -> Path | None:
    """The newest complete checkpoint to resume from (None for a fresh run), after checking the
    run directory against ``cfg`` (and creating it unless ``create`` is false, as for ``rlengine
    config check``). Raises :class:`ConfigError`/FileExistsError before anything starts."""
    run_dir = cfg.run_dir
    if create or run_dir.exists():
        writable_directory(run_dir, "trainer.output_dir")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and not cfg.resume:
        raise FileExistsError(
            f"run directory '{run_dir}' already has checkpoints (newest: {checkpoint.name}); "
            "pass resume=true to continue it, or set trainer.output_dir / trainer.run_name to start a new run"
        )
    if checkpoint is None:
        if cfg.resume:
            raise ConfigError(
                f"resume=true: run directory '{run_dir}' has no complete checkpoint (checkpoints/step_N with "
                "trainer_state.pt), so there is nothing to resume; drop resume=true to start a fresh run"
            )
        return None
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text()) or {}
        changes = config_changes(saved, to_dict(cfg))
        refused = {k: v for k, v in changes.items() if k in REFUSED}
        if refused:
            lines = "; ".join(f"{k}: {a!r} -> {b!r} ({REFUSED[k]})" for k, (a, b) in refused.items())
            raise ConfigError(
                f"resume of '{run_dir}' refused, the config changes what the checkpoint cannot continue: {lines}. "
                "Start a new run (another trainer.output_dir / run_name) to change these"
            )
        if changes:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
            warnings.warn(f"resuming '{run_dir}' with a changed config: {lines}", stacklevel=2)
    return checkpoint
