"""Typed schema of a run: YAML loading, dotted command-line overrides, validation.

A run is one :class:`RunConfig`. Every section is a dataclass whose fields are documented
below; YAML keys map 1:1 onto fields and any key can be overridden from the command line as
``section.key=value`` (the value is parsed as YAML, so ``rollout.n=8`` is an int and
``reward.functions=[math_verify,format]`` a list).

Validation is strict and happens before anything heavy starts: an unknown key names the
closest valid key, a wrong type names the expected type, an enum value lists the allowed
values. Stage sections (``curriculum``, ``filter``, ``reward_weighting``, ``replay``) are
validated against the config dataclass of the stage their ``name`` selects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from rlengine.algorithms.presets import PRESETS, apply_preset
from rlengine.data.templates import DEFAULT_MATH_TEMPLATE
from rlengine.errors import ConfigError
from rlengine.schema import (
    Count,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveFraction,
    Range,
    from_dict,
    to_dict,
)
from rlengine.stages.registry import STAGE_KINDS, build_stage_config
from rlengine.validation import config_loss, validate

__all__ = ["ConfigError", "RunConfig", "build_config", "dump_yaml", "from_dict", "load_config", "to_dict"]


# --------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"
    """Built-in name (``smollm2-135m-instruct``), a local Hugging Face directory, or a hub id."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Learner and rollout dtype. fp32 on CPU (bf16 vLLM vs fp32 learner disagree by up to 1.4 nats)."""
    trust_remote_code: bool = False
    """Passed to transformers and vLLM."""
    cache_dir: str | None = None
    """Where built-in models are converted to (default ``$RLENGINE_CACHE`` or ``~/.cache/rlengine``)."""


@dataclass
class DataConfig:
    source: str = "gsm8k_train"
    """Shipped set name (``gsm8k_train``, ``math_train_rllm``, ...), ``synthetic_arithmetic``, a
    ``.jsonl``/``.json``/``.parquet`` file, or a ``datasets`` name/path."""
    split: str | None = None
    """Split for ``datasets`` sources (default ``train``)."""
    problem_field: str = "problem"
    """Field holding the problem text."""
    answer_field: str = "answer"
    """Field holding the gold answer."""
    id_field: str = "id"
    """Field holding a unique id (generated when absent)."""
    template: str = DEFAULT_MATH_TEMPLATE
    """Prompt template; ``{problem}`` and any other row field are placeholders (other braces are literal)."""
    chat_template: bool = True
    """Wrap the rendered template in the tokenizer's chat template."""
    system_prompt: str | None = None
    """Optional system message for the chat template."""
    limit: Count | None = None
    """Use only the first N rows."""
    lazy: bool = False
    """Read prompts when the curriculum draws them instead of loading the whole source: a ``.jsonl``
    file is indexed by line offsets (8 bytes a row), other sources stay memory-mapped through
    ``datasets``. For prompt sets larger than memory. Rows are checked and prompts rendered when
    drawn; prompts too long for ``rollout.max_model_len - rollout.max_tokens`` are skipped then."""
    validation_size: NonNegativeInt = 0
    """Prompts held out of training (the last N rows of the source, after ``limit``): the validation
    slice that ``reward_weighting.name: hypervolume`` measures on. The curriculum never draws them."""
    synthetic_num: Count = 2000
    """``synthetic_arithmetic`` only: number of problems generated."""
    synthetic_ops: list[str] = field(default_factory=lambda: ["add", "sub", "mul"])
    """``synthetic_arithmetic`` only: operations."""
    synthetic_min_digits: Count = 1
    """``synthetic_arithmetic`` only: fewest digits per operand."""
    synthetic_max_digits: Count = 4
    """``synthetic_arithmetic`` only: most digits per operand."""


