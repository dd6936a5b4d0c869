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
from envs.coding.chat import ModelUnavailable, api_messages
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
    format_ok: bool = True        # the reply held a valid action (bash block / tool call)


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
    agent_format: str = "bash"    # bash (bash-in-markdown) | tools (chat-completions tools API)

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


@dataclass
class Step:
    """One model call and what it led to, in a format's own message shapes."""
    assistant: dict                   # the assistant message (with `extra`: actions, tokens, time)
    observations: list[dict]          # user or tool messages answering it (may be empty on submit)
    action: str | None                # the command run, None when the reply held no valid action
    returncode: int | None
    submitted: bool
    input_tokens: int
    output_tokens: int

    @property
    def observation(self) -> str:
        return "\n".join(m["content"] for m in self.observations)


def _obs_extra(res) -> dict:
    return {"returncode": res.returncode, "timed_out": res.timed_out, "timestamp": time.time()}


def bash_step(model: ChatModel, messages: list[dict], sb, command_timeout_s: float) -> Step:
    """The bash-in-markdown format: one ```bash block per reply; the observation is a user message."""
    reply, n_in, n_out = model.chat(api_messages(messages))
    action, n_blocks = parse_action(reply)
    actions = [] if action is None else [{"command": action}]
    assistant = {"role": "assistant", "content": reply, "extra": {
        "actions": actions, "input_tokens": n_in, "output_tokens": n_out, "timestamp": time.time()}}
    if action is None:
        obs = {"role": "user", "content": FORMAT_ERROR.format(n=n_blocks),
               "extra": {"interrupt_type": "FormatError", "n_actions": n_blocks, "timestamp": time.time()}}
        return Step(assistant, [obs], None, None, False, n_in, n_out)
    res = sb.run(action, timeout_s=command_timeout_s)
    submitted = res.output.lstrip().splitlines()[:1] == [SUBMIT_SENTINEL]
    obs = {"role": "user", "content": format_observation(res.returncode, res.output, res.timed_out),
           "extra": _obs_extra(res)}
    return Step(assistant, [obs], action, res.returncode, submitted, n_in, n_out)


def _record_turn(traj: Trajectory, st: Step, price_in_per_mtok: float, price_out_per_mtok: float) -> Turn:
    """Appends the step's assistant message and its Turn (tokens, cost, whether the format parsed)."""
    traj.messages.append(st.assistant)
    cost = turn_costs([st.input_tokens], [st.output_tokens], price_in_per_mtok, price_out_per_mtok)[0]
    traj.turns.append(Turn(st.action, st.observation, st.returncode, st.input_tokens, st.output_tokens, cost,
                           format_ok=bool(st.assistant["extra"].get("actions"))))
    return traj.turns[-1]


def run_agent(task: CodingTask, model: ChatModel, policy: TurnPolicy,
              make_sandbox: Callable[[CodingTask], object], hard_turn_limit: int = 100,
              command_timeout_s: float = 60.0, price_in_per_mtok: float = 1.0,
              price_out_per_mtok: float = 4.0, agent_format: str = "bash",
              step: Callable | None = None, system_prompt: str = SYSTEM_PROMPT) -> Trajectory:
    """One task, one agent, one turn-control policy -> a Trajectory (patch included).

    `step(model, messages, sandbox, command_timeout_s) -> Step` is the agent format (bash_step here,
    tools_agent.tools_step for the tools API); turn control is the same for every format: after each
    turn `after_turn` decides, and its reminder is appended to the turn's last observation.
    ModelUnavailable (the server is gone) is raised; any other model failure ends this trajectory.
    """
    step = step or bash_step
    start = time.monotonic()
    traj = Trajectory(task.instance_id, policy.name, agent_format=agent_format)
    traj.messages = [{"role": "system", "content": system_prompt},
                     {"role": "user", "content": INSTANCE_PROMPT.format(
                         problem_statement=task.problem_statement)}]
    sb = make_sandbox(task)
    try:
        base = materialize(task, sb)
        state = initial_state(policy)
        while True:
            try:
                st = step(model, list(traj.messages), sb, command_timeout_s)
            except ModelUnavailable:
                raise
            except Exception as exc:  # a model failure ends this trajectory, not the run
                traj.exit_status = f"model_error: {type(exc).__name__}: {exc}"[:300]
                break
            turn = _record_turn(traj, st, price_in_per_mtok, price_out_per_mtok)
            if st.submitted:
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
            obs = [dict(m) for m in st.observations]
            if decision.message is not None:
                obs[-1]["content"] = f"{obs[-1]['content']}\n{decision.message}"
            traj.messages.extend(obs)
        traj.patch = current_patch(sb, base)
    except ModelUnavailable:
        raise
    except Exception as exc:
        traj.exit_status = f"sandbox_error: {type(exc).__name__}: {exc}"[:300]
    finally:
        sb.close()
        traj.wall_s = time.monotonic() - start
    return traj
