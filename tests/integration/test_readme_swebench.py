"""Every `rl eval swebench` command in README.md runs as written (the `rl` console script, in a fresh
directory, exit code 0).

Commands that need what this machine may not have are skipped with the reason: `--backend docker`
(when no docker engine answers), `--agent openai:<url>` (a model server at that URL) and
`--agent policy:<name>` (loads a model). None of the README's commands needs either today.
"""
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    """`rl eval swebench ...` lines of README.md, with `\\` continuations joined and comments cut."""
    out, pending = [], ""
    for raw in README.read_text().splitlines():
        line = raw.strip()
        if not pending and not line.startswith("rl eval swebench"):
            continue
        line = line.split(" #", 1)[0].rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def _skip_reason(argv: list[str]) -> str | None:
    joined = " ".join(argv)
    if "--backend docker" in joined or "--backend=docker" in joined:
        from envs.coding.docker_backend import check_docker
        from envs.coding.sandbox import SandboxUnavailable
        try:
            check_docker(timeout_s=5)
        except SandboxUnavailable as exc:
            return f"needs a docker engine: {exc}"
    if "openai:" in joined:
        return "needs an OpenAI-compatible model server at the README's URL"
    if "policy:" in joined:
        return "loads a model in-process (the slow tier covers that path)"
    return None


def _rl() -> list[str]:
    script = Path(sys.executable).with_name("rl")
    if script.exists():
        return [str(script)]
    found = shutil.which("rl")
    return [found] if found else [sys.executable, "-m", "rl.cli"]


COMMANDS = readme_commands()


def test_readme_has_swebench_commands():
    assert len(COMMANDS) >= 2 and any("--turn-control" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(command, tmp_path):
    argv = shlex.split(command)
    reason = _skip_reason(argv)
    if reason:
        pytest.skip(reason)
    res = subprocess.run(_rl() + argv[1:], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    if "--help" in argv:
        assert "--turn-control" in res.stdout
        return
    out = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"), "runs/swebench")
    assert (tmp_path / out / "summary.json").exists() and "solve" in res.stdout
    if any(":p" in a for a in argv) and "--calibrate" not in argv:
        assert "running `unlimited` first to calibrate" in res.stdout
        assert (tmp_path / out / "calibration.json").exists()
