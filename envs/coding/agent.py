"""The agent loop, with mini-swe-agent semantics, under a turn-control policy.

Each turn: the model sees the whole history and answers with a THOUGHT and exactly one ```bash block;
the command runs in the task's sandbox (a fresh shell each time, cwd = the repo); the observation
(return code + output, truncated) goes back as the next user message, followed by the turn-control
reminder when the policy has one. The agent submits by running a command whose first output line is
SUBMIT_SENTINEL; the patch is then `git add -A && git diff --cached <base>` of the sandbox. A reply
without exactly one bash block costs a turn and gets a format-error observation.

Turn control (allocation/turn_control.py, SPECS.md §7) decides after every turn whether the agent
may go on; at a cap the run stops and whatever patch exists is the prediction.

Example:
    traj = run_agent(task, ScriptedModel(["```bash\\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\\n```"]),
                     TurnPolicy(), lambda: LocalSandbox.create())
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

from allocation.turn_control import TurnPolicy, after_turn, initial_state, turn_costs
from envs.coding.tasks import CodingTask, current_patch, materialize

SUBMIT_SENTINEL = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
OBSERVATION_LIMIT_CHARS = 10_000
_BASH_BLOCK = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)

SYSTEM_PROMPT = f"""You are a software engineer fixing an issue in a Python repository.
You work in a shell. Every reply must contain a short THOUGHT section and then exactly ONE bash code
block with ONE command (chain several with && if needed), for example:

THOUGHT: I will look at the files first.

```bash
ls -R
```

Each command runs in a fresh shell in the repository root; directory changes do not persist.
There is no network. Edit files with sed, cat <<'EOF' > file, or python scripts.
When you are done, submit by running exactly:

```bash
echo {SUBMIT_SENTINEL}
```
"""

INSTANCE_PROMPT = """<task>
{problem_statement}
</task>

Fix the issue by editing the source files in the repository root (the current directory). Do not
edit the tests. Submit when done."""

FORMAT_ERROR = ("Format error: your reply must contain exactly ONE ```bash code block (found {n}). "
                "Reply with a THOUGHT and one bash block.")


class ChatModel(Protocol):
    """What the agent calls: the chat history in, (reply text, input tokens, output tokens) out."""

    def chat(self, messages: list[dict]) -> tuple[str, int, int]: ...


@dataclass
class Turn:
    action: str | None            # the bash command, None on a format error
    observation: str
    returncode: int | None
    input_tokens: int
    output_tokens: int
    cost: float
    reminder: str | None = None


@dataclass
class Trajectory:
    instance_id: str
    strategy: str
    messages: list[dict] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    exit_status: str = ""         # submitted | turn_cap | hard_limit | model_error | sandbox_error
    patch: str = ""
    extended: bool = False
    wall_s: float = 0.0

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def input_tokens(self) -> int:
        return sum(t.input_tokens for t in self.turns)

    @property
    def output_tokens(self) -> int:
        return sum(t.output_tokens for t in self.turns)

    @property
    def cost(self) -> float:
        return sum(t.cost for t in self.turns)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(num_turns=self.num_turns, input_tokens=self.input_tokens,
                 output_tokens=self.output_tokens, cost=self.cost)
        return d


def parse_action(reply: str) -> tuple[str | None, int]:
    """(the single bash command, number of bash blocks); command None unless exactly one block."""
    blocks = _BASH_BLOCK.findall(reply)
    return (blocks[0].strip() if len(blocks) == 1 else None), len(blocks)


def format_observation(returncode: int, output: str, timed_out: bool) -> str:
    if len(output) > OBSERVATION_LIMIT_CHARS:
        half = OBSERVATION_LIMIT_CHARS // 2
        output = (output[:half] + f"\n<{len(output) - 2 * half} characters elided>\n" + output[-half:])
    note = "<warning>the command timed out and was killed</warning>\n" if timed_out else ""
    return f"{note}<returncode>{returncode}</returncode>\n<output>\n{output}</output>"


def run_agent(task: CodingTask, model: ChatModel, policy: TurnPolicy,
              make_sandbox: Callable[[CodingTask], object], hard_turn_limit: int = 100,
              command_timeout_s: float = 60.0, price_in_per_mtok: float = 1.0,
              price_out_per_mtok: float = 4.0) -> Trajectory:
    """One task, one agent, one turn-control policy -> a Trajectory (patch included)."""
    start = time.monotonic()
    traj = Trajectory(task.instance_id, policy.name)
    traj.messages = [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": INSTANCE_PROMPT.format(
                         problem_statement=task.problem_statement)}]
    sb = make_sandbox(task)
    try:
        base = materialize(task, sb)
        state = initial_state(policy)
        while True:
            try:
                reply, n_in, n_out = model.chat(list(traj.messages))
            except Exception as exc:  # a model failure ends this trajectory, not the run
                traj.exit_status = f"model_error: {type(exc).__name__}: {exc}"[:300]
                break
            traj.messages.append({"role": "assistant", "content": reply})
            action, n_blocks = parse_action(reply)
            submitted, rc = False, None
            if action is None:
                obs = FORMAT_ERROR.format(n=n_blocks)
            else:
                res = sb.run(action, timeout_s=command_timeout_s)
                rc = res.returncode
                submitted = res.output.lstrip().splitlines()[:1] == [SUBMIT_SENTINEL]
                obs = format_observation(res.returncode, res.output, res.timed_out)
            cost = turn_costs([n_in], [n_out], price_in_per_mtok, price_out_per_mtok)[0]
            turn = Turn(action, obs, rc, n_in, n_out, cost)
            traj.turns.append(turn)
            if submitted:
                traj.exit_status = "submitted"
                break
            at_cap = state.cap_turns is not None and state.turns_used + 1 >= state.cap_turns
            has_patch = at_cap and bool(current_patch(sb, base).strip())
            state, decision = after_turn(policy, state, has_patch)
            traj.extended = state.extended
            if decision.action == "stop":
                traj.exit_status = decision.reason
                break
            if len(traj.turns) >= hard_turn_limit:
                traj.exit_status = "hard_limit"
                break
            turn.reminder = decision.message
            content = obs if decision.message is None else f"{obs}\n{decision.message}"
            traj.messages.append({"role": "user", "content": content})
        traj.patch = current_patch(sb, base)
    except Exception as exc:
        traj.exit_status = f"sandbox_error: {type(exc).__name__}: {exc}"[:300]
    finally:
        sb.close()
        traj.wall_s = time.monotonic() - start
    return traj