@dataclass
class RolloutConfig:
    n: Count = 4
    """Responses sampled per prompt (group size G)."""
    max_tokens: Count = 256
    """Maximum new tokens per response (L_max)."""
    temperature: Positive = 1.0
    """Sampling temperature; the learner divides its logits by the same value."""
    top_p: PositiveFraction = 1.0
    """Nucleus sampling. Keep 1.0 for training: the learner cannot reproduce a truncated distribution."""
    num_engines: Count = 1
    """vLLM engines (Ray actors) in the pool."""
    balance: Literal["even", "tokens", "throughput"] = "tokens"
    """How a request is split over the engines: ``even`` (contiguous equal shares), ``tokens``
    (longest-first over each prompt's estimated tokens, n x (prompt + max_tokens / 2); the same
    split on resume) or ``throughput`` (as ``tokens``, weighted by each engine's measured tokens
    per second, so slower engines get less; not reproduced exactly on resume).
    ``rollout/engine_imbalance`` logs the slowest engine's seconds over the mean."""
    mode: Literal["sync", "one_step_off_policy"] = "sync"
    """``sync``: generate a step's batch, then train on it. ``one_step_off_policy``: the next
    step's batch is generated by the current policy while the learner updates it, so every sample
    is trained one policy version late (``rollout/staleness_*`` = 1 from step 2 on; the first step
    is on-policy). Stale samples are trained with ``algorithm.off_policy_correction`` (decoupled
    by default), which corrects for the lag. Needs
    ``filter.name: none`` and ``replay.name: none``; the prefetched batch is checkpointed."""
    tensor_parallel_size: Count = 1
    """GPUs per engine (vLLM tensor parallelism), pinned to one node by a Ray placement group.
    A config needs ``num_engines x tensor_parallel_size`` GPUs for rollout plus
    ``learner.num_ranks`` for the learner (``rlengine config check`` prints it). CPU: 1."""
    placement: Literal["split", "colocated"] = "split"
    """GPU only. ``split``: engines and learner ranks on separate GPUs. ``colocated``: engine GPU i
    is learner rank i's GPU (``learner.num_ranks`` must equal ``num_engines x
    tensor_parallel_size``), pinned by one Ray placement group; the engines sleep during the update
    (vLLM sleep mode, ``sleep_level``) and wake for the weight sync and the next rollout."""
    sleep_level: Literal[1, 2] = 1
    """``placement: colocated``: what a sleeping engine frees. 1: offloads its weights to CPU memory
    and drops the KV cache; 2: drops both (the weight sync refills them)."""
    weight_sync: Literal["auto", "file", "nccl", "ipc"] = "auto"
    """How new weights reach the engines. ``file``: rank 0 streams a safetensors file to shared
    memory and every engine reloads it (works everywhere; the CPU path). ``nccl``: vLLM's weight
    transfer API, broadcast from learner rank 0 to every engine worker (GPU, ``placement: split``).
    ``ipc``: vLLM's weight transfer API over CUDA IPC handles (GPU, ``placement: colocated``).
    ``auto``: ``file`` on CPU, else ``ipc`` when colocated and ``nccl`` when split. Both sides use
    ``packed`` transfers and ``NCCL_CUMEM_ENABLE=0``."""
    max_model_len: Count = 1024
    """vLLM context length (prompt + response)."""
    gpu_memory_utilization: PositiveFraction = 0.5
    """vLLM GPU memory share (GPU only)."""
    kv_cache_gib: Count | None = None
    """vLLM-CPU KV cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``); null = just enough for one
    step's sequences (``trainer.batch_size x n`` at ``max_model_len``), at least 1."""
    engine_in_process: bool = False
    """CPU only: run vLLM's engine core and worker inside the engine actor's process (one process
    instead of three: ~1.2 GB less memory, ~30 s faster start for the built-in model, slower
    generation on 2 cores)."""
    enforce_eager: bool = True
    """Skip CUDA-graph capture / compilation (faster start, slower decode)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``vllm.LLM``."""


