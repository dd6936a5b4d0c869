"""Hundreds of malformed recipes and overrides, generated from the config tree itself: typos of every key,
wrong types, out-of-range and non-finite values, huge values, contradictions, bad registry names and
references, bad files and bad overrides. Each one must exit 2 with one `rl:` line on stderr that names
what is wrong, and no traceback: under `--print-config`, and at run start for a sample of semantic cases
(the checks run before Ray or any actor starts). The CLI runs in-process (rl.cli.main), the same code path
as the console script; three cases also run as real subprocesses."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from rl.cli import main
from rl.config import Config
from rl.config_ranges import RANGES, parse_interval

ROOT = Path(__file__).parent.parent.parent
TINY = str(ROOT / "recipes" / "tiny.yaml")
OPTIONAL_SECTIONS = ("model.lora.", "rewards.*.judge.")  # None by default: a lone key builds a partial section


def _leaves(cls, prefix=""):
    """(dotted key with list items as '0', type) for every leaf of the config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, key + ".")
        elif typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
            yield from _leaves(args[0], key + ".0.")
        elif any(dataclasses.is_dataclass(a) for a in args):
            yield from _leaves(next(a for a in args if dataclasses.is_dataclass(a)), key + ".")
        else:
            yield key, tp


LEAVES = list(_leaves(Config))


def _typo(key: str) -> str:
    head, _, last = key.rpartition(".")
    bad = last[1:] + last[0] if len(last) > 3 else last + "x"  # rotated: close enough for did-you-mean
    return f"{head}.{bad}" if head else bad


def _scalar(tp) -> type | None:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if len(args) == 1 else tp
    return base if base in (int, float, bool) else None


def _cases() -> list[tuple[str, list[str], str]]:
    """(case id, argv after `rl train`, substring the error line must hold)."""
    cases = []
    for key, tp in LEAVES:  # typos of every key
        cases.append((f"typo:{key}", [TINY, f"{_typo(key)}=1"], f"unknown key '{_typo(key)}'"))
    for key, tp in LEAVES:  # wrong types
        kind = _scalar(tp)
        if kind in (int, float):
            cases.append((f"type:{key}", [TINY, f"{key}=abc"], key))
        elif kind is bool:
            cases.append((f"type:{key}", [TINY, f"{key}=maybe"], key))
        if kind is float:  # non-finite (1e400 parses as inf)
            for v in (".nan", "1e400"):
                cases.append((f"nonfinite:{key}={v}", [TINY, f"{key}={v}"], key))
    for pattern, interval in RANGES.items():  # out of range on both sides, and huge
        if pattern.startswith(OPTIONAL_SECTIONS) or pattern.count("*") > 1 or pattern.endswith(".*"):
            continue
        key = pattern.replace("resources.*", "resources.learner").replace("*", "0")
        lo, hi, lo_closed, _ = parse_interval(interval)
        tp = dict(LEAVES).get(key)
        is_int = _scalar(tp) is int
        below = lo - 1 if lo_closed else lo
        above = hi * 10 + 1
        for v in (below, above):
            text = str(int(v)) if is_int else repr(float(v))
            cases.append((f"range:{key}={text}", [TINY, f"{key}={text}"], key))
    for key in ("algorithm.advantage", "algorithm.loss_aggregation", "algorithm.kl_estimator", "algorithm.policy_loss",
                "allocation.name", "rollout.engine", "algorithm.name"):
        cases.append((f"registry:{key}", [TINY, f"{key}=nonexistent_name"], key))
    cases += [(f"semantic:{i}", [TINY, *ov], want) for i, (ov, want) in enumerate(SEMANTIC)]
    cases += [(f"override:{i}", [TINY, ov], want) for i, (ov, want) in enumerate(BAD_OVERRIDES)]
    return cases


