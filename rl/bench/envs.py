"""`rl bench envs`: classic-control stepping and PPO throughput next to Gymnasium in the same run.

Figures (steps/s), each at N = 1k, 64k, 1M parallel CartPoles (--quick: 1k, 64k):
    env_only        our numba kernel (and numpy path), random int64 actions, NEXT_STEP autoreset,
                    copy=False (the returned obs is the state buffer); --env-threads sets the
                    numba thread count (default: 1 below 32k envs, all cores above)
    gym_vector      Gymnasium's own CartPoleVectorEnv (numpy), same N            -> ratio
    gym_sync        Gymnasium SyncVectorEnv of CartPole-v1 (measured at N = 1k only)
    with_inference  env + 64-64 actor-critic forward + action sampling per step
    with_training   control PPO end to end (rollout + GAE + PPO epochs), steady-state update
    cleanrl         CleanRL-style PPO, SyncVectorEnv of 4 envs, its defaults    -> ratio
Writes bench/results/envs.json. Timings on a shared machine are pessimistic; the load average at
start and end is recorded next to them.

Example: python -m rl.bench.envs --quick
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np
import torch

from rl.bench.common import loadavg_1min, machine_info, write_results

SIZES = {"1k": 1024, "64k": 65536, "1M": 1 << 20}


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


def bench_gym_vector(n: int, min_s: float) -> float:
    import gymnasium
    env = gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    return _random_action_rate(env, n, min_s, 400)


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


def bench_with_training(n: int, tmp: pathlib.Path) -> dict[str, float]:
    from rl.config import ControlConfig
    from rl.drivers.control_ppo import train_control
    cfg = ControlConfig(num_envs=n, num_steps=4, minibatch_samples=min(131072, n * 4), epochs=1,
                        max_updates=2, total_env_steps=10 ** 12, eval_episodes=0,
                        progress_bar=False, torch_threads=torch.get_num_threads())
    out = train_control(cfg, 0, tmp / f"train_{n}", "disabled")
    busy = out["time/env_s"] + out["time/inference_s"] + out["time/train_s"]
    return {"sps": cfg.samples_per_update / busy, "sps_env": out["sps/env"],
            "sps_inference": out["sps/inference"], "sps_train": out["sps/train"],
            "num_minibatches": out["ppo/num_minibatches"]}


def _numba_pool() -> int:
    import numba
    return int(numba.config.NUMBA_NUM_THREADS)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rl bench envs", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1k and 64k only, shorter timings")
    p.add_argument("--out", default="bench/results/envs.json")
    p.add_argument("--cleanrl-steps", type=int, default=0, help="0 = 2048 quick / 16384 full")
    p.add_argument("--env-threads", type=int, default=0,
                   help="numba threads for our env-only figure (0 = auto: 1 below 32k envs, "
                        "all above)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads for ours and the baseline alike (0 = torch default)")
    args = p.parse_args(argv)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    sizes = {k: v for k, v in SIZES.items() if not (args.quick and k == "1M")}
    min_s = 0.5 if args.quick else 2.0
    tmp = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "rl_bench_envs"
    res: dict = {"machine": {**machine_info("cpus", "platform"), "loadavg_start": loadavg_1min(),
                             "torch_threads": torch.get_num_threads(), "numba_threads": _numba_pool(),
                             "env_threads": args.env_threads or "auto"},
           "quick": args.quick, "results": {}}
    for label, n in sizes.items():
        r: dict[str, float] = {"num_envs": n}
        r["env_only_numba"] = bench_env_only(n, "numba", min_s, args.env_threads or None)
        r["env_only_numpy"] = bench_env_only(n, "numpy", min_s)
        r["gym_vector"] = bench_gym_vector(n, min_s)
        if n <= 1024:
            r["gym_sync"] = bench_gym_sync(n, min_s)
        r["with_inference"] = bench_with_inference(n, min_s)
        r.update({f"with_training_{k}": v for k, v in bench_with_training(n, tmp).items()})
        r["ratio_env_only_vs_gym_vector"] = r["env_only_numba"] / r["gym_vector"]
        res["results"][label] = r
        print(f"N={label:>3}: env-only {r['env_only_numba'] / 1e6:8.1f}M/s "
              f"(numpy {r['env_only_numpy'] / 1e6:.1f}M, gymnasium vector "
              f"{r['gym_vector'] / 1e6:.1f}M -> x{r['ratio_env_only_vs_gym_vector']:.1f}) | "
              f"+inference {r['with_inference'] / 1e6:.2f}M/s | "
              f"+training {r['with_training_sps'] / 1e3:.0f}k/s", flush=True)
    steps = args.cleanrl_steps or (2048 if args.quick else 16384)
    from rl.control.cleanrl_baseline import run_cleanrl_ppo
    clean = run_cleanrl_ppo(total_env_steps=steps)
    best = max(r["with_training_sps"] for r in res["results"].values())
    res["cleanrl_ppo_sps"] = clean["sps"]
    res["ratio_ppo_vs_cleanrl"] = best / clean["sps"]
    res["machine"]["loadavg_end"] = loadavg_1min()
    print(f"CleanRL-style PPO (SyncVectorEnv x4): {clean['sps']:.0f} steps/s; ours best "
          f"{best / 1e3:.0f}k/s -> x{res['ratio_ppo_vs_cleanrl']:.0f}; gym sync (1k): "
          f"{res['results']['1k'].get('gym_sync', float('nan')) / 1e3:.0f}k/s; load avg "
          f"{res['machine']['loadavg_start']:.1f} -> {res['machine']['loadavg_end']:.1f} "
          f"on {res['machine']['cpus']} CPUs (shared: pessimistic)")
    print(f"wrote {write_results(args.out, res, indent=1)}")
    return 0


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
