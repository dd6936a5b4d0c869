"""Trajectories in mini-swe-agent's trajectory JSON (`trajectory_format: mini-swe-agent-1.1`), so its
inspector (`mini-extra inspector <run dir>` finds `*.traj.json`) and users' own viewers read them.

Layout, as mini-swe-agent's SWE-bench runner writes it: `<out>/<instance_id>/<instance_id>.traj.json`
and `<out>/preds.json` ({instance_id: {model_name_or_path, instance_id, model_patch}}). Keys:
    info: {model_stats: {instance_cost, api_calls}, config: {agent, agent_type, model, model_type,
           environment, environment_type}, mini_version, exit_status, submission, ...}
    messages: the OpenAI-format history; each may carry `extra` (assistant: actions, tokens;
              observation: returncode); the last is {"role": "exit", "content": <patch>,
              "extra": {"exit_status", "submission"}}
    trajectory_format: "mini-swe-agent-1.1"; instance_id
Exit statuses map to mini-swe-agent's names: submitted -> Submitted, a turn cap -> LimitsExceeded;
ours is kept as info.exit_detail.

Example:
    data = to_mini_swe_agent(traj, "smollm2", {"turn_control": "fixed:4"})
    data["info"]["exit_status"]   # -> "Submitted"
"""
from __future__ import annotations

import json
from pathlib import Path

TRAJECTORY_FORMAT = "mini-swe-agent-1.1"
MINI_VERSION = "2.4.6"   # the mini-swe-agent release whose format this follows

_STATUS = {"submitted": "Submitted", "turn_cap": "LimitsExceeded", "hard_limit": "LimitsExceeded",
           "model_error": "ModelError", "sandbox_error": "SandboxError"}


def mini_exit_status(exit_status: str) -> str:
    head = exit_status.split(":")[0]
    return _STATUS.get(head, "LimitsExceeded" if "cap" in head or "limit" in head else head or "Unknown")


def to_mini_swe_agent(traj, model_name: str, agent_config: dict, resolved: bool | None = None) -> dict:
    """A Trajectory (envs/coding/agent.py) -> mini-swe-agent's trajectory dict."""
    status = mini_exit_status(traj.exit_status)
    exit_msg = {"role": "exit", "content": traj.patch,
                "extra": {"exit_status": status, "submission": traj.patch}}
    return {
        "info": {
            "model_stats": {"instance_cost": traj.cost, "api_calls": traj.num_turns},
            "config": {
                "agent": {**agent_config, "agent_format": traj.agent_format, "strategy": traj.strategy},
                "agent_type": "envs.coding.agent.run_agent",
                "model": {"model_name": model_name},
                "model_type": "envs.coding.models",
                "environment": {},
                "environment_type": "envs.coding.sandbox",
            },
            "mini_version": MINI_VERSION,
            "exit_status": status,
            "exit_detail": traj.exit_status,
            "submission": traj.patch,
            "resolved": resolved,
            "tokens": {"input": traj.input_tokens, "output": traj.output_tokens},
            "format_ok_turns": sum(t.format_ok for t in traj.turns),
            "wall_s": traj.wall_s,
        },
        "messages": list(traj.messages) + [exit_msg],
        "trajectory_format": TRAJECTORY_FORMAT,
        "instance_id": traj.instance_id,
    }


def write_mini_swe_agent(out_dir: Path, items: list[tuple[object, bool | None]], model_name: str,
                         agent_config: dict) -> list[Path]:
    """`<out>/<id>/<id>.traj.json` per trajectory and `<out>/preds.json`; the paths written."""
    out_dir, paths, preds = Path(out_dir), [], {}
    for traj, resolved in items:
        path = out_dir / traj.instance_id / f"{traj.instance_id}.traj.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_mini_swe_agent(traj, model_name, agent_config, resolved), indent=2))
        paths.append(path)
        preds[traj.instance_id] = {"model_name_or_path": model_name, "instance_id": traj.instance_id,
                                   "model_patch": traj.patch}
    (out_dir / "preds.json").write_text(json.dumps(preds, indent=2))
    return paths
