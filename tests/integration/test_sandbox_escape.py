"""Sandbox escape suite: each escape is tried on every local backend present here.

An escape a backend claims to contain (not in `LocalSandbox.uncontained`) must fail; one it does
not claim must be named, with its reason, in the `SandboxWarning` the sandbox gave when it was made
(the plain fallback), and is not run. After every test the host is unchanged: no process carrying
the test's token in its command line survives (each found is killed by its PID and fails the test),
the command's cgroups are gone, and no file the command tried to write outside its work dir exists.
"""
import functools
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

from envs.coding import sandbox_limits
from envs.coding.sandbox import ESCAPES, LocalSandbox, SandboxWarning, probe_backend

CHECKOUT = Path(__file__).resolve().parents[2]
CHECKOUT_MARKER = "rl-checkout-marker-5d1c"      # this file holds it; the commands never spell it
BACKENDS = ("bwrap", "unshare", "plain")
present = functools.lru_cache(maxsize=None)(probe_backend)


def _token_pids(token: str) -> list[int]:
    """PIDs of live processes whose command line holds `token` (this test's processes only)."""
    needle, found = token.encode(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
        except OSError:
            pass
    return found


@pytest.fixture(params=BACKENDS)
def box(request):
    """(sandbox, token): a fresh sandbox on one backend; the host is checked after the test."""
    if not present(request.param):
        pytest.skip(f"{request.param} is not available on this machine")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb = LocalSandbox.create({"hello.py": "print('hi')\n"}, backend=request.param, timeout_s=10)
    sb.warning_text = " ".join(str(w.message) for w in caught if issubclass(w.category, SandboxWarning))
    token = f"rl-escape-{uuid.uuid4().hex}"
    yield sb, token
    root = sb.root
    sb.close()
    strays = _token_pids(token)
    for pid in strays:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not strays, f"processes outlived the sandbox: {strays}"
    assert not any(d.exists() for d in sb.last_cgroups), "the command's cgroups were left behind"
    assert not root.exists()


def _claims(sb, escape: str) -> bool:
    """True when `sb` claims to contain `escape`; else assert its warning names it and why."""
    assert escape in ESCAPES
    if escape not in sb.uncontained:
        return True
    assert escape in sb.warning_text and sb.uncontained[escape] in sb.warning_text
    return False


def _run(sb, command: str, token: str, timeout_s: float = 10):
    return sb.run(f"{command}\n# {token}", timeout_s=timeout_s)


def test_workdir_runs_unprivileged(box):
    sb, token = box
    res = _run(sb, "python hello.py && id -u && echo data > out.txt && cat out.txt", token)
    assert res.returncode == 0, res.output
    lines = res.output.split()
    assert lines[0] == "hi" and lines[-1] == "data"
    if sb.backend != "plain" or sb.drop_uid:
        assert lines[1] != "0", "the command ran as root"


def test_reads_outside_workdir(box, tmp_path):
    sb, token = box
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text('{"instance_id": "x", "patch": "GOLD-PATCH-%s"}\n' % token)
    home_file = Path.home() / f".{token}"
    if _claims(sb, "read_host_files"):
        home_file.write_text(f"home-secret-{token}\n")
        try:
            res = _run(sb, f"cat {task_file}; cat {Path(__file__).resolve()}; ls -a {CHECKOUT}; "
                           f"ls {CHECKOUT}/runs; cat {home_file}; ls -a {Path.home()}", token)
        finally:
            home_file.unlink()
        for secret in (f"GOLD-PATCH-{token}", CHECKOUT_MARKER, f"home-secret-{token}"):
            assert secret not in res.output, f"the sandbox read {secret!r}"
        listed = set(res.output.split())                 # names `ls` printed (not error messages)
        assert not listed & {"pyproject.toml", ".git", home_file.name}, res.output
    if _claims(sb, "read_shadow"):
        res = _run(sb, "cat /etc/shadow; echo rc=$?", token)
        assert "rc=0" not in res.output
        first = Path("/etc/shadow").read_text().splitlines()[0]
        assert first not in res.output, "the sandbox read /etc/shadow"


def test_writes_outside_workdir(box, tmp_path):
    sb, token = box
    os.chmod(tmp_path, 0o777)
    targets = [tmp_path / "escape", Path.home() / f".{token}", CHECKOUT / f".{token}",
               sb.root.parent / token, Path("/var/tmp") / token, Path("/dev/shm") / token,
               sb.root / ".sandbox" / token]
    if not _claims(sb, "write_outside"):
        return
    try:
        writes = "; ".join(f"echo x > {t}" for t in targets)
        res = _run(sb, f"{writes}; echo inside > ok.txt && echo WROTE_INSIDE", token)
        assert "WROTE_INSIDE" in res.output and (sb.workdir / "ok.txt").exists()
        escaped = [str(t) for t in targets if t.exists()]
    finally:
        for t in targets:
            if t.exists():
                t.unlink()
    assert not escaped, f"the sandbox wrote outside its work dir: {escaped}"


class _Listener:
    """A host socket that records every connection or datagram it gets, on its own thread."""

    def __init__(self, family: int, kind: int, address):
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.hits: list[str] = []
        self.stream = kind == socket.SOCK_STREAM
        if self.stream:
            self.sock.listen(4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if self.stream:
                    conn, _ = self.sock.accept()
                    conn.close()
                    self.hits.append("connection")
                else:
                    self.hits.append(self.sock.recv(64).decode(errors="replace"))
            except (socket.timeout, OSError):
                continue

    def close(self) -> None:
        time.sleep(0.3)            # a datagram in flight lands before we stop
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


NET_PROBE = r"""
import socket, sys
port_tcp, port_udp = int(sys.argv[1]), int(sys.argv[2])
try:
    socket.create_connection(("127.0.0.1", port_tcp), timeout=2); print("TCP_CONNECTED")
except OSError as exc:
    print("TCP_BLOCKED", exc)
for _ in range(3):
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hi", ("127.0.0.1", port_udp))
        print("UDP_SENT")
    except OSError as exc:
        print("UDP_BLOCKED", exc)
"""


def test_no_network(box):
    sb, token = box
    if not _claims(sb, "network"):
        return
    tcp = _Listener(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
    udp = _Listener(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0))
    try:
        sb.put_tmp("net.py", NET_PROBE)
        res = _run(sb, f"python {sb.tmpdir}/net.py {tcp.sock.getsockname()[1]} "
                       f"{udp.sock.getsockname()[1]}", token)
    finally:
        tcp.close()
        udp.close()
    assert "TCP_BLOCKED" in res.output and "TCP_CONNECTED" not in res.output, res.output
    assert not tcp.hits and not udp.hits, (tcp.hits, udp.hits)


UNIX_PROBE = r"""
import socket, sys
for address in (sys.argv[1], "\0" + sys.argv[2]):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2); s.connect(address)
        print("UNIX_CONNECTED", repr(address))
    except OSError as exc:
        print("UNIX_BLOCKED", exc)
"""


def test_no_host_unix_sockets(box, tmp_path):
    sb, token = box
    if not _claims(sb, "unix_socket"):
        return
    sock_dir = tmp_path / "s"
    sock_dir.mkdir(mode=0o777)
    os.chmod(tmp_path, 0o755)
    path = str(sock_dir / "h.sock")
    by_path = _Listener(socket.AF_UNIX, socket.SOCK_STREAM, path)
    os.chmod(path, 0o777)
    abstract = _Listener(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + token)
    try:
        sb.put_tmp("unix.py", UNIX_PROBE)
        res = _run(sb, f"python {sb.tmpdir}/unix.py {path} {token}; ls /run /var/run", token)
    finally:
        by_path.close()
        abstract.close()
    assert res.output.count("UNIX_BLOCKED") == 2 and "UNIX_CONNECTED" not in res.output, res.output
    assert not by_path.hits and not abstract.hits


def _fork_bomb(sb, token: str) -> tuple:
    """Run a fork bomb (its shell stays up until the 2 s timeout); return (result, peak number of
    its processes seen from the host)."""
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(
        res=_run(sb, ":(){ :|:& };:; sleep 300", token, timeout_s=2)))
    runner.start()
    peak = 0
    while runner.is_alive():
        peak = max(peak, len(_token_pids(token)))
        time.sleep(0.05)
    runner.join()
    return out["res"], peak


def test_fork_bomb(box):
    sb, token = box
    if not _claims(sb, "fork_bomb"):
        return
    sb.nproc = 64
    res, peak = _fork_bomb(sb, token)
    assert res.timed_out and res.duration_s < 20
    assert peak <= sb.nproc + 8, f"the bomb reached {peak} processes"
    assert subprocess.run(["true"]).returncode == 0          # the host can still fork


FORK_PROBE = r"""
import os, time
started = 0
for _ in range(80):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    started += 1
print("STARTED=%d" % started)
"""


def test_cannot_leave_cgroup(box):
    sb, token = box
    if not _claims(sb, "cgroup_escape"):
        return
    sb.nproc = 40
    sb.put_tmp("fork.py", FORK_PROBE)
    escape = ("for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs "
              "/sys/fs/cgroup/*/tasks; do echo 0 > $f 2>/dev/null && echo MOVED $f; done; "
              "mkdir -p $TMPDIR/cg && mount -t cgroup2 none $TMPDIR/cg 2>/dev/null && echo MOUNTED; "
              f"cat /proc/self/cgroup; python {sb.tmpdir}/fork.py")
    res = _run(sb, escape, token)
    assert "MOVED" not in res.output and "MOUNTED" not in res.output, res.output
    names = {d.name for d in sb.last_cgroups}
    assert len(names) == 1
    name = names.pop()
    inside = [line for line in res.output.splitlines() if line.endswith("/" + name)]
    assert len(inside) == len(sb.last_cgroups), res.output      # still in every hierarchy's group
    started = int(res.output.split("STARTED=")[1].split()[0])
    assert started < 40, f"forked past the process cap: {started}"


def test_huge_allocation(box):
    sb, token = box
    if not _claims(sb, "memory"):
        return
    res = _run(sb, f"python -c 'b = bytearray(30 << 30); print(\"ALLOCATED\")' {token}", token)
    assert res.returncode != 0 and not res.timed_out
    assert "MemoryError" in res.output and "ALLOCATED" not in res.output


DAEMON = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(300)")


def test_setsid_daemon_is_killed(box):
    sb, token = box
    if not _claims(sb, "setsid_daemon"):
        return
    spawn = f'setsid {sys.executable} -c "{DAEMON}" {token} </dev/null >/dev/null 2>&1 &'
    start = time.monotonic()
    res = _run(sb, f"{spawn} sleep 1; echo STARTED; sleep 300", token, timeout_s=2)
    assert res.timed_out and "STARTED" in res.output and time.monotonic() - start < 15
    assert not _token_pids(token), "a setsid child outlived the timeout"
    res = _run(sb, f"{spawn} sleep 1; echo BYE", token)          # the command ends, the daemon not
    assert not res.timed_out and "BYE" in res.output
    deadline = time.monotonic() + 5
    while _token_pids(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _token_pids(token), "a setsid child outlived its command"


def test_plain_fallback_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb = LocalSandbox.create(backend="plain")
    sb.close()
    text = " ".join(str(w.message) for w in caught if issubclass(w.category, SandboxWarning))
    for escape in ("read_host_files", "write_outside", "network", "unix_socket"):
        assert escape in sb.uncontained and escape in text
    assert "plain" in text


def test_without_a_writable_cgroup(monkeypatch):
    """No cgroup to write (as for an unprivileged caller): the sandbox says so, and a fork bomb and
    a setsid daemon are still stopped by RLIMIT_NPROC of uid 65534 and the pid namespace."""
    backend = next((b for b in ("bwrap", "unshare") if present(b)), None)
    if backend is None:
        pytest.skip("neither bwrap nor unshare works here")
    monkeypatch.setattr(sandbox_limits, "_PARENTS", [sandbox_limits.CgroupParents()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb = LocalSandbox.create(backend=backend)
    text = " ".join(str(w.message) for w in caught if issubclass(w.category, SandboxWarning))
    assert "no pids cgroup" in text and "no memory cgroup" in text
    assert set(sb.uncontained) == {"cgroup_escape"}
    token = f"rl-escape-{uuid.uuid4().hex}"
    try:
        sb.nproc = 64
        res, peak = _fork_bomb(sb, token)
        assert res.timed_out and not sb.last_cgroups and peak <= sb.nproc + 8
        spawn = f'setsid {sys.executable} -c "{DAEMON}" {token} </dev/null >/dev/null 2>&1 &'
        res = _run(sb, f"{spawn} sleep 1; echo STARTED; sleep 300", token, timeout_s=2)
        assert res.timed_out and "STARTED" in res.output
        deadline = time.monotonic() + 5
        while _token_pids(token) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sb.close()
        strays = _token_pids(token)
        for pid in strays:
            os.kill(pid, 9)
    assert not strays, f"processes outlived the sandbox: {strays}"
