"""The docker sandbox: official SWE-bench images (`swebench/sweb.eval.x86_64.<id>`), via the docker CLI.

Same interface as LocalSandbox (run, write_file, put_tmp, close, workdir, tmpdir). Before anything
starts, `check_docker` asks the engine (`docker info`, bounded by a timeout); when no engine answers
it raises SandboxUnavailable with a message saying so and what to use instead — never a hang.
Containers run with --network none; the repo is /testbed at base_commit inside the image.

Example:
    check_docker()                         # raises SandboxUnavailable here (no engine)
    sb = DockerSandbox.create(task)        # docker run -d ... sleep infinity
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import PurePosixPath

from envs.coding.sandbox import ExecResult, SandboxUnavailable

NO_ENGINE_HELP = ("no docker engine answers ({detail}). The docker backend runs the official SWE-bench "
                  "images and needs a running engine; start one, or use --backend local (offline tasks).")


def check_docker(timeout_s: float = 10.0) -> str:
    """The engine's server version, or SandboxUnavailable with a clear reason (bounded wait)."""
    if shutil.which("docker") is None:
        raise SandboxUnavailable(NO_ENGINE_HELP.format(detail="the docker CLI is not installed"))
    try:
        res = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                             text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SandboxUnavailable(NO_ENGINE_HELP.format(detail=f"`docker info` gave no answer in "
                                                              f"{timeout_s:.0f} s")) from None
    version = res.stdout.strip()
    if res.returncode != 0 or not version or version == "<no value>":
        lines = (res.stderr or res.stdout).strip().splitlines() or ["no output"]
        raise SandboxUnavailable(NO_ENGINE_HELP.format(detail=f"`docker info` failed: {lines[-1]}"))
    return version


def official_image(instance_id: str, arch: str = "x86_64") -> str:
    """Image name of the official harness: '__' becomes '_1776_', lower case."""
    return f"swebench/sweb.eval.{arch}.{instance_id.replace('__', '_1776_').lower()}:latest"


class DockerSandbox:
    has_repo = True                      # the image holds the repo at base_commit

    def __init__(self, container: str, timeout_s: float = 60.0, memory: str = "4g"):
        self.container, self.timeout_s, self.memory = container, timeout_s, memory
        self.workdir = PurePosixPath("/testbed")
        self.tmpdir = PurePosixPath("/tmp")
        self.backend = "docker"

    @classmethod
    def create(cls, task, timeout_s: float = 60.0, memory: str = "4g",
               start_timeout_s: float = 600.0) -> "DockerSandbox":
        check_docker()
        name = f"rl-swe-{uuid.uuid4().hex[:10]}"
        cmd = ["docker", "run", "-d", "--rm", "--network", "none", "--memory", memory,
               "--pids-limit", "512", "--name", name, official_image(task.instance_id),
               "sleep", "infinity"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=start_timeout_s)
        if res.returncode != 0:
            raise SandboxUnavailable(f"could not start {official_image(task.instance_id)}: "
                                     f"{res.stderr.strip()[-300:]}")
        return cls(name, timeout_s, memory)

    def run(self, command: str, timeout_s: float | None = None) -> ExecResult:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        start = time.monotonic()
        cmd = ["docker", "exec", "-w", str(self.workdir), self.container, "timeout", "-s", "KILL",
               str(int(timeout_s)), "bash", "-c", command]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=timeout_s + 30,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return ExecResult(-9, "<command timed out>\n", True, time.monotonic() - start)
        out = (res.stdout + res.stderr).decode("utf-8", errors="replace")
        return ExecResult(res.returncode, out, res.returncode in (124, 137), time.monotonic() - start)

    def _write(self, path: str, text: str) -> None:
        subprocess.run(["docker", "exec", "-i", self.container, "sh", "-c",
                        f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}'"],
                       input=text.encode(), capture_output=True, timeout=60, check=True)

    def write_file(self, rel: str, text: str) -> None:
        self._write(str(self.workdir / rel), text)

    def put_tmp(self, name: str, text: str) -> str:
        path = str(self.tmpdir / name)
        self._write(path, text)
        return path

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, timeout=60)
