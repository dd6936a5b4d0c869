"""Sandboxes that run an agent's shell commands and the test suite of a coding task.

`LocalSandbox`: the repo is copied into a fresh temp dir (`root/repo`, with `root/tmp` as TMPDIR and
HOME). Every command runs with rlimits (CPU seconds, address space, file size, process count) in a
fresh child cgroup (pids.max, memory limit, kill; v2 or v1, see sandbox_limits.py) under the
strongest isolation this machine offers:

- "bwrap":   bubblewrap; a new root holding only the runtime (system dirs, the venv and its Python,
             read-only), the work dir and TMPDIR read-write, private /tmp, /var/tmp and /dev/shm;
             new net, pid, ipc and uts namespaces; run as nobody (see sandbox_view.py).
- "unshare": the same view built by `unshare` + mount + pivot_root (util-linux), for hosts without
             bwrap.
- "plain":   a subprocess in its own process group: no file-system, network or pid isolation. It
             warns (`SandboxWarning`) naming what it does not contain.

`LocalSandbox.uncontained` maps each escape this backend does NOT contain (names in `ESCAPES`) to
the reason; every other escape in `ESCAPES` is contained. The timeout (and the end of every command)
kills the whole tree: the cgroup kill, the pid namespace going down with its init, and the process
group. `DockerSandbox` (docker_backend.py) runs the same interface inside an official SWE-bench
image and raises `SandboxUnavailable` quickly when no docker engine answers.

Example:
    with LocalSandbox.create({"a.py": "print(1)"}) as sb:
        sb.run("python a.py").output   # -> "1\n"
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from envs.coding.sandbox_limits import (NOBODY_ID, CommandCgroups, Rlimits, cgroup_support,
                                        describe_missing_cgroups, limits_preexec)
from envs.coding.sandbox_view import bwrap_argv, host_view, unshare_argv

OUTPUT_LIMIT_CHARS = 200_000
ISOLATING_BACKENDS = ("bwrap", "unshare")
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ESCAPES = {
    "read_host_files": "reading host files outside the work dir (task files, checkout, home)",
    "read_shadow": "reading /etc/shadow",
    "write_outside": "writing outside the work dir",
    "network": "TCP/UDP network connections",
    "unix_socket": "host unix-domain sockets",
    "fork_bomb": "fork bombs",
    "cgroup_escape": "leaving the process-limit cgroup",
    "memory": "huge allocations",
    "setsid_daemon": "setsid / SIGTERM-ignoring children outliving the command",
}


class SandboxUnavailable(RuntimeError):
    """The requested backend cannot run here (e.g. no docker engine); the message says what to do."""


class SandboxWarning(UserWarning):
    """The sandbox cannot contain something (plain backend, no writable cgroup); the text says what."""


@dataclass
class ExecResult:
    returncode: int
    output: str           # stdout and stderr interleaved, truncated to OUTPUT_LIMIT_CHARS
    timed_out: bool
    duration_s: float


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def probe_backend(name: str) -> bool:
    """Does `name` ("bwrap" / "unshare") really build its view and run `true` here?"""
    if name == "plain":
        return True
    if not shutil.which(name):
        return False
    root = Path(tempfile.mkdtemp(prefix="rl-sandbox-probe-"))
    try:
        work = root / "repo"
        work.mkdir()
        (root / "rootfs").mkdir()
        view = host_view([work], root / "etc")
        argv = (bwrap_argv(view, work, ["true"], 1 << 20) if name == "bwrap" else
                unshare_argv(view, work, ["true"], 1 << 20, root / "rootfs"))
        return _probe(argv)
    finally:
        shutil.rmtree(root, ignore_errors=True)


_BACKEND_CACHE: dict[str, str] = {}


def detect_local_backend() -> str:
    """The strongest local isolation available: "bwrap", "unshare" or "plain" (probed once)."""
    if "local" not in _BACKEND_CACHE:
        _BACKEND_CACHE["local"] = next(b for b in ("bwrap", "unshare", "plain") if probe_backend(b))
    return _BACKEND_CACHE["local"]


def _interpreter_public() -> bool:
    """Can uid 65534 reach this Python? (Every parent dir o+x, the binary o+rx.)"""
    real = Path(os.path.realpath(sys.executable))
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o005)


def containment(backend: str, runs_as_root: bool) -> dict[str, str]:
    """{escape: why it is NOT contained} for `backend`; escapes not listed are contained."""
    cg = cgroup_support()
    out: dict[str, str] = {}
    if backend == "plain":
        why = "plain backend: no mount, network or pid namespace"
        out.update({"read_host_files": f"{why}; the command sees every host file its uid can read",
                    "write_outside": f"{why}; the command writes wherever its uid can (e.g. /tmp)",
                    "network": f"{why}; TCP/UDP reach the host and beyond",
                    "unix_socket": f"{why}; host unix sockets (e.g. Ray's) are reachable"})
        if "kill" not in cg or runs_as_root:
            out["setsid_daemon"] = f"{why}; a setsid child leaves the process group" + (
                " and, as root, its cgroup" if "kill" in cg else " and there is no cgroup to kill")
    root_why = ("runs as root: the interpreter is not reachable by uid 65534 and there is no mount "
                "namespace to bind it")
    if runs_as_root:
        out["read_shadow"] = root_why
        out["fork_bomb"] = f"{root_why}; RLIMIT_NPROC does not bind root and root can leave the cgroup"
    if not cg:
        out["cgroup_escape"] = "no writable cgroup here: " + describe_missing_cgroups()
    elif runs_as_root:
        out["cgroup_escape"] = f"{root_why}; root can write itself into another cgroup"
    return out


class LocalSandbox:
    """A temp-dir copy of a repo plus an isolated command runner (see module docstring)."""

    def __init__(self, root: Path, backend: str | None = None, timeout_s: float = 60.0,
                 cpu_s: int = 60, memory_bytes: int = 2 << 30, file_bytes: int = 64 << 20,
                 nproc: int = 256, drop_uid: bool | None = None, extra_ro: tuple[str, ...] = ()):
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
        root_caller = os.geteuid() == 0
        if self.backend in ISOLATING_BACKENDS:
            if drop_uid is False and root_caller:
                raise ValueError("bwrap/unshare always run the command as uid 65534 when called by root")
            drop_uid = root_caller
        elif drop_uid is None:
            drop_uid = root_caller and _interpreter_public()
        self.drop_uid = drop_uid          # the command runs as uid 65534 (the caller is root)
        if self.drop_uid:
            for p in [self.root, *self.root.rglob("*")]:
                os.chown(p, NOBODY_ID, NOBODY_ID, follow_symlinks=False)
        private = self.root / ".sandbox"          # root-only: synthesized /etc, unshare's staging
        (private / "rootfs").mkdir(parents=True, exist_ok=True)
        os.chmod(private, 0o700)
        self._staging = private / "rootfs"
        self._view = host_view([self.workdir, self.tmpdir], private / "etc", tuple(extra_ro))
        self.uncontained = containment(self.backend, root_caller and not self.drop_uid)
        self.last_cgroups: list[Path] = []        # the cgroup dirs of the latest command
        self._warn()

    def _warn(self) -> None:
        notes = [f"{name} ({why})" for name, why in self.uncontained.items()]
        if notes:
            warnings.warn(SandboxWarning(f"sandbox backend {self.backend!r} does not contain: "
                                         + "; ".join(notes)), stacklevel=3)
        missing = describe_missing_cgroups()
        if missing and "cgroup_escape" not in self.uncontained:
            warnings.warn(SandboxWarning(f"sandbox process limits: {missing}"), stacklevel=3)

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
        if self.backend == "bwrap":
            return bwrap_argv(self._view, self.workdir, shell, self.memory_bytes)
        if self.backend == "unshare":
            return unshare_argv(self._view, self.workdir, shell, self.memory_bytes, self._staging)
        return shell

    def env(self) -> dict[str, str]:
        keep = {k: os.environ[k] for k in ("LANG", "LC_ALL") if k in os.environ}
        host_path = os.environ.get("PATH", STANDARD_PATH)
        bins = [os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))]
        path = os.pathsep.join(dict.fromkeys(
            [*bins, STANDARD_PATH if self.backend in ISOLATING_BACKENDS else host_path]))
        return {**keep, "PATH": path, "HOME": str(self.tmpdir), "TMPDIR": str(self.tmpdir),
                "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                "PAGER": "cat", "GIT_PAGER": "cat",
                "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                "GIT_CONFIG_VALUE_0": "*", "PIP_NO_INPUT": "1"}

    def run(self, command: str, timeout_s: float | None = None) -> ExecResult:
        """Run `bash -c command` in the work dir; kill the whole tree on timeout and at the end."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        start = time.monotonic()
        cgroups = CommandCgroups.create(self.nproc, self.memory_bytes)
        self.last_cgroups = list(cgroups.dirs)
        try:
            return self._run(command, timeout_s, start, cgroups)
        finally:
            cgroups.kill_all()
            cgroups.remove()

    def _run(self, command: str, timeout_s: float, start: float, cgroups: CommandCgroups) -> ExecResult:
        limits = Rlimits(self.cpu_s, self.memory_bytes, self.file_bytes, self.nproc)
        drop_here = self.drop_uid and self.backend == "plain"
        proc = subprocess.Popen(
            self._wrap(command), cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=limits_preexec(limits, cgroups, drop_here))
        timed_out = False
        try:
            raw, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            cgroups.kill_all()
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
            for p in [path, *path.parents]:
                if p == self.workdir:
                    break
                os.chown(p, NOBODY_ID, NOBODY_ID)

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
    # lets killpg report an empty group (a zombie leader keeps the group alive). Killing bwrap /
    # unshare also takes their pid namespace down (--die-with-parent / --kill-child).
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
