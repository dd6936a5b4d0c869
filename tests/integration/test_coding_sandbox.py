"""Sandbox guarantees, per local backend: no network, no writes outside the work dir, and a fork bomb,
a memory bomb and an infinite loop each stopped without harming the host. Docker: clear, fast failure.

A backend that cannot enforce a guarantee (plain subprocess: no namespaces) skips that test with the
reason instead of passing falsely.
"""
import os
import socket
import subprocess
import threading
import time

import pytest

from envs.coding.sandbox import LocalSandbox, SandboxUnavailable, _probe

BACKENDS = {
    "bwrap": ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "true"],
    "unshare": ["unshare", "-rmn", "--pid", "--fork", "true"],
    "plain": ["true"],
}
ISOLATING = {"bwrap", "unshare"}


@pytest.fixture(params=list(BACKENDS))
def sandbox(request):
    if not _probe(BACKENDS[request.param]):
        pytest.skip(f"{request.param} is not available on this machine")
    sb = LocalSandbox.create({"hello.py": "print('hi')\n"}, backend=request.param, timeout_s=20)
    yield sb
    sb.close()


def _need_isolation(sb, what):
    if sb.backend not in ISOLATING:
        pytest.skip(f"backend {sb.backend!r} cannot enforce {what} (no namespaces)")


def _host_processes() -> int:
    return sum(1 for p in os.listdir("/proc") if p.isdigit())


def test_runs_code_in_workdir(sandbox):
    res = sandbox.run("python hello.py && echo data > out.txt && cat out.txt")
    assert res.returncode == 0 and res.output.split() == ["hi", "data"]
    assert (sandbox.workdir / "out.txt").read_text() == "data\n"


def _accept_quietly(server):
    try:
        server.accept()
    except OSError:
        pass


def test_no_network(sandbox):
    _need_isolation(sandbox, "network isolation")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    server.settimeout(8)
    threading.Thread(target=_accept_quietly, args=(server,), daemon=True).start()
    code = (f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=3); "
            "print('CONNECTED')")
    try:
        res = sandbox.run(f'python -c "{code}"; python -c "import socket; '
                          "socket.create_connection(('1.1.1.1', 53), timeout=3); print('CONNECTED')\"")
    finally:
        server.close()
    assert "CONNECTED" not in res.output
    assert "unreachable" in res.output.lower() or "refused" in res.output.lower()


def test_no_writes_outside_workdir(sandbox, tmp_path):
    _need_isolation(sandbox, "file-system isolation")
    target = tmp_path / "escape.txt"
    os.chmod(tmp_path, 0o777)
    parent = sandbox.root.parent / f"escape-{os.getpid()}.txt"
    res = sandbox.run(f"echo x > {target}; echo x > {parent}; echo x > $HOME/../../escape2.txt; "
                      "echo inside > ok.txt && echo WROTE_INSIDE")
    assert "WROTE_INSIDE" in res.output
    assert not target.exists() and not parent.exists()


def test_fork_bomb_is_stopped(sandbox):
    before = _host_processes()
    start = time.monotonic()
    res = sandbox.run(":(){ :|:& };:", timeout_s=2)
    assert time.monotonic() - start < 30
    deadline = time.monotonic() + 10
    while _host_processes() >= before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _host_processes() < before + 20, "fork bomb processes survived the sandbox"
    assert subprocess.run(["true"]).returncode == 0          # the host can still fork
    assert res is not None


def test_memory_bomb_is_stopped(sandbox):
    sandbox.memory_bytes = 512 << 20
    res = sandbox.run("python -c \"a = []\nwhile True: a.append(bytearray(64 << 20))\"", timeout_s=30)
    assert res.returncode != 0 and not res.timed_out
    assert "MemoryError" in res.output


def test_infinite_loop_is_killed(sandbox):
    start = time.monotonic()
    res = sandbox.run("while true; do :; done", timeout_s=2)
    assert res.timed_out and time.monotonic() - start < 10


def test_cpu_limit_stops_busy_loop(sandbox):
    sandbox.cpu_s = 1
    res = sandbox.run("python -c 'while True: pass'", timeout_s=30)
    assert not res.timed_out and res.returncode != 0 and res.duration_s < 15


def test_file_size_limit(sandbox):
    sandbox.file_bytes = 1 << 20
    res = sandbox.run("head -c 5000000 /dev/zero > big.bin; echo rc=$?")
    assert "rc=0" not in res.output
    assert (sandbox.workdir / "big.bin").stat().st_size <= 1 << 20


def test_docker_without_engine_fails_fast():
    from envs.coding.docker_backend import check_docker
    start = time.monotonic()
    try:
        check_docker(timeout_s=10)
    except SandboxUnavailable as exc:
        assert "no docker engine" in str(exc) and "--backend local" in str(exc)
    else:
        pytest.skip("a docker engine answers here; the no-engine path cannot be exercised")
    assert time.monotonic() - start < 15


def test_cli_docker_backend_exits_nonzero(capsys):
    from envs.coding.docker_backend import check_docker
    try:
        check_docker(timeout_s=10)
        pytest.skip("a docker engine answers here")
    except SandboxUnavailable:
        pass
    from rl.tools.swebench import main
    start = time.monotonic()
    rc = main(["--tasks", "generator:1", "--backend", "docker", "--out", "/nonexistent/never"])
    assert rc != 0 and time.monotonic() - start < 15
    assert "no docker engine" in capsys.readouterr().err
