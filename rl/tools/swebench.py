"""`rl eval swebench`: run a coding agent over SWE-style tasks under turn-control strategies.

    rl eval swebench --tasks generator:20 --agent replay --turn-control unlimited fixed:p75 \\
        dynamic:p50-p75 --calibrate --backend local --workers 2 --out runs/swe-demo

Tasks: a JSONL of SWE-bench rows, `generator:N` (injected-bug repos) or `humaneval:N`. Official rows
(repo in the `swebench` package's spec tables) are run in the official images and graded by the
package itself (envs/coding/official.py); generated and HumanEval tasks by envs/coding/grading.py.
Models (--model): `scripted` (oracle: reads a file, applies the gold patch, submits), `replay` (oracle
with per-task varying turn counts; some never solve), `openai:<url>` (an OpenAI-compatible server
through the `openai` client, with --max-retries / --backoff-s / --request-timeout-s; model name from
--model-name or the server's first listed model), `policy:<name>` (the in-process HF engine on
rl.workers.models.load_policy(name)). Agent formats (--agent): `bash` (a ```bash block per reply) or
`tools` (the chat-completions tools API: `bash` and `submit` tools, results as tool messages). The
old spelling `--agent <model>` still means `--model <model> --agent bash`. A model server that
stays unreachable after the retries stops the run with one error line (exit 2).
Per strategy, runs/<name>/<strategy>/ gets preds.jsonl (official format), trajectories/, eval_logs/,
report.json; runs/<name>/ gets summary.json, summary.png and, with --calibrate, calibration.json
(the unlimited run's turns per task, which percentile caps like fixed:p75 are read from). A
percentile cap with neither --calibrate nor --calibration calibrates first (a printed note says so).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from allocation.turn_control import cost_reduction, parse_turn_control, percentile_turns
from envs.coding.sources import load_eval_tasks
from envs.coding.runner import run_strategy, save_results
from envs.coding.sandbox import LocalSandbox, SandboxUnavailable, detect_local_backend


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl eval swebench", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", required=True, help="tasks.jsonl | generator:N | humaneval:N")
    p.add_argument("--model", default=None,
                   help="scripted (default) | replay | openai:<base-url> | policy:<model-name>")
    p.add_argument("--agent", default="bash",
                   help="agent format: bash | tools (or, as before, a --model value with the bash format)")
    p.add_argument("--model-name", default=None,
                   help="model for openai:<url> (default: the server's first model); label in preds.jsonl")
    p.add_argument("--request-timeout-s", type=float, default=120.0, help="per model-server request")
    p.add_argument("--max-retries", type=int, default=4,
                   help="model-server retries on connection errors, timeouts, 429 and 5xx")
    p.add_argument("--backoff-s", type=float, default=1.0,
                   help="first retry waits backoff_s x U(0.5, 1); doubling each retry (at most 30 s)")
    p.add_argument("--tool-choice", default="auto", help="tool_choice sent with --agent tools (auto | required)")
    p.add_argument("--turn-control", nargs="+", default=["unlimited"],
                   help="strategies: unlimited | fixed:<N|pQ> | dynamic:<N|pQ>-<N|pQ>")
    p.add_argument("--calibrate", action="store_true",
                   help="run unlimited first and read percentile caps from its turn distribution "
                        "(implied by a percentile cap when no --calibration file is given)")
    p.add_argument("--calibration", type=Path, default=None, help="calibration.json of an earlier run")
    p.add_argument("--backend", default="local", choices=["local", "docker"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/swebench"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--price-in", type=float, default=1.0, help="$ per million input tokens")
    p.add_argument("--price-out", type=float, default=4.0, help="$ per million output tokens")
    p.add_argument("--hard-turn-limit", type=int, default=100, help="safety stop for unlimited runs")
    p.add_argument("--command-timeout", type=float, default=60.0, help="seconds per agent command")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7)
    return p


def resolve_model_and_format(args) -> None:
    """`--agent scripted` (the old spelling) -> --model scripted --agent bash; check the format."""
    from envs.coding.runner import AGENT_FORMATS
    if args.agent not in AGENT_FORMATS:
        if args.model is not None or args.agent.split(":")[0] not in ("scripted", "replay", "openai", "policy"):
            raise ValueError(f"unknown --agent {args.agent!r}; valid: {', '.join(AGENT_FORMATS)}")
        args.model, args.agent = args.agent, "bash"
    args.model = args.model or "scripted"


def build_model_factory(args):
    """(task -> ChatModel, model label for preds.jsonl)."""
    from envs.coding import models
    agent = args.model
    if agent == "scripted":
        return (lambda t: models.ScriptedModel(models.oracle_replies(t, explore_turns=1))), "scripted-oracle"
    if agent == "replay":
        return (lambda t: models.ScriptedModel(models.oracle_replies(
            t, **models.replay_profile(t.instance_id, args.seed)))), "replay-oracle"
    if agent.startswith("openai:"):
        url = agent.split(":", 1)[1]
        model = models.OpenAIChatModel(url, args.model_name, args.temperature, args.max_new_tokens,
                                       timeout_s=args.request_timeout_s, max_retries=args.max_retries,
                                       backoff_s=args.backoff_s, tool_choice=args.tool_choice)
        return (lambda t: model), args.model_name or f"openai:{model.url}"   # one client, thread-safe
    if agent.startswith("policy:"):
        name = agent.split(":", 1)[1]
        engine, tokenizer = _load_policy_engine(name)
        lock = threading.Lock()   # one in-process engine: serialise calls across workers

        class Locked(models.EngineChatModel):
            def chat(self, messages):
                with lock:
                    return super().chat(messages)

            def chat_tools(self, messages, tools):
                with lock:
                    return super().chat_tools(messages, tools)
        return (lambda t: Locked(engine, tokenizer, args.max_new_tokens, args.temperature)), name
    raise ValueError(f"unknown --model {agent!r}; valid: scripted, replay, openai:<url>, policy:<name>")


def _load_policy_engine(name: str):
    try:
        from rl.workers.models import load_policy
        from rollout import hf_engine
    except ImportError as exc:
        raise RuntimeError(f"policy:<model> needs rl.workers.models.load_policy and rollout.hf_engine ({exc})")
    model, tokenizer = load_policy(name)
    engine_cls = getattr(hf_engine, "HFEngine", None) or getattr(hf_engine, "HfEngine")
    return engine_cls(model, tokenizer), tokenizer


def build_sandbox_factory(args):
    if args.backend == "docker":
        from envs.coding.docker_backend import DockerSandbox, check_docker
        check_docker()
        return lambda task: DockerSandbox.create(task, timeout_s=args.command_timeout)
    backend = detect_local_backend()
    print(f"sandbox backend: local/{backend}" + ("" if backend != "plain" else
          " (WARNING: no bubblewrap or unshare: no network or file-system isolation)"), flush=True)
    return lambda task: LocalSandbox.create(timeout_s=args.command_timeout, backend=backend)


def uses_percentiles(spec: str) -> bool:
    return ":p" in spec.lower() or "-p" in spec.lower()


def check_strategies(specs: list[str], has_calibration: bool) -> None:
    """Fail before any work: bad syntax, or percentile caps with no calibration to read them from."""
    for spec in specs:
        parse_turn_control(spec, [1])
        if uses_percentiles(spec):
            if not has_calibration:
                raise ValueError(f"--turn-control {spec}: percentile caps need --calibrate (an "
                                 "unlimited run first) or --calibration <calibration.json>")


def _slug(strategy: str) -> str:
    return strategy.replace(":", "_").replace("-", "_to_")


def run_one_strategy(args, spec, tasks, model_for, make_sandbox, label, calib):
    from envs.coding.runner import format_kwargs
    from rl.run.logging import progress
    policy = parse_turn_control(spec, calib)
    bar = progress(len(tasks), f"{spec:>18}")
    lock = threading.Lock()
    solved = [0]

    def on_done(res):
        with lock:
            solved[0] += res.grade.resolved
            bar.update(1)
            bar.set_postfix(solved=solved[0], turns=res.trajectory.num_turns)
    try:
        results = run_strategy(tasks, model_for, policy, make_sandbox, workers=args.workers,
                               on_done=on_done, hard_turn_limit=args.hard_turn_limit,
                               command_timeout_s=args.command_timeout, price_in_per_mtok=args.price_in,
                               price_out_per_mtok=args.price_out, **format_kwargs(args.agent))
    finally:
        bar.close()
    summary = save_results(args.out / _slug(spec), results, label, {
        "model": args.model, "turn_control": spec, "hard_turn_limit": args.hard_turn_limit,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature})
    summary.update(strategy=spec, cap_turns=policy.cap_turns, extra_turns=policy.extra_turns)
    summary["cum_cost_by_turn"] = _mean_cumulative_cost(results)
    return summary


def _mean_cumulative_cost(results) -> list[float]:
    """Mean over tasks of the cost spent by turn t (tasks that ended keep their final cost)."""
    longest = max((r.trajectory.num_turns for r in results), default=0)
    curves = []
    for r in results:
        acc, curve = 0.0, []
        for t in r.trajectory.turns:
            acc += t.cost
            curve.append(acc)
        curves.append(curve + [acc] * (longest - len(curve)))
    return [sum(c[i] for c in curves) / len(curves) for i in range(longest)] if curves else []


def print_table(summaries: list[dict]) -> None:
    """One row per strategy; `valid` = turns whose reply held a valid action (bash block / tool call)."""
    base = next((s["cost"] for s in summaries if s["strategy"] == "unlimited"), None)
    head = f"{'strategy':<20}{'cap':>6}{'solve':>8}{'turns':>8}{'tokens':>11}{'cost $':>10}{'saved':>8}{'valid':>7}"
    print(head + "\n" + "-" * len(head))
    for s in summaries:
        cap = "-" if s["cap_turns"] is None else (f"{s['cap_turns']}+{s['extra_turns']}"
                                                   if s["extra_turns"] else str(s["cap_turns"]))
        saved = "" if base is None else f"{100 * cost_reduction(base, s['cost']):.0f}%"
        print(f"{s['strategy']:<20}{cap:>6}{100 * s['solve_rate']:>7.0f}%{s['mean_turns']:>8.2f}"
              f"{s['tokens']:>11d}{s['cost']:>10.4f}{saved:>8}{100 * s['format_ok_rate']:>6.0f}%")


def plot_summary(summaries: list[dict], png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [s["strategy"] for s in summaries]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for ax, key, title in zip(axes, ["solve_rate", "mean_turns", "cost"],
                              ["solve rate", "mean turns", "cost ($)"]):
        ax.bar(names, [s[key] for s in summaries], color="C0")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    for s in summaries:
        axes[3].plot(range(1, len(s["cum_cost_by_turn"]) + 1), s["cum_cost_by_turn"], label=s["strategy"])
    axes[3].set_title("mean cumulative cost by turn")
    axes[3].set_xlabel("turn")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def calibrate_if_needed(args) -> None:
    """A percentile cap with no turn distribution to read it from: calibrate first, and say so.

    The cap the user asked for (e.g. p75 of an unlimited run's turns) is then exactly what runs;
    falling back to some fixed cap instead would report numbers for a strategy nobody chose.
    """
    pct = [s for s in args.turn_control if uses_percentiles(s)]
    if pct and not args.calibrate and args.calibration is None:
        print(f"note: {', '.join(pct)} reads its cap from an unlimited run's turn distribution and "
              "none was given (--calibration FILE): running `unlimited` first to calibrate, as "
              "--calibrate does", flush=True)
        args.calibrate = True


def main(argv: list[str]) -> int:
    from envs.coding.chat import ModelUnavailable
    try:
        return _main(build_parser().parse_args(argv))
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    calibrate_if_needed(args)
    try:
        resolve_model_and_format(args)
        check_strategies(args.turn_control, has_calibration=args.calibrate or args.calibration is not None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        make_sandbox = build_sandbox_factory(args)
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    try:
        tasks = load_eval_tasks(args.tasks, args.seed, args.workers)
        if args.backend == "local" and any(t.repo_files is None for t in tasks):
            raise ValueError("these rows carry no repo (official SWE-bench rows): they need "
                             "--backend docker and the official images")
        model_for, label = build_model_factory(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    strategies = list(dict.fromkeys(args.turn_control))
    calib = None
    if args.calibration is not None:
        calib = json.loads(args.calibration.read_text())["turns"]
    summaries = []
    if args.calibrate:
        strategies = [s for s in strategies if s != "unlimited"]
        summaries.append(run_one_strategy(args, "unlimited", tasks, model_for, make_sandbox, label, None))
        calib = summaries[0]["turns"]
        (args.out / "calibration.json").write_text(json.dumps({
            "turns": calib, **{f"p{q}": percentile_turns(calib, q) for q in (25, 50, 75, 90)}}))
    try:
        for spec in strategies:
            summaries.append(run_one_strategy(args, spec, tasks, model_for, make_sandbox, label, calib))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(summaries)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1))
    print(f"wrote {plot_summary(summaries, args.out / 'summary.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
