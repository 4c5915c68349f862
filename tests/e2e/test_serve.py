#!/usr/bin/env python3
"""`moetier serve` end to end, over raw HTTP on loopback (and with the official `openai` client
when it is installed):

- /health, /v1/models, /metrics; chat and text completions, whole and streamed (server-sent
  events), with usage; the streamed text equals the whole one;
- an API key: requests without the right bearer token get 401;
- every bad input (malformed JSON, wrong types, unknown roles, empty messages, max_tokens or a
  prompt beyond the context, an oversized body, a half-sent request, an unknown endpoint) gets a
  4xx with OpenAI's error object, and the server keeps serving;
- a client that disconnects mid-stream frees its slot at once;
- a load test: 8 concurrent streaming clients, 100 requests, greedy: every answer complete and
  equal token for token to the one-client answer of its prompt, RSS flat.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402

PROMPTS = ["Hello", "The capital of France is", "def fib(n):", "Write a poem about the sea",
           "1, 2, 3,", "Explain mixture of experts", "Once upon a time", "Why is the sky blue?",
           "List three colours", "Translate 'cat' to French", "What is 7 times 6?", "Name a planet"]


class Server:
    def __init__(self, exe, model, *extra):
        self.p = subprocess.Popen([exe, "serve", "--model", model, "--port", "0", *extra],
                                  stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port = None
        self.log = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.p.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.p.stderr:
            self.log.append(line)

    def request(self, method, path, body=None, headers=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        c.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        return r.status, text

    def stream(self, path, body, headers=None):
        """Returns (status, list of parsed SSE data payloads, saw [DONE])."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request("POST", path, body=json.dumps(body), headers=headers or {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            text = r.read().decode()
            c.close()
            return r.status, [text], False
        events, done = [], False
        for raw in r.read().decode().split("\n\n"):
            raw = raw.strip()
            if not raw:
                continue
            assert raw.startswith("data: "), raw
            payload = raw[len("data: "):]
            if payload == "[DONE]":
                done = True
            else:
                events.append(json.loads(payload))
        c.close()
        return 200, events, done

    def stop(self):
        self.p.terminate()
        try:
            return self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None


def is_openai_error(status, text, want_status=None):
    try:
        e = json.loads(text)["error"]
        ok = isinstance(e["message"], str) and e["message"] and "type" in e and "param" in e
    except Exception:  # noqa: BLE001
        return False
    return ok and 400 <= status < 500 and (want_status is None or status == want_status)


def chat(messages, **kw):
    return dict({"messages": messages, "temperature": 0}, **kw)