@dataclass
class RewardConfig:
    functions: list[Any] = field(default_factory=lambda: ["math_verify"])
    """Reward functions: built-in names (``math_verify``, ``format``, ``conciseness``, ``length``),
    ``path/to/file.py:function`` or ``{function: ..., name: ..., weight: ..., kwargs: {...}}``."""
    num_workers: NonNegativeInt = 2
    """Reward worker processes."""
    timeout_s: Positive = 10.0
    """Per-call timeout; a call that takes longer scores 0 and is counted in ``reward/timeouts``."""
    import_timeout_s: Positive = 60.0
    """Time limit for importing a reward file (``rlengine config check``, run start, each reward
    worker). At start-up a file still importing after this long is a config error; in a worker its
    objective scores 0 for the rest of the run and every call is counted in ``reward/errors``."""
    correct_threshold: float = 0.5
    """A response counts as passing (for ``pass_rate``) when the first objective is >= this."""
    max_failure_fraction: PositiveFraction = 0.5
    """Stop the run, with the first tracebacks, after a step in which more than this share of reward
    calls raised, returned a non-number or timed out (each scores 0 and is counted in
    ``reward/errors`` / ``reward/timeouts``). 1.0 = never stop."""
    length_momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.9
    """Momentum of the running mean token length of correct responses, m <- momentum * m +
    (1 - momentum) * (this step's mean); handed to every reward as ``metadata["mean_correct_length"]``
    (the ``conciseness`` objective) and checkpointed."""


