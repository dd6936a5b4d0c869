"""The LLM-judge reward's client against a real HTTP endpoint on 127.0.0.1: parsing, retries with
backoff on 5xx, no retry on 4xx, per-call timeouts, bearer tokens, and the batch deadline by hand."""
import pytest

from rl.config_rewards import JudgeConfig
from rl.workers.judge import JudgeError, batch_deadline_s, judge_batch, parse_judgement
from judge_server import JudgeServer

TEMPLATE = "Request: {prompt}\nExpected: {answer}\nReply: {completion}\nScore 0-10."


@pytest.mark.parametrize("text,fmt,want", [("Score: 7/10", "score_0_10", 0.7), ("10", "score_0_10", 1.0),
                                           ("0", "score_0_10", 0.0), ("Yes.", "yes_no", 1.0),
                                           ("no, wrong", "yes_no", 0.0), ("8.5", "score_0_10", 0.85)])
def test_parse_judgement(text, fmt, want):
    assert parse_judgement(text, fmt) == pytest.approx(want)


@pytest.mark.parametrize("text,fmt", [("great", "score_0_10"), ("11", "score_0_10"), ("maybe", "yes_no"), ("", "yes_no")])
def test_parse_judgement_refuses(text, fmt):
    with pytest.raises(JudgeError):
        parse_judgement(text, fmt)


def _cfg(url, **kw):
    return JudgeConfig(base_url=url, model="grader", prompt_template=TEMPLATE, backoff_s=0.01, **kw)


def test_scores_retry_on_5xx_and_carry_the_token(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "s3cret")
    with JudgeServer(fail_first=2) as server:
        out = judge_batch(_cfg(server.url, max_concurrency=1, api_key_env="JUDGE_KEY"), ["1+1?", "2+2?"], ["2", "5"],
                          {"answer": ["2", "4"]})
    assert out == [1.0, 0.2]
    assert len(server.calls) == 4  # 2 x 503, then one call per sample
    assert {c["path"] for c in server.calls} == {"/v1/chat/completions"}
    assert {c["auth"] for c in server.calls} == {"Bearer s3cret"}
    assert server.calls[-1]["body"]["model"] == "grader" and "Expected: 4" in server.calls[-1]["body"]["messages"][0]["content"]


def test_4xx_is_not_retried_and_errors_stay_per_sample():
    with JudgeServer(status=400) as server:
        out = judge_batch(_cfg(server.url, max_retries=3), ["q"], ["a"], {"answer": ["a"]})
    assert isinstance(out[0], JudgeError) and "HTTP 400 (not retried)" in str(out[0])
    assert len(server.calls) == 1


def test_timeouts_are_retried_then_given_up():
    with JudgeServer(delay_s=0.5) as server:
        out = judge_batch(_cfg(server.url, timeout_s=0.1, max_retries=1), ["q"], ["a"], {"answer": ["a"]})
    assert isinstance(out[0], JudgeError) and "gave up after 2 calls" in str(out[0]) and "timeout_s=0.1" in str(out[0])


def test_unreachable_endpoint_and_missing_token():
    out = judge_batch(_cfg("http://127.0.0.1:9/v1", max_retries=0), ["q"], ["a"], {"answer": ["a"]})
    assert isinstance(out[0], JudgeError) and "cannot reach" in str(out[0])
    with pytest.raises(JudgeError, match="NO_SUCH_VAR is not set"):
        judge_batch(_cfg("http://127.0.0.1:9/v1", api_key_env="NO_SUCH_VAR"), ["q"], ["a"], {})


def test_batch_deadline_by_hand():
    # 10 samples, 4 at a time -> 3 waves; per sample 3 calls x 2 s + backoff 0.5 * (1 + 2) = 7.5 s
    assert batch_deadline_s(JudgeConfig(timeout_s=2.0, max_retries=2, backoff_s=0.5, max_concurrency=4), 10) == 22.5