def streamed_text(events):
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices"))


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    model = os.path.join(work, "tiny_v3")
    if not os.path.exists(os.path.join(model, "config.json")):
        C.run_cli(exe, ["make-model", "--preset", "tiny", "--out", model])

    s = Server(exe, model, "--parallel", "4", "--context", "256", "--max-body", "64K")
    if not ck.check("server starts and prints its port", s.port is not None, "".join(s.log)[-400:]):
        s.stop()
        ck.finish()
        return
    st, text = s.request("GET", "/health")
    ck.check("/health", st == 200 and json.loads(text)["status"] == "ok", text)
    st, text = s.request("GET", "/v1/models")
    ck.check("/v1/models lists the model", st == 200 and json.loads(text)["data"][0]["id"] == "tiny_v3", text)

    # Chat, whole and streamed: the same greedy text, usage in both.
    st, text = s.request("POST", "/v1/chat/completions", chat([{"role": "user", "content": "Hello"}], max_tokens=8))
    whole = json.loads(text) if st == 200 else {}
    ok = st == 200 and whole["object"] == "chat.completion" and whole["choices"][0]["message"]["role"] == "assistant"
    ck.check("chat completion", ok and whole["choices"][0]["finish_reason"] in ("length", "stop"), text[:300])
    u = whole.get("usage", {})
    ck.check("chat usage counts", u.get("completion_tokens", 0) >= 1 and
             u.get("total_tokens") == u.get("prompt_tokens", 0) + u.get("completion_tokens", 0), str(u))
    st, events, done = s.stream("/v1/chat/completions", chat([{"role": "user", "content": "Hello"}], max_tokens=8,
                                                             stream=True, stream_options={"include_usage": True}))
    ck.check("streamed chat ends with [DONE] and a usage chunk",
             st == 200 and done and events[-1].get("usage") == u and events[-1]["choices"] == [], str(events[-1:]))
    ck.check("streamed text equals the whole answer",
             whole and streamed_text(events) == whole["choices"][0]["message"]["content"],
             repr(streamed_text(events)))
    ck.check("stream chunks are chat.completion.chunk with one finish_reason",
             all(e["object"] == "chat.completion.chunk" for e in events) and
             sum(1 for e in events if e["choices"] and e["choices"][0]["finish_reason"]) == 1)

    # Text completions.
    st, text = s.request("POST", "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0})
    comp = json.loads(text) if st == 200 else {}
    ck.check("text completion", st == 200 and comp["object"] == "text_completion" and
             isinstance(comp["choices"][0]["text"], str) and comp["usage"]["completion_tokens"] >= 1, text[:300])
    st, events, done = s.stream("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0,
                                                    "stream": True})
    ck.check("streamed completion equals the whole one",
             st == 200 and done and "".join(e["choices"][0]["text"] for e in events) == comp["choices"][0]["text"])

    # Stop sequences: the answer ends before the first one.
    full = whole["choices"][0]["message"]["content"] if whole else ""
    if len(full) >= 3:
        cut = full[1:3]
        st, text = s.request("POST", "/v1/chat/completions",
                             chat([{"role": "user", "content": "Hello"}], max_tokens=8, stop=[cut]))
        got = json.loads(text)["choices"][0] if st == 200 else {}
        ck.check("a stop sequence ends the answer before it",
                 got.get("message", {}).get("content") == full[:full.find(cut)] and got.get("finish_reason") == "stop",
                 text[:200])

    # Tools are described to the model (the tiny random model answers without calling one).
    tools = [{"type": "function", "function": {"name": "get_time", "description": "the time",
                                               "parameters": {"type": "object", "properties": {}}}}]
    st, text = s.request("POST", "/v1/chat/completions",
                         chat([{"role": "user", "content": "What time is it?"}], max_tokens=4, tools=tools))
    ck.check("a request with tools is served", st == 200 and json.loads(text)["usage"]["prompt_tokens"] > 40,
             text[:300])

    # Bad input: each a 4xx with OpenAI's error object; the server keeps serving.
    bad = [
        ("malformed JSON", "/v1/chat/completions", '{"messages": [', 400),
        ("wrong type", "/v1/chat/completions", {"messages": "hi"}, 400),
        ("unknown role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400),
        ("empty messages", "/v1/chat/completions", {"messages": []}, 400),
        ("max_tokens beyond the context", "/v1/chat/completions", chat([{"role": "user", "content": "hi"}], max_tokens=500), 400),
        ("prompt beyond the context", "/v1/chat/completions", chat([{"role": "user", "content": "word " * 300}]), 400),
        ("temperature out of range", "/v1/chat/completions", chat([{"role": "user", "content": "hi"}], temperature=9), 400),
        ("completion without a prompt", "/v1/completions", {"max_tokens": 3}, 400),
        ("oversized body", "/v1/chat/completions", json.dumps(chat([{"role": "user", "content": "x" * 100000}])), 413),
        ("unknown endpoint", "/v1/embeddings", {"input": "x"}, 404),
    ]
    for name, path, body, want in bad:
        st, text = s.request("POST", path, body)
        ck.check(f"bad input: {name} -> {want} with an error object", is_openai_error(st, text, want), f"{st} {text[:200]}")

    # A half-sent request: the others are served meanwhile.
    half = socket.create_connection(("127.0.0.1", s.port))
    half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"messages\": [")
    st, text = s.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2, "temperature": 0})
    ck.check("a half-sent request does not block the others", st == 200, text[:200])
    half.close()

    # A client that goes away mid-stream frees its slot.
    st, mtext = s.request("GET", "/metrics")
    cancelled_before = metric(mtext, "moetier_requests_cancelled_total") or 0
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    c.request("POST", "/v1/chat/completions", body=json.dumps(chat([{"role": "user", "content": "Go on"}],
                                                                   max_tokens=80, stream=True)),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.fp.readline()  # the first event
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    freed = False
    for _ in range(100):
        time.sleep(0.1)
        st, mtext = s.request("GET", "/metrics")
        if (metric(mtext, "moetier_requests_cancelled_total") or 0) > cancelled_before and \
                metric(mtext, "moetier_running_sequences") == 0:
            freed = True
            break
    ck.check("a disconnect mid-stream cancels the request and frees its slot", freed, mtext[-600:])

    # Load: 8 concurrent streaming clients, 100 requests; greedy answers equal the one-client ones.
    single = {}
    for p in PROMPTS:
        st, text = s.request("POST", "/v1/chat/completions", chat([{"role": "user", "content": p}], max_tokens=12))
        single[p] = json.loads(text)["choices"][0]["message"]["content"] if st == 200 else None
    st, mtext = s.request("GET", "/metrics")
    rss_before = metric(mtext, "moetier_process_resident_bytes")
    results, lock = [], threading.Lock()

    def client(k):
        for i in range(k, 100, 8):
            p = PROMPTS[i % len(PROMPTS)]
            try:
                st, events, done = s.stream("/v1/chat/completions",
                                            chat([{"role": "user", "content": p}], max_tokens=12, stream=True))
                out = (p, st, done, streamed_text(events) if st == 200 else None)
            except Exception as e:  # noqa: BLE001
                out = (p, None, False, repr(e))
            with lock:
                results.append(out)

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.time() - t0
    complete = [r for r in results if r[1] == 200 and r[2]]
    ck.check(f"load: 100 requests from 8 clients, every one complete ({elapsed:.1f} s)",
             len(results) == 100 and len(complete) == 100, str([r for r in results if r not in complete][:3]))
    mismatched = [r[0] for r in complete if r[3] != single[r[0]]]
    ck.check("load: every greedy answer equals the one-client answer of its prompt", not mismatched,
             str(mismatched[:5]))
    st, mtext = s.request("GET", "/metrics")
    rss_after = metric(mtext, "moetier_process_resident_bytes")
    ck.check("load: RSS stays flat (within 10%)", rss_before and rss_after and rss_after < 1.10 * rss_before,
             f"{rss_before} -> {rss_after}")
    ck.check("metrics: generated tokens, queue depth, time to first token",
             (metric(mtext, "moetier_generated_tokens_total") or 0) >= 1200 and
             metric(mtext, "moetier_queue_depth") == 0 and
             (metric(mtext, "moetier_time_to_first_token_seconds_count") or 0) >= 100, mtext[:400])
    ck.info(f"load: {sum(len(r[3] or '') for r in complete)} characters in {elapsed:.1f} s")

    # The official client, when installed.
    try:
        import openai  # noqa: F401
        have_openai = True
    except ImportError:
        have_openai = False
        ck.check("the official openai client is installed (scripts/setup.sh puts it in .venv)", False, sys.executable)
    if have_openai:
        from openai import OpenAI
        cl = OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="unused")
        r = cl.chat.completions.create(model="tiny_v3", messages=[{"role": "user", "content": "Hello"}],
                                       max_tokens=8, temperature=0)
        ck.check("openai client: chat", r.choices[0].message.content == full and r.usage.completion_tokens >= 1)
        parts = [ch.choices[0].delta.content or "" for ch in cl.chat.completions.create(
            model="tiny_v3", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0, stream=True)
            if ch.choices]
        ck.check("openai client: streamed chat", "".join(parts) == full)
        ck.check("openai client: models", [m.id for m in cl.models.list()] == ["tiny_v3"])

    # SIGTERM with a long answer streaming: the stream ends and the server exits promptly.
    streaming = threading.Thread(target=lambda: s.stream("/v1/chat/completions", chat(
        [{"role": "user", "content": "Go on"}], max_tokens=200, stream=True)), daemon=True)
    streaming.start()
    time.sleep(0.3)
    t0 = time.time()
    code = s.stop()
    ck.check(f"SIGTERM mid-stream: the server exits 0 promptly ({time.time() - t0:.1f} s)",
             code == 0 and time.time() - t0 < 10, "".join(s.log)[-300:])

    # An API key: 401 without it, 200 with it; /health stays open.
    k = Server(exe, model, "--parallel", "1", "--context", "64", "--api-key", "s3cret")
    if k.port:
        st, text = k.request("GET", "/v1/models")
        ck.check("API key: a request without it gets 401", is_openai_error(st, text, 401), f"{st} {text[:200]}")
        st, text = k.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        ck.check("API key: a wrong key gets 401", st == 401, str(st))
        st, text = k.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2},
                             headers={"Authorization": "Bearer s3cret", "Content-Type": "application/json"})
        ck.check("API key: the right key is served", st == 200, text[:200])
        st, _ = k.request("GET", "/health")
        ck.check("API key: /health needs none", st == 200)
    k.stop()

    # Thinking mode: a copy of the model whose chat template is the V3.1/V3.2 kind (the engine
    # detects it by its mention of thinking). The random model never closes its thinking, so
    # the whole answer is reasoning.
    v31 = os.path.join(work, "tiny_v31")
    if not os.path.exists(os.path.join(v31, "config.json")):
        shutil.copytree(model, v31)
        tc = json.load(open(os.path.join(v31, "tokenizer_config.json")))
        tc["chat_template"] += "{# V3.1 hybrid template: thinking mode with <think> #}"
        json.dump(tc, open(os.path.join(v31, "tokenizer_config.json"), "w"))
    t = Server(exe, v31, "--parallel", "2", "--context", "128")
    if t.port:
        st, text = t.request("POST", "/v1/chat/completions",
                             chat([{"role": "user", "content": "Think"}], max_tokens=6, thinking=True))
        msg = json.loads(text)["choices"][0]["message"] if st == 200 else {}
        ck.check("thinking: the answer comes back as reasoning_content",
                 st == 200 and len(msg.get("reasoning_content", "")) > 0 and msg.get("content") == "", text[:300])
        st, events, done = t.stream("/v1/chat/completions", chat([{"role": "user", "content": "Think"}], max_tokens=6,
                                                                chat_template_kwargs={"thinking": True}, stream=True))
        streamed = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events if e.get("choices"))
        ck.check("thinking: streamed reasoning_content equals the whole one",
                 st == 200 and done and streamed == msg.get("reasoning_content"), repr(streamed[:100]))
        st, text = t.request("POST", "/v1/chat/completions", chat([{"role": "user", "content": "Think"}], max_tokens=6))
        msg = json.loads(text)["choices"][0]["message"] if st == 200 else {}
        ck.check("thinking off: plain content, no reasoning_content", st == 200 and "reasoning_content" not in msg
                 and len(msg.get("content", "")) > 0, text[:300])
    t.stop()
    st_text = Server(exe, model, "--parallel", "1", "--context", "64")
    if st_text.port:
        st, text = st_text.request("POST", "/v1/chat/completions",
                                   chat([{"role": "user", "content": "hi"}], max_tokens=2, thinking=True))
        ck.check("thinking on a V3 model: 400 naming the parameter", is_openai_error(st, text, 400) and
                 json.loads(text)["error"]["param"] == "thinking", text[:200])
    st_text.stop()

    # Start-up refusals.
    for name, argv, needle in [
        ("no model", ["serve"], "--model"),
        ("bad port", ["serve", "--model", model, "--port", "70000"], "port"),
        ("context beyond the model", ["serve", "--model", model, "--context", "16000000"], "max_position_embeddings"),
        ("parallel 0", ["serve", "--model", model, "--parallel", "0"], "parallel"),
    ]:
        p = subprocess.run([exe] + argv, capture_output=True, text=True, timeout=120)
        ck.check(f"start-up refusal: {name}", p.returncode != 0 and needle in p.stderr, p.stderr[-300:])
    ck.finish()


if __name__ == "__main__":
    main()