@dataclass
class AlgorithmConfig:
    preset: str | None = None
    """One of grpo, dr_grpo, dapo, gspo, rloo, reinforce_pp, cispo: sets the keys below;
    keys given explicitly override it. See docs/algorithms.md."""
    advantage: str = "grpo"
    """Advantage estimator: ``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp``,
    ``reinforce_pp_baseline``, or a plug-in ``file.py:function`` / ``package.module:function``
    (a relative file resolves against the YAML's directory) called as ``fn(rewards, group_index, *,
    lengths, eps) -> [N]`` and checked by ``rlengine config check``. See docs/algorithms.md."""
    loss: str = "ppo"
    """Policy loss: ``ppo``, ``gspo``, ``cispo``, ``bapo``, or a plug-in ``file.py:function`` called as
    ``fn(logprobs, old_logprobs, advantages, mask, *, lower, upper, dual_clip)`` returning the
    per-token loss ``[B, T]`` (its ``default_clips`` attribute, else 0.2 / 0.2, fills the clips).
    See docs/algorithms.md."""
    agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"] = (
        "token_mean"
    )
    """Loss aggregation over tokens and sequences."""
    clip_low: NonNegative | None = None
    """Lower clip (epsilon for ppo/gspo/cispo; the ratio bound itself for bapo). Null = the loss's
    default: ppo 0.2, gspo 3e-4, cispo 1.0 (no lower bound), bapo 0.6 (BAPO's start, the authors'
    yaml and README; their run script starts at 0.8), a plug-in its ``default_clips``. ppo/gspo
    need <= 1; for cispo any value >= 1 means no lower bound (verl writes ``clip_ratio_low: 10``).
    For bapo with ``bapo_adaptive`` it is where the search starts."""
    clip_high: NonNegative | None = None
    """Upper clip. Null = the loss's default: ppo 0.2 (DAPO clip-higher uses 0.28), gspo 4e-4,
    cispo 3.0 (IS weight capped at 4, Tinker's default; the paper publishes no value, verl's example
    uses 0.2), bapo 1.2 (BAPO's start in all three official sources; where the search starts)."""
    dual_clip: float | None = None
    """Dual-clip constant c (e.g. 3.0) for negative advantages; off when null."""
    eps: NonNegative = 1e-6
    """Added to the group std in grpo advantages."""
    kl_coef: NonNegative = 0.0
    """KL coefficient beta; the reference model is loaded only when > 0."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator."""
    kl_placement: Literal["loss", "reward"] = "loss"
    """Add the KL to the loss, or subtract beta * sum_t KL from the reward."""
    entropy_coef: NonNegative = 0.0
    """Entropy bonus coefficient (entropy is logged every step regardless)."""
    overlong_shaping: bool = False
    """DAPO soft overlong penalty added to the reward."""
    overlong_cache: NonNegativeInt = 0
    """DAPO L_c: the penalty ramps over the last ``overlong_cache`` tokens before ``rollout.max_tokens``."""
    mask_truncated: bool = False
    """Mask responses that hit ``rollout.max_tokens`` out of the loss."""
    tis_cap: Positive | None = None
    """Truncated importance sampling cap C (e.g. 2.0) for the vLLM/learner mismatch; off when null."""
    off_policy_correction: Literal["decoupled", "behaviour_as_old"] = "decoupled"
    """How samples an older policy produced (filter carry-over, self-replay, one-step-off) are
    trained. ``decoupled`` (AReaL's decoupled PPO, arXiv 2505.24298): before the update the learner
    recomputes their proximal logprobs log π_prox with the current weights; the PPO ratio is
    π_θ / π_prox, clipped as usual, and each token is weighted by min(π_prox / π_behaviour,
    ``off_policy_cap``). ``behaviour_as_old``: vLLM's behaviour logprobs are π_old, so the clipped
    ratio carries the whole staleness (BAPO's paper setting; no extra forward pass). Fresh
    on-policy samples are the same under both."""
    off_policy_cap: Positive = 2.0
    """C of the decoupled objective's behaviour weight min(π_prox / π_behaviour, C) (AReaL calls it
    ``behav_imp_weight_cap``); 2.0 as the TIS cap of Yao et al. 2025."""
    bapo_adaptive: bool = True
    """``loss: bapo`` only: search the ratio bounds every optimizer step from the batch (BAPO's
    adaptive clipping, starting at ``clip_low`` / ``clip_high``); false keeps them fixed."""
    bapo_max_low: float = 0.9
    """Highest lower bound the search may reach. The official sources differ: README 0.9 ("as used
    in the paper", the default here), ``bapo_trainer.yaml`` 0.8, ``run_bapo_example.sh`` 0.95."""
    bapo_max_high: float = 3.0
    """Highest upper bound the search may reach. README 3.0 ("as used in the paper", the default
    here), ``bapo_trainer.yaml`` 2.0, ``run_bapo_example.sh`` 2.0."""
    bapo_target: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.5
    """rho_0: the share pos / (pos + neg) of the policy-gradient mass that positive-advantage tokens
    must carry (README and yaml: 0.5, i.e. pos / neg >= 1; the run script's pos / neg >= 0.5 is a
    share of 1/3)."""
    bapo_step_low: Positive = 0.05
    """How much ``c_low`` moves per search step (run script and yaml: 0.05)."""
    bapo_step_high: Positive = 0.1
    """How much ``c_high`` moves per search step (run script: 0.1; yaml: 0.05)."""
    bapo_share: Literal["effective", "unclipped"] = "effective"
    """How the positive share counts tokens. ``effective`` (default, the authors' ``policy_loss.py``):
    every token at its effective ratio min(r, c_high) for A >= 0, max(r, c_low) for A < 0; raising
    c_low can only lower the share there, so on a negative-dominated batch c_low runs to its maximum.
    ``unclipped``: only the tokens PPO's clip leaves a gradient (A >= 0 with r <= c_high, A < 0 with
    c_low <= r <= dual clip), at ratio r; raising c_low drops low-ratio negative tokens and raises the
    share (the README's "filtering excessive low-probability negative tokens"). See docs/algorithms.md."""


