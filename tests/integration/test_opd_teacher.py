"""On-policy distillation end to end on local Ray with tiny models and a real teacher actor
(rl/workers/teacher.py): a teacher with the student's own weights gives reverse KL ~0; a sharper,
differently seeded teacher gives a large one, the student trains on it (also with k = 1 + IcePop), and
the teacher actor is gone after the run. Start-up refuses a teacher with another vocabulary, or none."""
import time
from pathlib import Path

import pytest
import torch

from rl.cli import main
from rl.config import ConfigError, load_config
from rl.run.logging import read_metrics
from rl.startup import check_startup
from rl.workers.models import load_model, load_tokenizer, policy_folder

ROOT = Path(__file__).parent.parent.parent


def opd_cfg(tmp_path, name, teacher, *overrides):
    return load_config(ROOT / "recipes" / "tiny.yaml", [
        f"run.output_dir={tmp_path}", f"run.name={name}", "run.progress_bar=false", "eval.before_after=false",
        "resources.ready_timeout_s=600",  # a loaded machine can take minutes to start an actor
        "algorithm.name=opd", f"opd.teacher={teacher}", *overrides])


@pytest.fixture(scope="module")
def sharp_teacher(tmp_path_factory):
    """A tiny Llama of another seed with its (tied) embeddings x 30: peaked next-token distributions, far
    from the near-uniform random student."""
    out = tmp_path_factory.mktemp("teacher") / "sharp"
    model = load_model("tiny-llama", seed=1)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30.0)
    model.save_pretrained(out)
    load_tokenizer("tiny-llama").save_pretrained(out)
    return str(out)


def test_opd_same_teacher_zero_kl_sharp_teacher_trains(ray_local, tmp_path, sharp_teacher):
    from rl.drivers.opd import train_opd
    ray = ray_local
    free_cpus = ray.available_resources().get("CPU", 0)
    same = opd_cfg(tmp_path, "same", policy_folder("tiny-llama", seed=0), "trainer.steps=1")
    check_startup(same)
    train_opd(same)
    row = read_metrics(tmp_path / "same" / "metrics.jsonl")[0]
    # the engine sampled with the teacher's very weights: teacher and student log-probs agree per token
    assert abs(row["opd/reverse_kl"]) < 1e-3 and abs(row["opd/advantage_mean"]) < 1e-3, row
    assert row["opd/teacher_logprob"] == pytest.approx(row["opd/student_logprob"], abs=1e-3)

    sharp = opd_cfg(tmp_path, "sharp", sharp_teacher, "trainer.steps=2", "trainer.max_staleness_steps=1",
                    "algorithm.rollout_correction=icepop", "algorithm.rollout_correction_params.low=0.5",
                    "algorithm.rollout_correction_params.high=5.0")
    check_startup(sharp)
    train_opd(sharp)
    rows = read_metrics(tmp_path / "sharp" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:  # the teacher finds the student's tokens far less likely than the student does
        assert r["opd/reverse_kl"] > 1.0 and r["opd/teacher_logprob"] < r["opd/student_logprob"] - 1.0, r
        assert r["advantage/mean"] == pytest.approx(-r["opd/reverse_kl"], rel=1e-4)
        assert r["grad_norm"] > 0 and torch.isfinite(torch.tensor(r["loss"])) and r["time/teacher_s"] > 0
    assert rows[-1]["staleness/max"] == 1  # batch 1 was drawn with the first weights
    trained = torch.load(sorted((tmp_path / "sharp" / "checkpoints").glob("step-*"))[-1] / "learner.pt",
                         weights_only=False)["model"]
    init = load_model("tiny-llama", seed=0).state_dict()
    assert sum(not torch.equal(trained[k], init[k]) for k in init) > len(init) // 2
    # the teacher's CPU share comes back: its actor was killed by handle when the run finished
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < free_cpus - 1e-6 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(free_cpus)


def test_startup_refuses_another_vocabulary_or_no_teacher(tmp_path, capsys):
    tok = load_tokenizer("tiny-llama")
    tok.add_tokens(["<not-in-the-student>"])
    other = tmp_path / "other-vocab"
    load_model("tiny-llama", seed=1).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(ConfigError, match=r"^opd\.teacher: .*vocabulary \(\d+ pieces\) differs"):
        check_startup(opd_cfg(tmp_path, "x", other))
    with pytest.raises(ConfigError, match=r"^opd\.teacher: algorithm\.name: opd needs a teacher"):
        load_config(ROOT / "recipes" / "tiny.yaml", ["algorithm.name=opd"])
    missing = str(tmp_path / "nowhere")
    code = main(["train", str(ROOT / "recipes" / "opd_smollm2.yaml"), f"opd.teacher={missing}", "--print-config"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"opd.teacher: {missing!r} does not exist; make it with `make teacher`")
