"""Process limits of one sandboxed command: a child cgroup per command, plus rlimits.

cgroup v2 (the unified hierarchy, at /sys/fs/cgroup or /sys/fs/cgroup/unified on hybrid hosts): a
child of this process's own cgroup. It always gives `cgroup.kill` (every member dies at once, forked,
setsid'ed or not) and `pids.max` / `memory.max` when the parent delegates those controllers (its
`cgroup.subtree_control`; we try to enable them, which the kernel refuses while the parent holds
processes itself). cgroup v1 (hybrid hosts): a child in the `pids` and `memory` hierarchies for the
limits v2 does not give; the kill there is SIGKILL to every member, repeated until the group is
empty (pids.max stops a fork bomb outrunning it).

When no cgroup is writable (an unprivileged caller, a read-only /sys/fs/cgroup), `CommandCgroups`
is empty: the process count is then capped only by RLIMIT_NPROC of the uid the command runs as
(never enforced for root), memory only per process by RLIMIT_AS, and the kill at the timeout only
reaches what the pid namespace (bwrap/unshare) or the process group (plain) holds.
`cgroup_support()` says which of these applies here, in words.

Example:
    cg = CommandCgroups.create(max_pids=256, memory_bytes=2 << 30)
    ...  # child: cg.join_current() in its preexec_fn
    cg.kill_all(); cg.remove()
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import resource
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NOBODY_ID = 65534
PR_SET_NO_NEW_PRIVS = 38
_COUNTER = itertools.count()


def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every mount this process sees."""
    rows = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        pre, post = left.split(), right.split()
        if len(pre) >= 5 and len(post) >= 3:
            rows.append((pre[3], pre[4], post[0], set(post[2].split(","))))
    return rows


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per hierarchy: {"": v2 path, "pids": v1 path, "memory": ...}."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            out[name] = path
    return out


def _hierarchy_dir(mount_root: str, mount_point: str, path: str) -> Path:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root):] or "/"
    return Path(mount_point + path.rstrip("/")) if path != "/" else Path(mount_point)


def _writable(parent: Path) -> bool:
    probe = parent / f"rl-sandbox-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


@dataclass
class CgroupParents:
    """Where this process may create per-command cgroups, and what each gives."""
    v2: Path | None = None                       # parent in the unified hierarchy
    v2_controllers: set[str] = field(default_factory=set)
    v1: dict[str, Path] = field(default_factory=dict)   # "pids"/"memory" -> parent dir


def _enable_v2_controllers(parent: Path) -> set[str]:
    available = set((parent / "cgroup.controllers").read_text().split())
    wanted = {"pids", "memory"} & available
    for name in wanted - set((parent / "cgroup.subtree_control").read_text().split()):
        try:
            (parent / "cgroup.subtree_control").write_text(f"+{name}")
        except OSError:
            pass  # EBUSY: the parent holds processes (no internal processes rule)
    return wanted & set((parent / "cgroup.subtree_control").read_text().split())


def find_cgroup_parents() -> CgroupParents:
    try:
        mounts, own = _mountinfo(), _own_cgroups()
    except OSError:
        return CgroupParents()
    found = CgroupParents()
    for mount_root, point, fstype, opts in mounts:
        if fstype == "cgroup2" and found.v2 is None and "" in own:
            parent = _hierarchy_dir(mount_root, point, own[""])
            if parent.is_dir() and _writable(parent):
                found.v2, found.v2_controllers = parent, _enable_v2_controllers(parent)
        elif fstype == "cgroup":
            for name in ("pids", "memory"):
                if name in opts and name in own and name not in found.v1:
                    parent = _hierarchy_dir(mount_root, point, own[name])
                    if parent.is_dir() and _writable(parent):
                        found.v1[name] = parent
    return found


_PARENTS: list[CgroupParents] = []


def cgroup_parents() -> CgroupParents:
    """`find_cgroup_parents()`, probed once per process."""
    if not _PARENTS:
        _PARENTS.append(find_cgroup_parents())
    return _PARENTS[0]