@dataclass
class LearnerConfig:
    num_ranks: Count = 1
    """DeepSpeed data-parallel ranks (Ray actors)."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage."""
    lr: NonNegative = 1e-6
    """Peak learning rate (AdamW)."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    betas: list[Annotated[float, Range(0, 1, high_open=True)]] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule after warm-up."""
    warmup_steps: NonNegativeInt = 0
    """Linear warm-up optimizer steps."""
    min_lr_ratio: Fraction = 0.0
    """Cosine floor as a fraction of ``lr``."""
    micro_batch_tokens: Count = 4096
    """Token budget of one micro-batch (rows x longest when padded, the sum when packed, rows x
    longest prompt row with ``shared_prefix``); gradients accumulate over micro-batches.
    Micro-batches are cut from length-sorted samples (whole prompt groups with ``shared_prefix``)."""
    packing: bool = False
    """Pack each micro-batch's sequences into one row (position ids restart per sequence) instead
    of right-padding rows. Pays off with varlen attention (``attn_implementation:
    flash_attention_2`` on GPU); with SDPA it builds a block-diagonal mask and is usually slower."""
    shared_prefix: bool = False
    """Lay out each prompt once with all its responses behind it (a tree attention mask keeps the
    responses apart), instead of repeating the prompt in every response's row: the learner then
    computes each group's prompt once instead of ``rollout.n`` times. Exact; it pays off when
    prompts are long next to responses. It builds a dense mask (rows x width^2), so keep it for
    short sequences (the CPU quickstart), and it cannot be combined with ``packing``."""
    compile: bool = False
    """``torch.compile`` each decoder layer (fuses the norm, rotary and MLP element-wise ops; the
    first micro-batches pay the compilation). ZeRO 0-2 only."""
    attn_implementation: str | None = None
    """Attention kernel for the learner's model (``sdpa``, ``flash_attention_2``, ``eager``);
    null = the transformers default (SDPA)."""
    sync_bucket_mb: Count = 512
    """Weight sync: parameters are streamed to the engines' file in buckets of this many MB; under
    ZeRO-3 one bucket at a time is gathered, so no process ever holds the whole model."""
    zero_bucket_elements: Count = 200_000_000
    """DeepSpeed ZeRO reduce / all-gather / prefetch bucket size in elements (smaller = less
    memory, more collective calls)."""
    mini_batch_size: Count | None = None
    """Responses per optimizer step; null = the whole rollout batch (one step per epoch)."""
    ppo_epochs: Count = 1
    """Passes over each rollout batch."""
    grad_clip: NonNegative = 1.0
    """Gradient-norm clip (0 = off)."""
    grad_checkpointing: bool = True
    """Activation checkpointing in the policy."""
    threads: Count | None = None
    """Torch CPU threads per rank (default: cores / ranks)."""


@dataclass
class EvaluationConfig:
    every_n_steps: NonNegativeInt = 0
    """Evaluate every N steps and after the last one (0 = never during training)."""
    before_training: bool = False
    """Also evaluate the initial policy before the first step (``eval/step_0.json``), for a
    before/after comparison (``rlengine eval --compare RUN/eval/step_0.json RUN/eval/step_N.json``)."""
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"])
    """Benchmark names (gsm8k, math500, aime24, aime25, amc23, minerva_math, olympiadbench)."""
    samples: Count = 1
    """Samples per problem."""
    max_tokens: Count = 512
    """Maximum new tokens per sample."""
    temperature: NonNegative = 0.0
    """Sampling temperature (0 = greedy)."""
    top_p: PositiveFraction = 1.0
    """Nucleus sampling."""
    limit: Count | None = 50
    """Problems per benchmark (null = all)."""
    template: str | None = None
    """Prompt template with ``{problem}``; null = ``data.template`` (the one training uses)."""


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    """Write TensorBoard events to ``<run>/tensorboard``."""
    wandb: bool = False
    """Log to Weights & Biases (needs ``pip install wandb``)."""
    wandb_project: str = "rlengine"
    """W&B project."""
    progress: bool = True
    """Console progress bar."""