SEMANTIC = [  # also run at run start (test_semantic_cases_fail_at_run_start)
    (["rewards.0.fn=no_such_module:fn"], "rewards.0.fn"),
    (["rewards.0.fn=/no/such/file.py:fn"], "rewards.0.fn"),
    (["rewards.0.fn=envs.rewards:no_such_fn"], "rewards.0.fn"),
    (["rewards.0.fn=not_a_builtin"], "rewards.0.fn"),
    (["model.name=./no/such/folder"], "model.name"),
    (["model.name=not a model"], "model.name"),
    (["critic.model=./missing_critic"], "critic.model"),
    (["task.name=dataset"], "task.path"),
    (["task.name=dataset", "task.path=missing.jsonl"], "task.path"),
    (["task.name=dataset", "task.path=./missing_folder"], "task.path"),
    (["task.name=nonexistent_task"], "task.name"),
    (["allocation.name=knapsack", "allocation.min_samples_per_prompt=9", "allocation.max_samples_per_prompt=4"],
     "allocation.min_samples_per_prompt"),
    (["allocation.name=knapsack", "allocation.max_samples_per_prompt=3"], "rollout.samples_per_prompt"),
    (["allocation.name=curriculum", "allocation.schedule=linear", "allocation.budget_end_tokens=500"],
     "allocation.budget_end_tokens"),
    (["trainer.microbatch_samples=32"], "trainer.microbatch_samples"),
    (["allocation.v0_predictor=missing_v0.pt", "allocation.name=knapsack"], "allocation.v0_predictor"),
    (["trainer.max_grad_norm=-1"], "trainer.max_grad_norm"),
    (["trainer.weight_decay=-0.1"], "trainer.weight_decay"),
    (["task.train_size=0"], "task.train_size"),
    (["eval.num_prompts=-5"], "eval.num_prompts"),
    (["rewards.0.timeout_s=0"], "rewards.0.timeout_s"),
    (["sync.transport=reshard", "rollout.engine=vllm"], "sync.transport"),
]

BAD_OVERRIDES = [
    ("trainer.steps", "trainer.steps"),  # no '='
    ("=5", "override"),
    ("trainer..steps=1", "trainer..steps"),
    ("rewards.5.fn=exact_match", "rewards"),
    ("run.name=!!python/object/apply:os.system [ls]", "YAML tags"),
    ("trainer.steps.x=1", "trainer.steps"),
    ("rewards.x.fn=exact_match", "rewards"),
]

CASES = _cases()


def _run_cli(argv, capsys) -> tuple[int, list[str], str]:
    code = main(["train", *argv])
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.startswith("rl:")], err


def test_there_are_at_least_300_cases():
    assert len(CASES) >= 300, len(CASES)


@pytest.mark.parametrize("argv, want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_print_config_exits_2_with_one_line_naming_the_key(argv, want, capsys):
    code, lines, err = _run_cli([*argv, "--print-config"], capsys)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert want in lines[0], lines[0]


def _bad_files(tmp: Path) -> list[tuple[Path, str]]:
    (tmp / "empty.yaml").write_text("")
    (tmp / "dup.yaml").write_text("trainer: {steps: 3}\nrun: {seed: 1}\ntrainer: {lr: 0.1}\n")
    (tmp / "syntax.yaml").write_text("trainer:\n  steps: [1, 2\nrun: x\n")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00trainer")
    (tmp / "list.yaml").write_text("- trainer\n- run\n")
    (tmp / "folder.yaml").mkdir()
    (tmp / "unknown_section.yaml").write_text("trainr: {steps: 3}\n")
    (tmp / "section_not_mapping.yaml").write_text("trainer: 5\n")
    return [(tmp / "empty.yaml", "empty"), (tmp / "dup.yaml", "dup.yaml:3:1"), (tmp / "syntax.yaml", "syntax.yaml:3:"),
            (tmp / "binary.yaml", "not UTF-8"), (tmp / "list.yaml", "a recipe is a mapping"),
            (tmp / "folder.yaml", "is a folder"), (tmp / "missing.yaml", "not found"),
            (tmp / "unknown_section.yaml", "did you mean 'trainer'"), (tmp / "section_not_mapping.yaml", "trainer")]


def test_bad_recipe_files(tmp_path, capsys):
    for path, want in _bad_files(tmp_path):
        code, lines, err = _run_cli([str(path), "--print-config"], capsys)
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (path.name, err[-2000:])
        assert want in lines[0], (path.name, lines[0])


@pytest.mark.parametrize("overrides, want", SEMANTIC[:20], ids=[f"start:{i}" for i in range(20)])
def test_semantic_cases_fail_at_run_start(overrides, want, tmp_path, capsys):
    code, lines, err = _run_cli([TINY, *overrides, f"run.output_dir={tmp_path}"], capsys)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert want in lines[0], lines[0]
    assert not (tmp_path / "tiny").exists()  # refused before the run dir, Ray or any actor


def test_real_processes_exit_2(tmp_path):
    for argv in (["trainer.lr=1e400", "--print-config"], ["rewards.1.fn=exact_match", "rewards.3.fn=x"],
                 ["model.name=./missing", f"run.output_dir={tmp_path}"]):
        out = subprocess.run([sys.executable, "-m", "rl.cli", "train", TINY, *argv], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("rl:")]
        assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