def cgroup_support() -> dict[str, str]:
    """{"pids" | "memory" | "kill": how this host enforces it} (missing key: not by a cgroup)."""
    p = cgroup_parents()
    out = {name: "cgroup v2" for name in p.v2_controllers}
    out.update({name: "cgroup v1" for name in p.v1 if name not in out})
    if p.v2 is not None:
        out["kill"] = "cgroup v2 cgroup.kill"
    elif "pids" in p.v1:
        out["kill"] = "cgroup v1 pids group (SIGKILL to every member)"
    return out


def describe_missing_cgroups() -> str:
    """'' when pids, memory and kill all have a cgroup; else what happens instead, in words."""
    have = cgroup_support()
    notes = []
    if "pids" not in have:
        notes.append("no pids cgroup: a fork bomb is capped only by RLIMIT_NPROC of the sandbox uid "
                     "(not enforced for root) and the kill at the timeout")
    if "memory" not in have:
        notes.append("no memory cgroup: memory is capped per process by RLIMIT_AS only, not for the "
                     "whole process tree")
    if "kill" not in have:
        notes.append("no cgroup to kill: the timeout kills the pid namespace (bwrap/unshare) or only "
                     "the process group (plain: setsid children survive)")
    return "; ".join(notes)


class CommandCgroups:
    """The cgroups of one command (one dir per hierarchy, all with the same unique name)."""

    def __init__(self, dirs: list[Path], kill_file: Path | None):
        self.dirs, self.kill_file = dirs, kill_file

    @classmethod
    def create(cls, max_pids: int, memory_bytes: int) -> "CommandCgroups":
        parents = cgroup_parents()
        name = f"rl-sandbox-{os.getpid()}-{next(_COUNTER)}-{uuid.uuid4().hex[:6]}"
        dirs, kill_file = [], None
        try:
            if parents.v2 is not None:
                d = parents.v2 / name
                d.mkdir()
                dirs.append(d)
                kill_file = d / "cgroup.kill" if (d / "cgroup.kill").exists() else None
                _write_limits(d, max_pids, memory_bytes, v2=True)
            for ctrl, parent in parents.v1.items():
                if ctrl in parents.v2_controllers:
                    continue
                d = parent / name
                d.mkdir()
                dirs.append(d)
                _write_limits(d, max_pids, memory_bytes, v2=False)
        except OSError:
            cls(dirs, None).remove()
            return cls([], None)
        return cls(dirs, kill_file)

    def join_current(self) -> None:
        """Move the calling process into every dir (run in the child before exec)."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return out

    def kill_all(self, patience_s: float = 5.0) -> bool:
        """SIGKILL every member (cgroup.kill where v2 has it); True when all groups are empty."""
        deadline = time.monotonic() + patience_s
        while True:
            members = self.pids()
            if not members:
                return True
            if self.kill_file is not None:
                try:
                    self.kill_file.write_text("1")
                except OSError:
                    pass
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        break
                    time.sleep(0.01)


def _write_limits(d: Path, max_pids: int, memory_bytes: int, v2: bool) -> None:
    files = ({"pids.max": max_pids, "memory.max": memory_bytes, "memory.swap.max": 0} if v2 else
             {"pids.max": max_pids, "memory.limit_in_bytes": memory_bytes,
              "memory.memsw.limit_in_bytes": memory_bytes})
    for fname, value in files.items():
        if (d / fname).exists():
            try:
                (d / fname).write_text(str(value))
            except OSError:
                if fname.startswith("pids") or fname in ("memory.max", "memory.limit_in_bytes"):
                    raise


@dataclass(frozen=True)
class Rlimits:
    cpu_s: int
    memory_bytes: int     # RLIMIT_AS, per process
    file_bytes: int       # RLIMIT_FSIZE
    nproc: int            # RLIMIT_NPROC (per uid; the kernel ignores it for root)


def _no_new_privs() -> None:
    # Setuid binaries in the bound /usr (su, mount) then cannot raise the command's privileges.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def limits_preexec(limits: Rlimits, cgroups: CommandCgroups, drop_uid: bool):
    """The preexec_fn of the sandbox's Popen: join the cgroups, set rlimits, maybe drop to nobody."""
    def apply() -> None:
        cgroups.join_current()
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        _no_new_privs()
        if drop_uid:
            os.setgroups([])
            os.setgid(NOBODY_ID)
            os.setuid(NOBODY_ID)
    return apply
