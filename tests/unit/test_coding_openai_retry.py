"""The model-server client's retries against a real HTTP server on 127.0.0.1 (http.server in a
thread): 5xx then 200 is retried to success, a closed port gives ModelUnavailable naming the URL and
the attempts, 404 is not retried, other 4xx end only the call; the backoff formula by hand."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("openai")

from envs.coding.chat import ModelUnavailable  # noqa: E402
from envs.coding.openai_client import OpenAIChatModel, backoff_delay_s  # noqa: E402
from envs.coding.tool_format import TOOLS  # noqa: E402

REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
             "role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                 "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}]}}],
         "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}


class Flaky(BaseHTTPRequestHandler):
    plan: list = []          # status codes to answer in order; then 200
    bodies: list = []

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "served-model", "object": "model"}]})

    def do_POST(self):
        Flaky.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        code = Flaky.plan.pop(0) if Flaky.plan else 200
        self._send(code, REPLY if code == 200 else {"error": {"message": f"status {code}"}})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    Flaky.plan, Flaky.bodies = [], []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def _model(url, **kw):
    waits = []
    return OpenAIChatModel(url, backoff_s=0.5, seed=0, sleep=waits.append, **kw), waits


def test_backoff_by_hand():
    assert backoff_delay_s(0, 1.0, 30.0, 0.0) == 0.5
    assert backoff_delay_s(2, 1.0, 30.0, 0.0) == 2.0
    assert backoff_delay_s(3, 1.0, 30.0, 0.999999) == pytest.approx(8.0, abs=1e-5)
    assert backoff_delay_s(10, 1.0, 30.0, 0.0) == 15.0      # capped at 30 s, then jittered


def test_5xx_then_200_is_retried(server):
    Flaky.plan = [500, 503, 502]
    model, waits = _model(server, max_retries=3)
    reply = model.chat_tools([{"role": "user", "content": "hi", "extra": {"t": 1}}], TOOLS)
    assert [c.name for c in reply.tool_calls] == ["bash"] and reply.tool_calls[0].id == "c1"
    assert (reply.input_tokens, reply.output_tokens) == (11, 5)
    assert len(Flaky.bodies) == 4 and len(waits) == 3
    assert all(0.5 * 0.5 * 2 ** k <= w <= 0.5 * 2 ** k for k, w in enumerate(waits))   # exponential, jittered
    body = Flaky.bodies[-1]
    assert body["model"] == "served-model"             # the server's first listed model
    assert body["tools"][0]["function"]["name"] == "bash" and body["tool_choice"] == "auto"
    assert "extra" not in body["messages"][0]            # trajectory metadata never sent


def test_retries_exhausted_names_url_and_attempts(server):
    Flaky.plan = [500] * 10
    model, waits = _model(server, max_retries=2, model="m")
    with pytest.raises(ModelUnavailable, match=r"model server http://127\.0\.0\.1:\d+/v1 unreachable.*3 attempts"):
        model.chat([{"role": "user", "content": "hi"}])
    assert len(Flaky.bodies) == 3 and len(waits) == 2


def test_closed_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]      # closed again when the block ends: nothing listens there
    model, waits = _model(f"http://127.0.0.1:{port}/v1", max_retries=2, model="m", timeout_s=5)
    with pytest.raises(ModelUnavailable, match=rf"127\.0\.0\.1:{port}/v1 unreachable.*3 attempts.*APIConnectionError"):
        model.chat([{"role": "user", "content": "hi"}])
    assert len(waits) == 2


def test_404_not_retried_and_400_ends_only_the_call(server):
    Flaky.plan = [404]
    model, waits = _model(server, max_retries=3, model="m")
    with pytest.raises(ModelUnavailable, match="HTTP 404"):
        model.chat([{"role": "user", "content": "hi"}])
    Flaky.plan = [400]
    with pytest.raises(RuntimeError, match="HTTP 400") as info:
        model.chat([{"role": "user", "content": "hi"}])
    assert not isinstance(info.value, ModelUnavailable) and waits == []
