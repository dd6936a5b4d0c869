"""Deaths explained: when an actor of a run dies, say which actor, on which node, why (the kernel's OOM
killer with the memory at death, a signal, or a Python exception in its constructor) and what to change.

Ray's ActorDiedError carries the actor's class, name, pid and node ip, and the worker's exit type; the
kernel log (/dev/kmsg, readable on Linux as root or with CAP_SYSLOG) says whether the OOM killer took
that pid and how much memory it held. A constructor that raised is deterministic: it is a start-up
error (exit 2), not restarted.

Example: explain(err) -> Death(actor="SyncingLearner (pid 812, node 10.0.0.3)", cause="oom", ...)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

_FIELD = {k: re.compile(rf"^\s*{k}: (\S+)", re.M) for k in ("class_name", "name", "pid", "ip")}
_EXIT_TYPE = re.compile(r"Worker exit type: (\w+)")
_OOM = re.compile(r"Killed process (\d+) \(([^)]*)\).*?anon-rss:(\d+)kB")


@dataclass
class Death:
    actor: str  # "SyncingLearner 'learner-0' (pid 812, node 10.0.0.3)"
    cause: str  # oom | signal | constructor | node | unknown
    detail: str  # one sentence: what happened
    advice: str  # what to change

    def message(self) -> str:
        return f"{self.actor} died: {self.detail}. {self.advice}".strip()


def explain(error: BaseException, kernel_log: str | None = None) -> Death:
    """The death behind a RayActorError (its message), with the kernel log read if not given."""
    text = str(error)
    fields = {k: (m.group(1) if (m := rx.search(text)) else None) for k, rx in _FIELD.items()}
    pid = fields["pid"]
    who = fields["class_name"] or "an actor"
    if fields["name"]:
        who += f" {fields['name']!r}"
    where = ", ".join(x for x in (f"pid {pid}" if pid else "", f"node {fields['ip']}" if fields["ip"] else "") if x)
    actor = f"{who} ({where})" if where else who
    if "creation task" in text or "error raised in its creation" in text:
        last = [ln for ln in text.splitlines() if re.match(r"^\w*(Error|Exception)\b", ln.strip())]
        return Death(actor, "constructor", f"its constructor raised ({last[-1].strip() if last else 'see the traceback'})",
                     "Its arguments come from the recipe: fix the value the exception names (not restarted).")
    if pid is not None:
        oom = oom_kill(pid, read_kernel_log() if kernel_log is None else kernel_log)
        if oom is not None:
            return Death(actor, "oom", f"the kernel's OOM killer stopped it holding {oom} MiB resident",
                         "Use less memory per process: lower trainer.microbatch_samples, shard the learner "
                         "(resources.learner.num_actors), trainer.gradient_checkpointing: true, or with colocation "
                         "placement.offload_optimizer / offload_params.")
    exit_type = (m.group(1) if (m := _EXIT_TYPE.search(text)) else "")
    if "its node has died" in text or "node died" in text.lower():
        return Death(actor, "node", "its node left the cluster", "Check that node's health; the run resumes elsewhere.")
    if exit_type in ("SYSTEM_ERROR", "UNEXPECTED_SYSTEM_EXIT") or "connection error" in text:
        return Death(actor, "signal", "its process ended without a Python exception (a signal: SIGKILL from outside, "
                     "SIGSEGV in native code); the kernel log shows no OOM kill of it",
                     "If something outside the run killed it, nothing to change; a crash in native code needs its "
                     "core dump or the worker log under the Ray session's logs/ folder.")
    return Death(actor, "unknown", f"Ray reports: {text.splitlines()[0][:200] if text else type(error).__name__}", "")


def oom_kill(pid: str | int, kernel_log: str) -> int | None:
    """MiB resident (anon-rss) of pid when the OOM killer took it, from kernel log text; None if it did not."""
    for m in _OOM.finditer(kernel_log):
        if m.group(1) == str(pid):
            return int(m.group(3)) // 1024
    return None


def read_kernel_log(max_bytes: int = 4 << 20) -> str:
    """The kernel ring buffer (/dev/kmsg, non-blocking); '' where it cannot be read."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    out, size = [], 0
    try:
        while size < max_bytes:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while reading; go on
                continue
            out.append(rec.decode(errors="replace").split(";", 1)[-1])
            size += len(rec)
    finally:
        os.close(fd)
    return "".join(out)
