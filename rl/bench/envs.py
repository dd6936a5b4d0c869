"""`rl bench envs`: classic-control stepping and PPO throughput next to Gymnasium in the same run.

Figures (steps/s), each at N = 1k, 64k, 1M parallel CartPoles (--quick: 1k, 64k):
    env_only        our numba kernel (and numpy path), random int64 actions, NEXT_STEP autoreset,
                    copy=False (the returned obs is the state buffer); --env-threads sets the
                    numba thread count (default: 1 below 32k envs, all cores above)
    gym_vector      Gymnasium's own CartPoleVectorEnv (numpy), same N            -> ratio
    gym_sync        Gymnasium SyncVectorEnv of CartPole-v1 (measured at N = 1k only)
    with_inference  env + 64-64 actor-critic forward + action sampling per step
    ppo.ours        control PPO end to end (rollout + GAE + PPO epochs): wall time per update
                    (logging included) after `--ppo-warmup` updates, median / min / max
    ppo.anchor      a CleanRL-style PPO loop (torch Categorical sampling, per-step tensor
                    conversions) on gymnasium's own vector CartPole at the SAME N, rollout length,
                    minibatch size, epochs, 64-64 network and hyper-parameters -> ratio
    ppo.roofline    the actor-critic MLP's forward + backward alone at the PPO minibatch size
                    (samples/s, warm-up excluded): PPO end to end is reported as a fraction of it
                    (x epochs: each sample passes forward + backward `epochs` times), next to the
                    machine's measured fp32 matmul rate
    cleanrl         CleanRL-style PPO, SyncVectorEnv of 4 envs, its defaults (unlike work: kept as
                    a second row, not the headline)
Writes bench/results/envs.json. Timings on a shared machine are pessimistic; the 1-minute load
average at start and end is recorded next to them.

Example: python -m rl.bench.envs --quick
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from rl.bench.common import loadavg_1min, machine_info, matmul_gflops, write_results

SIZES = {"1k": 1024, "64k": 65536, "1M": 1 << 20}
NUM_STEPS, EPOCHS, MAX_MINIBATCH = 4, 1, 131072


def _rate(step, n: int, min_s: float, max_iters: int) -> float:
    step()  # warm-up (compilation, first-touch of buffers)
    iters, t0 = 0, time.perf_counter()
    while iters < max_iters and (iters < 3 or time.perf_counter() - t0 < min_s):
        step()
        iters += 1
    return n * iters / (time.perf_counter() - t0)


def bench_env_only(n: int, backend: str, min_s: float, num_threads: int | None = None) -> float:
    """Env steps/s of N CartPoles, random int64 actions, copy=False (obs is the state buffer)."""
    from envs.control import CartPoleVectorEnv
    env = CartPoleVectorEnv(n, backend=backend, copy=False,
                            num_threads=num_threads if backend == "numba" else None)
    return _random_action_rate(env, n, min_s, 400)


def _random_action_rate(env, n: int, min_s: float, reps: int) -> float:
    """Steps/s of `env` (n envs) under a fixed cycle of 4 random CartPole action batches."""
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 2, size=(4, n))
    k = iter(range(1 << 40))
    return _rate(lambda: env.step(acts[next(k) % 4]), n, min_s, reps)


def _gym_vector(n: int):
    import gymnasium
    return gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")


def bench_gym_vector(n: int, min_s: float) -> float:
    return _random_action_rate(_gym_vector(n), n, min_s, 400)


def bench_gym_sync(n: int, min_s: float) -> float:
    import gymnasium
    env = gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync")
    return _random_action_rate(env, n, min_s, 100)


@torch.no_grad()
def bench_with_inference(n: int, min_s: float) -> float:
    from envs.control import CartPoleVectorEnv
    from rl.control.policy import ActorCritic
    env = CartPoleVectorEnv(n, backend="numba", copy=False)
    agent = ActorCritic(4, 2, True, [64, 64])
    state = {"obs": env.reset(seed=0)[0]}

    def step():
        action = agent.act(torch.from_numpy(state["obs"]))[0]
        state["obs"] = env.step(action.numpy())[0]
    return _rate(step, n, min_s, 200)


def measured_updates(samples_per_update: int, target_samples: int = 1 << 22, lo: int = 3,
                     hi: int = 50) -> int:
    """PPO updates to time at one N: enough for ~target_samples samples, within [lo, hi].
    Example: measured_updates(4096) -> 50; measured_updates(1 << 22) -> 3."""
    return max(lo, min(hi, math.ceil(target_samples / samples_per_update)))


def steady_rates(update_end_s: Sequence[float], samples_per_update: int, warmup: int) -> dict:
    """Samples/s per update from the wall clock at the end of each update (seconds since the run
    started), dropping the first `warmup` >= 1 updates: {"median", "min", "max", "updates"}.
    Example: steady_rates([5.0, 6.0, 6.5, 7.5], 100, 1) -> median 100, min 100, max 200, 3 updates."""
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (the first update is timed from the run's start), got {warmup}")
    ends = list(update_end_s)
    rates = [samples_per_update / (b - a) for a, b in zip(ends[warmup - 1:-1], ends[warmup:])]
    if not rates:
        raise ValueError(f"{len(ends)} updates leave none to measure after {warmup} warm-up")
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "updates": len(rates)}


def mlp_fwd_bwd_flops(layer_sizes: Sequence[int]) -> int:
    """FLOPs per sample of one forward + backward of an MLP with these layer widths: forward
    2 * sum(in * out) (multiply-add), backward twice that (input and weight gradients).
    Example: mlp_fwd_bwd_flops([4, 64, 2]) -> 6 * (4*64 + 64*2) = 2304."""
    return 6 * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))


def ppo_config(n: int, updates: int):
    """The control PPO work both sides of the PPO figure do at N envs."""
    from rl.config import ControlConfig
    return ControlConfig(num_envs=n, num_steps=NUM_STEPS, minibatch_samples=min(MAX_MINIBATCH, n * NUM_STEPS),
                         epochs=EPOCHS, max_updates=updates, total_env_steps=10 ** 12, eval_episodes=0,
                         progress_bar=False, torch_threads=torch.get_num_threads())


def bench_with_training(n: int, tmp: pathlib.Path, warmup: int, measured: int) -> dict:
    """Our control PPO at N envs: per-update wall samples/s (logging included) and the old
    busy-time figure (env + inference + train of the last update)."""
    from rl.drivers.control_ppo import train_control
    from rl.run.logging import read_metrics
    cfg = ppo_config(n, warmup + measured)
    out = train_control(cfg, 0, tmp / f"train_{n}", "disabled")
    rows = {int(r["step"]): r for r in read_metrics(tmp / f"train_{n}" / "metrics.jsonl")
            if "sps/end_to_end" in r and int(r["step"]) < cfg.num_updates}
    ends = [rows[k]["time/wall_s"] for k in sorted(rows)]
    busy = out["time/env_s"] + out["time/inference_s"] + out["time/train_s"]
    return {"sps": steady_rates(ends, cfg.samples_per_update, warmup),
            "sps_busy_last_update": cfg.samples_per_update / busy, "sps_env": out["sps/env"],
            "sps_inference": out["sps/inference"], "sps_train": out["sps/train"],
            "num_minibatches": out["ppo/num_minibatches"]}


def _anchor_rollout(envs, agent, buf: dict, obs: torch.Tensor, reset_next: torch.Tensor):
    """CleanRL-style rollout on a NEXT_STEP-autoreset vector env: the step after an episode end
    only resets that env (its action is ignored), so it is marked `reset` and cut from GAE."""
    for t in range(buf["obs"].shape[0]):
        buf["obs"][t], buf["reset"][t] = obs, reset_next
        with torch.no_grad():
            dist = torch.distributions.Categorical(logits=agent.actor(obs))
            action = dist.sample()
            buf["logp"][t], buf["val"][t], buf["act"][t] = dist.log_prob(action), agent.value(obs), action
        next_obs, reward, term, trunc, _ = envs.step(action.numpy())
        buf["rew"][t], buf["term"][t], buf["trunc"][t] = (torch.tensor(x) for x in (reward, term, trunc))
        obs, reset_next = torch.tensor(next_obs), torch.tensor(term | trunc)
    with torch.no_grad():
        last_value = agent.value(obs)
    return obs, reset_next, last_value


def _anchor_update(agent, opt, buf: dict, last_value: torch.Tensor, c) -> list[tuple[float, float]]:
    """GAE + `c.epochs` epochs of shuffled minibatches of `c.minibatch_samples` (CleanRL's shape).
    NEXT_STEP autoreset: after a truncation the next row's obs is the true final obs, so
    next_values = values shifted by one bootstraps it; reset rows neither bootstrap nor chain."""
    from algorithms.gae import gae
    from algorithms.losses import clipped_surrogate
    with torch.no_grad():
        next_v = torch.cat([buf["val"][1:], last_value[None]])
        term = buf["term"] | buf["reset"]
        adv, ret = gae(buf["rew"], buf["val"], next_v, term, term | buf["trunc"], c.gamma, c.lam)
    n = adv.numel()
    obs, act, old_logp = buf["obs"].reshape(n, -1), buf["act"].reshape(n), buf["logp"].reshape(n)
    adv, ret = adv.reshape(n), ret.reshape(n)
    num_mb = max(1, n // c.minibatch_samples)
    size, stats = n // num_mb, []
    for _ in range(c.epochs):
        perm = torch.randperm(n)
        for k in range(num_mb):
            i = perm[k * size:(k + 1) * size]
            dist = torch.distributions.Categorical(logits=agent.actor(obs[i]))
            logp, entropy = dist.log_prob(act[i]), dist.entropy()
            with torch.no_grad():  # approx-KL and clip fraction per minibatch, as ours logs them
                log_ratio = logp - old_logp[i]
                stats.append((((log_ratio.exp() - 1) - log_ratio).mean().item(),
                              ((log_ratio.exp() - 1).abs() > c.clip).float().mean().item()))
            a = (adv[i] - adv[i].mean()) / (adv[i].std() + 1e-8)
            pg, _ = clipped_surrogate(logp[:, None], old_logp[i][:, None], a[:, None], c.clip, c.clip, dual_clip_c=None)
            v_loss = 0.5 * ((agent.value(obs[i]) - ret[i]) ** 2).mean()
            loss = pg.mean() - c.ent_coef * entropy.mean() + c.vf_coef * v_loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), c.max_grad_norm)
            opt.step()
    return stats


def bench_anchor_ppo(n: int, warmup: int, measured: int, seed: int = 0) -> dict:
    """The CleanRL-style anchor at the same work as `bench_with_training(n)`: gymnasium's own
    vector CartPole, same N, rollout length, minibatch size, epochs, network and hyper-parameters."""
    from rl.control.policy import ActorCritic
    c = ppo_config(n, warmup + measured)
    torch.manual_seed(seed)
    envs = _gym_vector(n)
    agent = ActorCritic(4, 2, True, list(c.hidden_sizes), c.activation)
    opt = torch.optim.Adam(agent.parameters(), lr=c.lr, eps=c.adam_eps)
    t, shape = c.num_steps, (c.num_steps, n)
    buf = {"obs": torch.zeros(t, n, 4), "act": torch.zeros(shape, dtype=torch.long),
           **{k: torch.zeros(shape) for k in ("logp", "val", "rew")},
           **{k: torch.zeros(shape, dtype=torch.bool) for k in ("term", "trunc", "reset")}}
    obs, reset_next = torch.tensor(envs.reset(seed=seed)[0]), torch.zeros(n, dtype=torch.bool)
    start, ends = time.perf_counter(), []
    for update in range(c.num_updates):
        opt.param_groups[0]["lr"] = c.lr * (1 - update / c.num_updates)
        obs, reset_next, last_value = _anchor_rollout(envs, agent, buf, obs, reset_next)
        _anchor_update(agent, opt, buf, last_value, c)
        ends.append(time.perf_counter() - start)
    envs.close()
    return {"sps": steady_rates(ends, c.samples_per_update, warmup)}


def bench_fwd_bwd(minibatch_samples: int, min_s: float, hidden: Sequence[int] = (64, 64)) -> dict:
    """Samples/s of the actor-critic MLP's forward + backward alone at one minibatch size (no env,
    no sampling, no optimizer), warm-up excluded, and the FLOP rate that makes."""
    from rl.control.policy import ActorCritic
    agent = ActorCritic(4, 2, True, list(hidden))
    obs = torch.randn(minibatch_samples, 4)

    def step():
        agent.zero_grad(set_to_none=True)
        (agent.actor(obs).sum() + agent.value(obs).sum()).backward()
    sps = _rate(step, minibatch_samples, min_s, 2000)
    flops = mlp_fwd_bwd_flops([4, *hidden, 2]) + mlp_fwd_bwd_flops([4, *hidden, 1])
    return {"minibatch_samples": minibatch_samples, "sps": sps, "flops_per_sample": flops,
            "gflops": sps * flops / 1e9}


def bench_size(n: int, args: argparse.Namespace, min_s: float, tmp: pathlib.Path, roofs: dict) -> dict:
    """All figures at N envs; `roofs` caches the forward + backward roofline per minibatch size."""
    r: dict = {"num_envs": n}
    r["env_only_numba"] = bench_env_only(n, "numba", min_s, args.env_threads or None)
    r["env_only_numpy"] = bench_env_only(n, "numpy", min_s)
    r["gym_vector"] = bench_gym_vector(n, min_s)
    if n <= 1024:
        r["gym_sync"] = bench_gym_sync(n, min_s)
    r["with_inference"] = bench_with_inference(n, min_s)
    r["ratio_env_only_vs_gym_vector"] = r["env_only_numba"] / r["gym_vector"]
    cfg = ppo_config(n, 1)
    warmup, measured = args.ppo_warmup, args.ppo_updates or measured_updates(cfg.samples_per_update)
    ours, anchor = bench_with_training(n, tmp, warmup, measured), bench_anchor_ppo(n, warmup, measured)
    if cfg.minibatch_samples not in roofs:
        roofs[cfg.minibatch_samples] = bench_fwd_bwd(cfg.minibatch_samples, min_s)
    roof, ours_sps = roofs[cfg.minibatch_samples], ours["sps"]["median"]
    r["ppo"] = {"work": {"num_envs": n, "num_steps": cfg.num_steps, "minibatch_samples": cfg.minibatch_samples,
                         "epochs": cfg.epochs, "hidden_sizes": list(cfg.hidden_sizes),
                         "warmup_updates": warmup, "measured_updates": measured},
                "ours": ours, "anchor_cleanrl_style_gym_vector": anchor,
                "ratio_ours_vs_anchor": ours_sps / anchor["sps"]["median"], "roofline_fwd_bwd": roof,
                "ours_fraction_of_roofline": ours_sps * cfg.epochs / roof["sps"],
                "anchor_fraction_of_roofline": anchor["sps"]["median"] * cfg.epochs / roof["sps"]}
    return r


def _print_size(label: str, r: dict) -> None:
    p = r["ppo"]
    print(f"N={label:>3}: env-only {r['env_only_numba'] / 1e6:8.1f}M/s (numpy {r['env_only_numpy'] / 1e6:.1f}M, "
          f"gymnasium vector {r['gym_vector'] / 1e6:.1f}M -> x{r['ratio_env_only_vs_gym_vector']:.1f}) | "
          f"+inference {r['with_inference'] / 1e6:.2f}M/s | PPO ours {p['ours']['sps']['median'] / 1e3:.0f}k/s "
          f"vs CleanRL-style on gymnasium vector {p['anchor_cleanrl_style_gym_vector']['sps']['median'] / 1e3:.0f}k/s "
          f"-> x{p['ratio_ours_vs_anchor']:.2f}; {100 * p['ours_fraction_of_roofline']:.0f}% of fwd+bwd "
          f"{p['roofline_fwd_bwd']['sps'] / 1e3:.0f}k/s", flush=True)


def _numba_pool() -> int:
    import numba
    return int(numba.config.NUMBA_NUM_THREADS)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rl bench envs", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1k and 64k only, shorter timings")
    p.add_argument("--out", default="bench/results/envs.json")
    p.add_argument("--cleanrl-steps", type=int, default=0, help="0 = 2048 quick / 16384 full")
    p.add_argument("--env-threads", type=int, default=0,
                   help="numba threads for our env-only figure (0 = auto: 1 below 32k envs, all above)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads for ours and the baselines alike (0 = torch default)")
    p.add_argument("--ppo-warmup", type=int, default=1, help="PPO updates not timed, both sides (>= 1)")
    p.add_argument("--ppo-updates", type=int, default=0,
                   help="PPO updates timed per N, both sides (0 = ~4M samples' worth, 3 to 50)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    sizes = {k: v for k, v in SIZES.items() if not (args.quick and k == "1M")}
    min_s = 0.5 if args.quick else 2.0
    tmp = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "rl_bench_envs"
    res: dict = {"load_avg_1m": loadavg_1min(),
                 "machine": {**machine_info("cpus", "platform"), "torch_threads": torch.get_num_threads(),
                             "numba_threads": _numba_pool(), "env_threads": args.env_threads or "auto",
                             "matmul_fp32_gflops": matmul_gflops(min_s=min_s)},
                 "quick": args.quick, "results": {}}
    roofs: dict[int, dict] = {}
    for label, n in sizes.items():
        res["results"][label] = bench_size(n, args, min_s, tmp, roofs)
        _print_size(label, res["results"][label])
    from rl.control.cleanrl_baseline import run_cleanrl_ppo
    clean = run_cleanrl_ppo(total_env_steps=args.cleanrl_steps or (2048 if args.quick else 16384))
    best_label = max(res["results"], key=lambda k: res["results"][k]["ppo"]["ours"]["sps"]["median"])
    best = res["results"][best_label]["ppo"]["ours"]["sps"]["median"]
    res["cleanrl_4env"] = {"num_envs": 4, "num_steps": 128, "minibatches": 4, "epochs": 4, "sps": clean["sps"],
                           "ours_best_num_envs": res["results"][best_label]["num_envs"],
                           "ratio_ours_best_vs_cleanrl_4env": best / clean["sps"]}
    for r in res["results"].values():
        roof = r["ppo"]["roofline_fwd_bwd"]
        roof["fraction_of_matmul"] = roof["gflops"] / res["machine"]["matmul_fp32_gflops"]
    res["load_avg_1m_end"] = loadavg_1min()
    print(f"CleanRL-style PPO (SyncVectorEnv x4, its defaults; unlike work): {clean['sps']:.0f} steps/s; ours at "
          f"N={best_label} {best / 1e3:.0f}k/s -> x{res['cleanrl_4env']['ratio_ours_best_vs_cleanrl_4env']:.0f}; "
          f"fp32 matmul {res['machine']['matmul_fp32_gflops']:.0f} GFLOP/s; load avg {res['load_avg_1m']:.2f} -> "
          f"{res['load_avg_1m_end']:.2f} on {res['machine']['cpus']} CPUs (shared: pessimistic)")
    print(f"wrote {write_results(args.out, res, indent=1)}")
    return 0


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
