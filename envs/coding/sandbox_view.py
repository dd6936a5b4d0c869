"""What of the host a sandboxed command sees, and the argv that builds that view (bwrap / unshare).

The view (`HostView`): the system binary and library dirs (/usr, /bin, /lib*, as symlinks where the
host has them so), the pieces of /etc the dynamic linker and Python read (ld.so.cache, ld.so.conf*,
alternatives, localtime, python3*), a synthesized /etc/passwd, /etc/group and /etc/hosts naming only
root and nobody, and the interpreter the task runs with (the venv and its base Python, bound
read-only at their own paths, so a venv under /root works: the parents are fresh dirs inside). All
read-only, nosuid. The task's work dir and TMPDIR are bound read-write; /tmp, /var/tmp and /dev/shm
are fresh tmpfs; /dev holds only null, zero, full, random, urandom and tty; /proc is the sandbox's
own pid namespace. Nothing else exists inside: no home, no project checkout, no run dirs, no task
files, no /run or /var/run (no host unix sockets), no /sys (no cgroup files to write), no
/etc/shadow. The network namespace is new and empty (loopback down, abstract unix sockets private).

Running as root, the command drops to uid/gid 65534 with no capabilities and no_new_privs
(`setpriv`, else a small Python trampoline) after the mounts are in place. Running as another user,
bwrap/unshare map that user (a user namespace) and drop every capability.

Example:
    view = host_view([workdir, tmpdir])
    argv = bwrap_argv(view, workdir, ["bash", "-c", "ls /"], tmpfs_bytes=1 << 30)
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

NOBODY_ID = 65534
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PRIVATE_TMPFS = ("/tmp", "/var/tmp")

# Used only when setpriv is missing: drop to nobody, set no_new_privs, exec the command.
_DROP_SOURCE = (
    "import ctypes, os, sys\n"
    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n")


@dataclass(frozen=True)
class HostView:
    symlinks: tuple[tuple[str, str], ...]    # (target, path): e.g. ("usr/lib", "/lib")
    ro_paths: tuple[str, ...]                # host paths bound read-only at the same path
    rw_paths: tuple[str, ...]                # host paths bound read-write at the same path
    etc_dir: str                             # host dir holding the synthesized passwd/group/hosts


def _covered(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def runtime_dirs() -> list[str]:
    """The interpreter's own dirs (venv, base Python) that the system dirs do not already hold."""
    real_exe = os.path.realpath(sys.executable)
    cands = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(real_exe))]
    system = [os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d)] + list(SYSTEM_DIRS)
    out: list[str] = []
    for cand in sorted({os.path.realpath(c) for c in cands if c}, key=len):
        if cand != "/" and not _covered(cand, system) and not _covered(cand, out):
            out.append(cand)
    return out


def _etc_entries() -> list[str]:
    names = list(ETC_ENTRIES) + sorted(n for n in os.listdir("/etc") if n.startswith("python3"))
    return [f"/etc/{n}" for n in names if os.path.lexists(f"/etc/{n}")]


def write_etc(etc_dir: Path) -> None:
    """passwd/group/hosts naming only root, nobody and the caller: what `id`, git, pip look up."""
    uid, gid = os.getuid(), os.getgid()
    users = {uid: "sandbox", 0: "root", NOBODY_ID: "nobody"}
    groups = {gid: "sandbox", 0: "root", NOBODY_ID: "nogroup"}
    etc_dir.mkdir(parents=True, exist_ok=True)
    (etc_dir / "passwd").write_text("".join(
        f"{name}:x:{u}:{u if u != uid else gid}:{name}:/nonexistent:/usr/sbin/nologin\n"
        for u, name in sorted(users.items())))
    (etc_dir / "group").write_text("".join(f"{name}:x:{g}:\n" for g, name in sorted(groups.items())))
    (etc_dir / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")


def host_view(rw_paths: list[Path], etc_dir: Path, extra_ro: tuple[str, ...] = ()) -> HostView:
    """The view for a command whose writable dirs are `rw_paths` (see the module docstring)."""
    write_etc(etc_dir)
    symlinks, ro = [], []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            symlinks.append((os.readlink(d), d))
        elif os.path.isdir(d):
            ro.append(d)
    ro += [p for p in runtime_dirs() + list(extra_ro) if not _covered(p, ro)]
    ro += _etc_entries()
    return HostView(tuple(symlinks), tuple(ro), tuple(str(p) for p in rw_paths), str(etc_dir))


def _parents(paths, skip: tuple[str, ...]) -> list[str]:
    """Every proper ancestor dir of `paths` (shallowest first), bar "/" and the `skip` mounts."""
    out: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path.rstrip("/"))
        while parent not in ("/", "") and parent not in skip:
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out, key=lambda p: (p.count("/"), p))


