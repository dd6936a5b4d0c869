"""Run an agent over a task set under one turn-control strategy, grade, and summarise.

For each task: run_agent -> patch -> evaluate_patch in a fresh sandbox -> TaskResult. Tasks run in a
thread pool (`workers`); the work is subprocesses, so threads suffice. Per strategy the summary is
solve rate, mean turns, tokens and cost (SPECS.md §7), plus the turn distribution (the calibration
that percentile caps are read from).

Example:
    results = run_strategy(tasks, model_for, TurnPolicy(), make_sandbox, workers=2)
    summarize(results)["solve_rate"]
"""
from __future__ import annotations

import json
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from allocation.turn_control import TurnPolicy
from envs.coding.agent import SYSTEM_PROMPT, ChatModel, Trajectory, bash_step, run_agent
from envs.coding.grading import GradeReport, evaluate_patch
from envs.coding.tasks import CodingTask, write_predictions
from envs.coding.tools_agent import TOOLS_SYSTEM_PROMPT, tools_step
from envs.coding.trajectory import write_mini_swe_agent

# agent format name -> (step function, system prompt); `--agent bash|tools`
AGENT_FORMATS = {"bash": (bash_step, SYSTEM_PROMPT), "tools": (tools_step, TOOLS_SYSTEM_PROMPT)}


def format_kwargs(agent_format: str) -> dict:
    """run_agent's keyword arguments for a format name; an unknown name lists the valid ones."""
    if agent_format not in AGENT_FORMATS:
        raise ValueError(f"unknown agent format {agent_format!r}; valid: {', '.join(AGENT_FORMATS)}")
    step, prompt = AGENT_FORMATS[agent_format]
    return {"agent_format": agent_format, "step": step, "system_prompt": prompt}


@dataclass
class TaskResult:
    task: CodingTask
    trajectory: Trajectory
    grade: GradeReport
    eval_log: str


def run_one(task: CodingTask, model: ChatModel, policy: TurnPolicy, make_sandbox: Callable,
            **agent_kwargs) -> TaskResult:
    traj = run_agent(task, model, policy, make_sandbox, **agent_kwargs)
    grade, log = evaluate_patch(task, traj.patch, make_sandbox)
    return TaskResult(task, traj, grade, log)


def run_strategy(tasks: list[CodingTask], model_for: Callable[[CodingTask], ChatModel],
                 policy: TurnPolicy, make_sandbox: Callable, workers: int = 1,
                 on_done: Callable[[TaskResult], None] | None = None, **agent_kwargs) -> list[TaskResult]:
    """All tasks under one policy; results in task order. `on_done` is called as each finishes."""
    def job(task: CodingTask) -> TaskResult:
        res = run_one(task, model_for(task), policy, make_sandbox, **agent_kwargs)
        if on_done is not None:
            on_done(res)
        return res

    if workers <= 1:
        return [job(t) for t in tasks]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(job, t) for t in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:   # e.g. the model server is gone: queued tasks would only fail too
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed.exception()
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summarize(results: list[TaskResult]) -> dict:
    """solve_rate, mean_turns, tokens (in/out/total), cost; turns = the per-task distribution."""
    n = max(1, len(results))
    turns = [r.trajectory.num_turns for r in results]
    all_turns = [t for r in results for t in r.trajectory.turns]
    tok_in = sum(r.trajectory.input_tokens for r in results)
    tok_out = sum(r.trajectory.output_tokens for r in results)
    return {
        "tasks": len(results),
        "resolved": sum(r.grade.resolved for r in results),
        "solve_rate": sum(r.grade.resolved for r in results) / n,
        "mean_turns": sum(turns) / n,
        "input_tokens": tok_in,
        "output_tokens": tok_out,
        "tokens": tok_in + tok_out,
        "cost": sum(r.trajectory.cost for r in results),
        "extended": sum(r.trajectory.extended for r in results),
        "format_ok_rate": sum(t.format_ok for t in all_turns) / max(1, len(all_turns)),
        "exit_status": _count(r.trajectory.exit_status.split(":")[0] for r in results),
        "turns": turns,
    }


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out


def save_results(out_dir: Path, results: list[TaskResult], model_name: str,
                 agent_config: dict | None = None) -> dict:
    """preds.jsonl (official format), trajectories/<id>.json, eval_logs/<id>.log, report.json, and
    mini-swe-agent's layout: <id>/<id>.traj.json + preds.json (envs/coding/trajectory.py)."""
    out_dir = Path(out_dir)
    (out_dir / "trajectories").mkdir(parents=True, exist_ok=True)
    (out_dir / "eval_logs").mkdir(exist_ok=True)
    write_predictions(out_dir / "preds.jsonl", [
        {"instance_id": r.task.instance_id, "model_name_or_path": model_name,
         "model_patch": r.trajectory.patch} for r in results])
    for r in results:
        traj = r.trajectory.to_json()
        traj["resolved"] = r.grade.resolved
        (out_dir / "trajectories" / f"{r.task.instance_id}.json").write_text(json.dumps(traj, indent=1))
        (out_dir / "eval_logs" / f"{r.task.instance_id}.log").write_text(r.eval_log)
    write_mini_swe_agent(out_dir, [(r.trajectory, r.grade.resolved) for r in results], model_name,
                         agent_config or {})
    summary = summarize(results)
    report = {**summary, "per_task": {
        r.task.instance_id: {"resolved": r.grade.resolved, "turns": r.trajectory.num_turns,
                             "cost": r.trajectory.cost, "exit_status": r.trajectory.exit_status,
                             "log_valid": r.grade.log_valid, "reason": r.grade.reason}
        for r in results}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return summary