@dataclass
class TrainerConfig:
    max_steps: Count = 10
    """Training steps (one rollout batch each)."""
    max_minutes: Positive | None = None
    """Wall-clock budget: stop after the first step that ends this many minutes after the training
    loop started (evaluation included; a resumed run gets the budget afresh). The final evaluation
    and checkpoint then run as at ``max_steps``. Null: no budget."""
    batch_size: Count = 8
    """Prompts (groups) per step."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    output_dir: str | None = None
    """Run directory (default ``runs/<run_name>``)."""
    run_name: str = "run"
    """Name of the run."""
    save_every: NonNegativeInt = 0
    """Checkpoint every N steps (0 = only at the end)."""
    keep_last: NonNegativeInt = 2
    """Checkpoints kept (older ones are deleted)."""
    max_skipped_steps: NonNegativeInt = 5
    """Stop the run, with a diagnosis, after this many consecutive steps whose every optimizer step
    was skipped for a non-finite loss or gradient (0 = never stop)."""
    ray_address: str | None = None
    """Ray cluster to join (``auto``); a local instance is started when null."""
    actor_timeout_s: Positive = 1800.0
    """Longest wait for any one call on a Ray actor (a generation, an update, a weight sync, a
    checkpoint). An actor that dies or does not answer in time stops the run with an error naming
    it, its last log lines and the step; a crashed rollout engine is first restarted once."""


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    curriculum: Any = None
    """Curriculum stage: ``{name: uniform | ..., <options>}``."""
    filter: Any = None
    """Filter stage: ``{name: none | ..., <options>}``."""
    reward_weighting: Any = None
    """Reward-weighting stage: ``{name: static | ..., <options>}``."""
    replay: Any = None
    """Replay stage: ``{name: none | ..., <options>}``."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume: bool = False
    """Continue from the newest checkpoint in the run directory."""
    config_dir: str | None = None
    """Directory of the YAML file (relative paths resolve against it); set by the loader."""

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.output_dir or Path("runs") / self.trainer.run_name)


# --------------------------------------------------------------------------- parsing


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    result: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': value is not valid YAML ({e})") from None
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return result


def merge_overrides(raw: dict, update: dict) -> dict:
    """``raw`` (the YAML) with the parsed overrides merged in. An override that changes a stage
    section's ``name`` starts that section afresh: the YAML's options belong to the stage it named
    (``reward_weighting.name=static`` on a gradient config drops ``every_n_steps``; further
    overrides of the same section still apply)."""
    raw = dict(raw)
    for section in STAGE_KINDS:  # sections whose ``name`` picks a stage with its own options
        new, old = update.get(section), raw.get(section)
        if (
            isinstance(new, dict)
            and "name" in new
            and isinstance(old, dict)
            and old.get("name") != new["name"]
        ):
            del raw[section]
    return deep_merge(raw, update)


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(
            f"config file '{path}' is empty; give at least model and data (see configs/quickstart.yaml), "
            "or leave the file out to train on the defaults"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': top level must be a mapping, got {type(data).__name__}")
    return data


def build_config(raw: dict, config_dir: str | None = None) -> RunConfig:
    """Validate a raw mapping (YAML + overrides) into a :class:`RunConfig`.

    Order: the algorithm preset fills what the user left out (its ``algorithm`` values, and its
    stage sections when the user wrote none), then every section is type-checked, stage sections
    against their stage's config dataclass, then loss-specific clip defaults are filled in and
    cross-field checks run.
    """
    raw = dict(raw)
    algo = raw.get("algorithm") or {}
    if isinstance(algo, dict) and algo.get("preset") is not None:
        try:
            raw["algorithm"] = {"preset": algo["preset"], **apply_preset(algo["preset"], algo)}
        except ValueError as e:
            raise ConfigError(f"algorithm.preset: {e}") from None
        for kind, section in PRESETS[algo["preset"]].stages.items():
            user = raw.get(kind)
            if user is None or (isinstance(user, dict) and "name" not in user):
                raw[kind] = {**section, **(user or {})}
    stage_raw = {kind: raw.pop(kind, None) for kind in STAGE_KINDS}
    cfg = from_dict(RunConfig, raw)
    if config_dir is not None:
        cfg.config_dir = config_dir
    for kind in STAGE_KINDS:
        setattr(cfg, kind, build_stage_config(kind, stage_raw[kind], cfg.config_dir))
    default_low, default_high = config_loss(cfg).default_clips  # the one place clip defaults are filled
    if cfg.algorithm.clip_low is None:
        cfg.algorithm.clip_low = default_low
    if cfg.algorithm.clip_high is None:
        cfg.algorithm.clip_high = default_high
    validate(cfg)  # rlengine/validation.py
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML file (or defaults when ``path`` is None), apply overrides, validate."""
    raw = load_yaml(path) if path is not None else {}
    raw = merge_overrides(raw, parse_overrides(overrides or []))
    config_dir = str(Path(path).resolve().parent) if path is not None else None
    return build_config(raw, config_dir=raw.pop("config_dir", None) or config_dir)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