def drop_argv() -> list[str]:
    """Prefix that runs the command unprivileged once the sandbox is built (root callers)."""
    if os.geteuid() != 0:
        return []           # bwrap/unshare map the caller's own uid and drop capabilities
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY_ID}", f"--regid={NOBODY_ID}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return [sys.executable, "-I", "-S", "-c", _DROP_SOURCE]


def bwrap_argv(view: HostView, workdir: Path, command: list[str], tmpfs_bytes: int) -> list[str]:
    argv = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        argv += ["--unshare-user", "--cap-drop", "ALL"]
    for target, path in view.symlinks:
        argv += ["--symlink", target, path]
    etc = [f"/etc/{name}" for name in ("passwd", "group", "hosts")]
    for path in _parents([*view.ro_paths, *etc], skip=PRIVATE_TMPFS):
        argv += ["--perms", "0755", "--dir", path]     # bwrap would make them 0700: nobody locked out
    for path in view.ro_paths:
        argv += ["--ro-bind", path, path]
    for path in etc:
        argv += ["--ro-bind", f"{view.etc_dir}/{os.path.basename(path)}", path]
    argv += ["--dev", "/dev", "--proc", "/proc"]
    for path in (*PRIVATE_TMPFS, "/dev/shm"):
        argv += ["--size", str(tmpfs_bytes), "--perms", "1777", "--tmpfs", path]
    for path in _parents(view.rw_paths, skip=PRIVATE_TMPFS):
        argv += ["--perms", "0755", "--dir", path]
    for path in view.rw_paths:
        argv += ["--bind", path, path]
    return argv + ["--chdir", str(workdir), *drop_argv(), *command]


_UNSHARE_PRELUDE = r"""set -e
R=$1; shift
O=nosuid,nodev
ro() { mkdir -p "$R$1"; mount --bind "$1" "$R$1"; mount -o remount,bind,ro,$O "$R$1"; }
rofile() { mkdir -p "$(dirname "$R$2")"; touch "$R$2"; mount --bind "$1" "$R$2"; mount -o remount,bind,ro,$O "$R$2"; }
rw() { mkdir -p "$R$1"; mount --bind "$1" "$R$1"; mount -o remount,bind,$O "$R$1"; }
tmp() { mkdir -p "$R$1"; mount -t tmpfs -o "mode=1777,size=$SIZE,$O" tmpfs "$R$1"; }
mount -t tmpfs -o mode=0755,$O rl-sandbox "$R"
"""

_UNSHARE_FINALE = r"""mkdir -p "$R/dev" "$R/proc"
mount -t tmpfs -o mode=0755,nosuid rl-sandbox-dev "$R/dev"
for d in DEVICES; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
tmp /dev/shm
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
cd "$R"; mkdir .old-root; pivot_root . .old-root; umount -l /.old-root; rmdir /.old-root
mount -o remount,ro,bind,$O /
cd "$WORKDIR"
exec "$@"
"""


def unshare_argv(view: HostView, workdir: Path, command: list[str], tmpfs_bytes: int,
                 staging: Path) -> list[str]:
    """`unshare` into new mount/net/pid/ipc/uts namespaces, build the view on a tmpfs at `staging`,
    pivot_root into it and exec the command (a user namespace too when not root)."""
    q = shlex.quote
    lines = [f"SIZE={tmpfs_bytes}", f"WORKDIR={q(str(workdir))}"]
    lines += [f"ln -s {q(t)} \"$R\"{q(p)}" for t, p in view.symlinks]
    lines += [f"tmp {q(p)}" for p in PRIVATE_TMPFS]
    lines += [f"ro {q(p)}" if os.path.isdir(p) else f"rofile {q(p)} {q(p)}" for p in view.ro_paths]
    lines += [f"rofile {q(view.etc_dir + '/' + n)} /etc/{n}" for n in ("passwd", "group", "hosts")]
    lines += [f"rw {q(p)}" for p in sorted(view.rw_paths, key=len)]
    script = (_UNSHARE_PRELUDE + "\n".join(lines) + "\n"
              + _UNSHARE_FINALE.replace("DEVICES", " ".join(DEVICES)))
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    drop = drop_argv() or ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                           "--"]
    return ["unshare", *user, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
            "--kill-child", "--propagation", "private", "sh", "-c", script, "rl-sandbox",
            str(staging), *drop, *command]
