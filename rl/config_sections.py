"""The sections of the config tree that only one algorithm reads (classic-control PPO, DPO, multi-turn
coding RL), with their own checks; `rl/config.py` composes them into the one tree and re-exports them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rl.data.mapping import ConfigError


@dataclass
class CodingConfig:
    """Multi-turn RL on the coding env (`algorithm.name: coding_grpo`): each prompt is a task, each
    sample an episode of agent turns; reward = resolved; turn budget from the turn-control spec."""
    tasks: str = "generator:8"  # tasks.jsonl | generator:N (injected-bug repos) | humaneval:N
    agent: Literal["bash", "tools"] = "bash"  # bash: a ```bash block per reply; tools: <tool_call> bash / submit
    turn_control: str = "fixed:4"  # unlimited | fixed:N | dynamic:X-Y (numbers; percentiles need a calibration)
    hard_turn_limit: int = 8  # safety stop per episode
    max_new_tokens_per_turn: int = 128
    command_timeout_s: float = 20.0
    # `rl eval RECIPE` of a coding recipe: the agent over coding.tasks with these turn and agent settings
    eval_model: str | None = None  # openai:<base-url> (a served model) | null: the policy (or --checkpoint's hf/)
    eval_workers: int = 1  # tasks run at once
    request_timeout_s: float = 120.0  # per model-server request (eval_model openai:)
    max_retries: int = 4  # model-server retries on connection errors, timeouts, 429 and 5xx
    backoff_s: float = 1.0  # first retry waits backoff_s x U(0.5, 1), doubling each retry


@dataclass
class DPOConfig:
    """Offline preference optimisation (`algorithm.name: dpo`, SPECS §3)."""
    pairs_path: str | None = None  # JSONL with prompt / chosen / rejected
    from_rollouts: str | None = None  # or: a GRPO run's rollouts.jsonl -> best vs worst sample per prompt
    beta: float = 0.1
    epochs: int = 1
    pairs_per_step: int = 8  # pairs per optimizer step
    microbatch_pairs: int = 8  # pairs per forward/backward (gradient accumulation)
    max_steps: int | None = None  # cap on optimizer steps (None: epochs x ceil(train pairs / pairs_per_step))
    max_length_tokens: int = 256  # prompt + completion; longer completions are cut
    append_eos: bool = True  # completions end with the end-of-turn token, as a finished reply does
    eval_fraction: float = 0.1  # held-out pairs (split by prompt) for reward accuracy


@dataclass
class SFTConfig:
    """Supervised fine-tuning on chat conversations (`algorithm.name: sft`): loss on assistant tokens only."""
    path: str | None = None  # .jsonl / .parquet, a datasets save_to_disk folder or a hub id
    eval_path: str | None = None  # held-out conversations (None: an eval_fraction slice of `path`)
    split: str = "train"  # the split of a datasets folder or hub id
    messages_column: str = "messages"  # TRL conversational rows; or prompt + completion columns
    max_seq_tokens: int = 512  # a conversation (or a packed row) is cut at this many tokens
    packing: bool = False  # concatenate conversations into rows of max_seq_tokens (attention kept within each)
    epochs: int = 1
    max_steps: int | None = None  # cap on optimizer steps (None: epochs x ceil(train rows / sequences_per_step))
    sequences_per_step: int = 8  # rows per optimizer step (a conversation, or a packed row)
    microbatch_sequences: int = 8  # rows per forward/backward (gradient accumulation)
    eval_fraction: float = 0.1  # held-out conversations when eval_path is not given


def check_sft(s: SFTConfig) -> None:
    """Cross-field checks of the `sft:` section (validated when `algorithm.name: sft`)."""
    if s.path is None:
        raise ConfigError("sft.path: give the conversations to train on (.jsonl, .parquet, datasets folder, hub id)")
    for key in ("epochs", "max_seq_tokens", "sequences_per_step", "microbatch_sequences"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"sft.{key}: must be > 0, got {getattr(s, key)}")
    if s.max_steps is not None and s.max_steps <= 0:
        raise ConfigError(f"sft.max_steps: must be > 0 or null, got {s.max_steps}")
    if not 0.0 <= s.eval_fraction < 1.0:
        raise ConfigError(f"sft.eval_fraction: must be in [0, 1), got {s.eval_fraction}")


@dataclass
class ControlConfig:
    """Classic-control PPO (`algorithm.name: control_ppo`). Co-scaling rule (Beukman et al. 2026,
    SPECS §10): `minibatch_samples` is absolute, so minibatches per epoch = num_envs * num_steps //
    minibatch_samples grows with num_envs while lr, epochs and clip stay fixed."""
    env_id: str = "CartPole-v1"          # CartPole-v1 | Acrobot-v1 | MountainCar-v0 | Pendulum-v1
    num_envs: int = 64
    num_steps: int = 32                  # rollout length per env per update
    minibatch_samples: int = 512         # absolute; the minibatch count co-scales with num_envs
    epochs: int = 4
    lr: float = 2.5e-3
    anneal_lr: bool = True
    adam_eps: float = 1e-5
    clip: float = 0.2                    # PPO ratio clip (eps_low = eps_high)
    value_clip: float | None = None   # critic clip eps_v; None = unclipped 0.5 (V - R)^2
    gamma: float = 0.99
    lam: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    total_env_steps: int = 300_000
    max_updates: int = 0                 # 0 = as many as total_env_steps allows
    stop_at_mean_return: float | None = None  # stop when the last 100 episodes average this
    backend: Literal["numpy", "numba", "torch"] = "numba"
    num_shards: int = 1                  # > 1: env slices on Ray actors (envs/control/pool.py)
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu"] = "tanh"
    torch_threads: int = 1               # intra-op threads; 1 avoids spin contention on small batches, 0 = torch default
    eval_episodes: int = 100
    eval_deterministic: bool = True
    eval_every_env_steps: int = 0        # > 0: also evaluate each time this many env steps have passed (eval time logged apart)
    ewma_decay: float = 0.0              # PPO-EWMA: > 0 clips against an EWMA of past policies
    sweep_num_envs: list[int] = field(default_factory=list)  # non-empty: scaling study over N
    progress_bar: bool = True

    @property
    def samples_per_update(self) -> int: return self.num_envs * self.num_steps  # noqa: E704

    @property
    def num_minibatches(self) -> int: return max(1, self.samples_per_update // self.minibatch_samples)  # noqa: E704

    @property
    def num_updates(self) -> int:  # 0 max_updates: as many as total_env_steps allows
        return min(max(1, self.total_env_steps // self.samples_per_update), self.max_updates or 1 << 62)

@dataclass
class LoraConfig:
    """`model.lora`: LoRA adapters W = W0 + (alpha / r) * B @ A on the named linear layers; only the
    adapters train and sync (rl/workers/lora.py, rollout/lora.py)."""
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


def check_lora(lora: LoraConfig, algorithm: str, learner_actors: int, transport: str) -> None:
    """Checks of `model.lora` (validated when it is set)."""
    if lora.r <= 0:
        raise ConfigError(f"model.lora.r: must be > 0, got {lora.r}")
    if not lora.alpha > 0:
        raise ConfigError(f"model.lora.alpha: must be > 0, got {lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"model.lora.dropout: must be in [0, 1), got {lora.dropout}")
    if not lora.target_modules:
        raise ConfigError("model.lora.target_modules: name at least one module (e.g. [q_proj, v_proj])")
    if algorithm not in ("grpo", "ppo", "coding_grpo"):
        raise ConfigError(f"model.lora: LoRA runs with algorithm.name grpo, ppo or coding_grpo, not {algorithm!r} yet")
    if learner_actors != 1:
        raise ConfigError(f"model.lora: LoRA runs on one learner; resources.learner.num_actors is {learner_actors}")
    if transport not in ("object_store", "broadcast"):
        raise ConfigError(f"model.lora: adapters sync over sync.transport object_store or broadcast, not {transport!r}")


def check_dpo(d: DPOConfig) -> None:
    """Cross-field checks of the `dpo:` section (validated when `algorithm.name: dpo`)."""
    if (d.pairs_path is None) == (d.from_rollouts is None):
        raise ConfigError("dpo.pairs_path / dpo.from_rollouts: give exactly one source of preference pairs")
    for key in ("beta", "epochs", "pairs_per_step", "microbatch_pairs", "max_length_tokens"):
        if getattr(d, key) <= 0:
            raise ConfigError(f"dpo.{key}: must be > 0, got {getattr(d, key)}")
    if d.max_steps is not None and d.max_steps <= 0:
        raise ConfigError(f"dpo.max_steps: must be > 0 or null, got {d.max_steps}")
    if not 0.0 <= d.eval_fraction < 1.0:
        raise ConfigError(f"dpo.eval_fraction: must be in [0, 1), got {d.eval_fraction}")

