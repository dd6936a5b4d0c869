"""Chat models: the OpenAI-compatible client against a local fake endpoint; scripted replies."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from envs.coding.models import OpenAIChatModel, ScriptedModel, approx_tokens, replay_profile


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append((self.path, self.headers.get("Authorization"), body))
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": "```bash\nls\n```"}}],
                 "usage": {"prompt_tokens": 42, "completion_tokens": 7}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_client(endpoint):
    model = OpenAIChatModel(endpoint, "my-model", temperature=0.0, max_tokens=64, api_key="k")
    text, n_in, n_out = model.chat([{"role": "user", "content": "hi"}])
    assert (text, n_in, n_out) == ("```bash\nls\n```", 42, 7)
    path, auth, body = _Handler.seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert body["model"] == "my-model" and body["max_tokens"] == 64 and body["messages"][0]["content"] == "hi"


def test_openai_client_http_error(endpoint):
    """A server that keeps answering 500: retried, then one error naming the URL and the attempts."""
    with pytest.raises(RuntimeError, match=r"/v1 unreachable.*3 attempts.*HTTP 500"):
        OpenAIChatModel(endpoint, "broken", api_key="", max_retries=2, backoff_s=0.01).chat(
            [{"role": "user", "content": "hi"}])


def test_scripted_model_counts_history():
    m = ScriptedModel(["a" * 40])
    msgs = [{"role": "user", "content": "b" * 400}]
    assert m.chat(msgs) == ("a" * 40, approx_tokens("b" * 400) + 4, 10)
    assert "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT" in m.chat(msgs)[0]     # past the script: submit


def test_replay_profiles_vary_and_are_deterministic():
    profiles = [replay_profile(f"t{i}", seed=0) for i in range(50)]
    assert profiles == [replay_profile(f"t{i}", seed=0) for i in range(50)]
    assert 0 < sum(not p["solve"] for p in profiles) < 25
    assert len({p["explore_turns"] for p in profiles}) > 3
