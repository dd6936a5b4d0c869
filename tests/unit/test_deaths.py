"""Deaths explained from Ray's error text and the kernel log (real message shapes of Ray 2.60 and Linux)."""
from rl.run.deaths import explain, oom_kill

RAY_SIGKILL = """The actor died unexpectedly before finishing this task.
\tclass_name: SyncingLearner
\tactor_id: f869911e99417e0da2c54a0601000000
\tpid: 8206
\tname: learner-0
\tnamespace: f3e39f9d
\tip: 10.0.0.3
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker
unexpectedly exits with a connection error code 2. End of file."""
KMSG = ("Out of memory: Killed process 8206 (ray::SyncingLea) total-vm:9041234kB, anon-rss:6291456kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:13000kB oom_score_adj:0\n")
CTOR = """The actor died because of an error raised in its creation task, ray::LearnerActor.__init__()
\tclass_name: LearnerActor
\tpid: 77
\tip: 10.0.0.3
Traceback (most recent call last):
  File "learner.py", line 40, in __init__
ValueError: weight_decay must be >= 0, got -0.1"""


def test_oom_kill_names_the_actor_node_and_memory():
    d = explain(RuntimeError(RAY_SIGKILL), kernel_log="random line\n" + KMSG)
    assert d.cause == "oom" and "6144 MiB" in d.detail
    assert d.actor == "SyncingLearner 'learner-0' (pid 8206, node 10.0.0.3)"
    assert "trainer.microbatch_samples" in d.advice


def test_a_kill_without_oom_is_a_signal():
    d = explain(RuntimeError(RAY_SIGKILL), kernel_log="Out of memory: Killed process 99 (x) anon-rss:10kB\n")
    assert d.cause == "signal" and "no OOM kill" in d.detail


def test_a_constructor_exception_is_named():
    d = explain(RuntimeError(CTOR), kernel_log="")
    assert d.cause == "constructor" and "ValueError: weight_decay must be >= 0" in d.detail
    assert oom_kill(8206, KMSG) == 6144 and oom_kill(1, KMSG) is None
