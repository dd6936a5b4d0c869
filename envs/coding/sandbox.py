"""Sandboxes that run an agent's shell commands and the test suite of a coding task.

`LocalSandbox`: the repo is copied into a fresh temp dir (`root/repo`, with `root/tmp` as TMPDIR).
Every command runs as a new process group (so a timeout kills the whole tree) with rlimits on CPU
seconds, address space and file size, under the strongest isolation this machine offers:

- "bwrap":   bubblewrap; / read-only, only the work dir writable, private /tmp, no network, own pid ns.
- "unshare": `unshare -rmn --pid`; all mounts remounted read-only except the work dir, no network.
- "plain":   a subprocess; neither network nor file-system isolation (the limits and kill still hold).

RLIMIT_NPROC is not enforced for root, so fork bombs are stopped by a cgroup-v1 pids group per command
when root can create one, else by dropping to uid 65534 when the Python interpreter is reachable by
that user, else only by the timeout (the pid namespace of bwrap/unshare takes every child down).
`DockerSandbox` (docker_backend.py) runs the same interface inside an official SWE-bench image and
raises `SandboxUnavailable` quickly when no docker engine answers.

Example:
    with LocalSandbox.create({"a.py": "print(1)"}) as sb:
        sb.run("python a.py").output   # -> "1\n"
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY_ID = 65534
OUTPUT_LIMIT_CHARS = 200_000


class SandboxUnavailable(RuntimeError):
    """The requested backend cannot run here (e.g. no docker engine); the message says what to do."""


@dataclass
class ExecResult:
    returncode: int
    output: str           # stdout and stderr interleaved, truncated to OUTPUT_LIMIT_CHARS
    timed_out: bool
    duration_s: float


def _which_backend() -> str:
    if shutil.which("bwrap") and _probe(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "true"]):
        return "bwrap"
    if shutil.which("unshare") and _probe(["unshare", "-rmn", "--pid", "--fork", "true"]):
        return "unshare"
    return "plain"


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_BACKEND_CACHE: dict[str, str] = {}


def detect_local_backend() -> str:
    """The strongest local isolation available: "bwrap", "unshare" or "plain" (probed once)."""
    if "local" not in _BACKEND_CACHE:
        _BACKEND_CACHE["local"] = _which_backend()
    return _BACKEND_CACHE["local"]


PIDS_CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


def _make_pids_cgroup(max_pids: int) -> Path | None:
    """A fresh cgroup-v1 pids group capped at `max_pids` (fork-bomb stop for root), or None."""
    if os.geteuid() != 0 or not (PIDS_CGROUP_ROOT / "cgroup.procs").exists():
        return None
    try:
        path = Path(tempfile.mkdtemp(prefix="rl-sandbox-", dir=PIDS_CGROUP_ROOT))
        (path / "pids.max").write_text(str(max_pids))
        return path
    except OSError:
        return None


def _remove_pids_cgroup(path: Path | None) -> None:
    if path is None:
        return
    for _ in range(500):
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    try:
        path.rmdir()
    except OSError:
        pass


def _interpreter_public() -> bool:
    """Can uid 65534 reach this Python? (Every parent dir o+x, the binary o+rx.)"""
    real = Path(os.path.realpath(sys.executable))
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o005)


def _limits_preexec(cpu_s: int, memory_bytes: int, file_bytes: int, nproc: int, drop_uid: bool,
                    cgroup: Path | None = None):
    def apply() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if drop_uid:
            os.setgroups([])
            os.setgid(NOBODY_ID)
            os.setuid(NOBODY_ID)
    return apply


def _remount_script(writable_root: str) -> str:
    # Inside a fresh mount namespace: keep the work root writable, turn every other mount read-only.
    return (f'W="{writable_root}"; mount --bind "$W" "$W"; '
            "for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do "
            '[ "$m" = "$W" ] && continue; mount -o remount,bind,ro "$m" 2>/dev/null; done; '
            'cd "$(pwd)"; exec "$@"')


class LocalSandbox:
    """A temp-dir copy of a repo plus an isolated command runner (see module docstring)."""

    def __init__(self, root: Path, backend: str | None = None, timeout_s: float = 60.0,
                 cpu_s: int = 60, memory_bytes: int = 2 << 30, file_bytes: int = 64 << 20,
                 nproc: int = 256, drop_uid: bool | None = None):
        self.root = Path(root)
        self.workdir = self.root / "repo"
        self.tmpdir = self.root / "tmp"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tmpdir.mkdir(exist_ok=True)
        self.backend = backend or detect_local_backend()
        if self.backend not in ("bwrap", "unshare", "plain"):
            raise ValueError(f"unknown local backend {self.backend!r}; valid: bwrap, unshare, plain")
        self.timeout_s, self.cpu_s = timeout_s, cpu_s
        self.memory_bytes, self.file_bytes, self.nproc = memory_bytes, file_bytes, nproc
        if drop_uid is None:
            drop_uid = os.geteuid() == 0 and _interpreter_public()
        self.drop_uid = drop_uid
        if self.drop_uid:
            for p in [self.root, *self.root.rglob("*")]:
                os.chown(p, NOBODY_ID, NOBODY_ID, follow_symlinks=False)

    @classmethod
    def create(cls, files: dict[str, str] | None = None, source_dir: Path | None = None,
               **kwargs) -> "LocalSandbox":
        """A fresh sandbox holding `files` (path -> text) and/or a copy of `source_dir`."""
        root = Path(tempfile.mkdtemp(prefix="rl-sandbox-"))
        os.chmod(root, 0o755)
        repo = root / "repo"
        if source_dir is not None:
            shutil.copytree(source_dir, repo, symlinks=True)
        repo.mkdir(exist_ok=True)
        for rel, text in (files or {}).items():
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return cls(root, **kwargs)

    def _wrap(self, command: str) -> list[str]:
        shell = ["bash", "-c", command]
        wd = str(self.workdir)
        if self.backend == "bwrap":
            return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                    "--tmpfs", "/tmp", "--tmpfs", "/dev/shm", "--bind", str(self.root), str(self.root),
                    "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
                    "--new-session", "--chdir", wd, *shell]
        if self.backend == "unshare":
            script = _remount_script(str(self.root))
            return ["unshare", "-rmn", "--pid", "--fork", "--kill-child", "--mount-proc",
                    "sh", "-c", script, "sandbox", *shell]
        return shell

    def env(self) -> dict[str, str]:
        keep = {k: os.environ[k] for k in ("LANG", "LC_ALL") if k in os.environ}
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")])
        return {**keep, "PATH": path, "HOME": str(self.tmpdir), "TMPDIR": str(self.tmpdir),
                "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                "PAGER": "cat", "GIT_PAGER": "cat",
                "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                "GIT_CONFIG_VALUE_0": "*", "PIP_NO_INPUT": "1"}

    def run(self, command: str, timeout_s: float | None = None) -> ExecResult:
        """Run `bash -c command` in the work dir; kill the process group on timeout."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        start = time.monotonic()
        cgroup = _make_pids_cgroup(self.nproc)
        try:
            return self._run(command, timeout_s, start, cgroup)
        finally:
            _remove_pids_cgroup(cgroup)

    def _run(self, command: str, timeout_s: float, start: float, cgroup: Path | None) -> ExecResult:
        proc = subprocess.Popen(
            self._wrap(command), cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_limits_preexec(self.cpu_s, self.memory_bytes, self.file_bytes,
                                       self.nproc, self.drop_uid, cgroup))
        timed_out = False
        try:
            raw, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            raw = _drain(proc)
        text = raw.decode("utf-8", errors="replace")
        if len(text) > OUTPUT_LIMIT_CHARS:
            text = text[:OUTPUT_LIMIT_CHARS] + "\n<output truncated>\n"
        return ExecResult(proc.returncode if not timed_out else -9, text, timed_out,
                          time.monotonic() - start)

    def write_file(self, rel: str, text: str) -> None:
        """Write a file into the work dir from the host side (harness use, not the agent)."""
        path = self.workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if self.drop_uid:
            os.chown(path, NOBODY_ID, NOBODY_ID)

    def put_tmp(self, name: str, text: str) -> str:
        """Write a harness file (a patch, a script) into the sandbox's TMPDIR; return its path."""
        path = self.tmpdir / name
        path.write_text(text)
        if self.drop_uid:
            os.chown(path, NOBODY_ID, NOBODY_ID)
        return str(path)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _kill_group(proc: subprocess.Popen, patience_s: float = 3.0) -> None:
    # Repeat: members of a fork bomb may fork between one kill and the next. Reaping the leader
    # lets killpg report an empty group (a zombie leader keeps the group alive).
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.poll()
        time.sleep(0.01)


def _drain(proc: subprocess.Popen) -> bytes:
    try:
        raw, _ = proc.communicate(timeout=5)
        return (raw or b"") + b"\n<command timed out>\n"
    except subprocess.TimeoutExpired:
        proc.kill()
        return b"<command timed out>\n"
