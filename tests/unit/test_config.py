import subprocess
import sys
import textwrap

import pytest

from rl.config import ConfigError, load_config


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_and_sparse_override(tmp_path):
    cfg = load_config(write(tmp_path, "trainer: {steps: 7}\n"), ["rollout.max_new_tokens=32", "trainer.lr=3e-6"])
    assert cfg.trainer.steps == 7 and cfg.rollout.max_new_tokens == 32
    assert cfg.trainer.lr == pytest.approx(3e-6)
    assert cfg.rollout.samples_per_prompt == 8  # untouched default


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "trainer: {stpes: 3}\n"))
    assert "trainer.stpes" in str(e.value) and "trainer.steps" in str(e.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="'trainr'.*did you mean 'trainer'"):
        load_config(write(tmp_path, "trainr: {steps: 3}\n"))


def test_wrong_type_names_path_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.steps: expected int, got 'many'"):
        load_config(write(tmp_path, "trainer: {steps: many}\n"))
    with pytest.raises(ConfigError, match=r"rewards\.0\.weight: expected float"):
        load_config(write(tmp_path, "rewards: [{fn: exact_match, weight: heavy}]\n"))
    with pytest.raises(ConfigError, match=r"run\.wandb_mode: expected one of"):
        load_config(write(tmp_path, "run: {wandb_mode: loud}\n"))
    with pytest.raises(ConfigError, match=r"coding\.agent: expected one of"):
        load_config(write(tmp_path, "coding: {agent: json}\n"))


def test_reward_list_override(tmp_path):
    cfg = load_config(write(tmp_path, "rewards: [{fn: exact_match}, {fn: format_number_only, weight: 0.1}]\n"),
                      ["rewards.1.weight=0.5"])
    assert [r.weight for r in cfg.rewards] == [1.0, 0.5]


def test_cross_field_validation(tmp_path):
    with pytest.raises(ConfigError, match="trainer.prompts_per_step: must be > 0"):
        load_config(write(tmp_path, "trainer: {prompts_per_step: 0}\n"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rl.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_typo_exits_2_with_one_line(tmp_path):
    r = run_cli("train", str(write(tmp_path, "rollout: {max_new_tokenz: 3}\n")))
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "rollout.max_new_tokenz" in lines[0] and "rollout.max_new_tokens" in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_missing_reward_module_exits_2(tmp_path):
    r = run_cli("train", str(write(tmp_path, "rewards: [{fn: no_such_pkg.scores:f}]\n")))
    assert r.returncode == 2 and "rewards.0.fn" in r.stderr and "no_such_pkg" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_print_config(tmp_path):
    r = run_cli("train", str(write(tmp_path, "trainer: {steps: 5}\n")), "--print-config")
    assert r.returncode == 0 and "steps: 5" in r.stdout


def test_cli_unknown_algorithm(tmp_path):
    r = run_cli("train", str(write(tmp_path, "algorithm: {name: grpoo}\n")))
    assert r.returncode == 2 and "algorithm.name" in r.stderr and "grpo" in r.stderr


@pytest.mark.parametrize("overrides, message", [
    (["resources.critic.num_actors=2"], "critic ranks need algorithm.name: ppo"),
    (["algorithm.name=ppo", "resources.critic.num_actors=2", "critic.placement=colocated"], "critic.placement: own_actor"),
    (["resources.engine.num_actors=2"], "engines: rollout.num_workers"),
    (["resources.learner.num_actors=0"], "resources.learner.num_actors: must be >= 1"),
    (["sync.verify_every_steps=0"], "sync.verify_every_steps: must be >= 1"),
    (["sync.timeout_s=0"], "sync.timeout_s: must be > 0"),
])
def test_actor_counts_are_checked(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, "{}"), overrides)


@pytest.mark.parametrize("key", ["trainer.max_grad_norm", "control.max_grad_norm"])
@pytest.mark.parametrize("value", ["-1", "0", ".nan"])
def test_a_non_positive_grad_clip_is_refused(key, value):
    # clip_grad_norm_ with max -1 multiplies the gradient by about -1 / norm: the optimizer climbs the loss
    with pytest.raises(ConfigError, match=f"{key}: must be > 0"):
        load_config(None, [f"{key}={value}"])


def test_overrides_append_list_items_and_name_bad_indices():
    cfg = load_config(None, ["rewards.1.fn=format_number_only", "rewards.1.weight=0.5"])  # index == length appends
    assert [(r.fn, r.weight) for r in cfg.rewards] == [("exact_match", 1.0), ("format_number_only", 0.5)]
    with pytest.raises(ConfigError, match="rewards.3.fn: index 3 outside a list of 1 items"):
        load_config(None, ["rewards.3.fn=exact_match"])
    with pytest.raises(ConfigError, match="'x' is not a list index"):
        load_config(None, ["rewards.x.fn=exact_match"])


@pytest.mark.parametrize("override, expected", [
    ("task.system_prompt=Answer: 42", "Answer: 42"),       # a ": " used to become a mapping (then a crash)
    ("task.system_prompt=a: [b", "a: [b"),                 # YAML that does not parse stays the string
    ("run.name=[unclosed", "[unclosed"),
    ("task.digits=[1, 3]", [1, 3]),                        # brackets ask for a list
])
def test_override_values_stay_strings_unless_they_parse_cleanly(override, expected):
    key = override.split("=", 1)[0]
    section, field = key.split(".")
    assert getattr(getattr(load_config(None, [override]), section), field) == expected


@pytest.mark.parametrize("override, message", [
    ("run.name=!!python/object/apply:os.system ['true']", "YAML tags are not allowed"),
    ("=5", "empty key"),
    ("trainer..steps=3", "empty key"),
    ("trainer.steps.x=3", "trainer.steps: expected int"),
])
def test_bad_overrides_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
