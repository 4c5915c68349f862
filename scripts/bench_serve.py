#!/usr/bin/env python3
"""Aggregate decode tokens/s of `moetier serve`: one client at a time (--parallel 1, requests in
sequence) against 8 concurrent streaming clients with batching (--parallel N), greedy, the
same requests; interleaved rounds, medians (docs/benchmarks.md).

Usage: scripts/bench_serve.py STORE [--parallel N] [--rounds R] [--requests K] [--tokens T]"""
import argparse
import http.client
import json
import re
import statistics
import subprocess
import threading
import time

PROMPTS = ["Hello", "The capital of France is", "def fib(n):", "Write a poem about the sea",
           "Explain mixture of experts", "Once upon a time", "Why is the sky blue?", "Name a planet"]


def start(binary, store, parallel):
    p = subprocess.Popen([binary, "serve", "--model", store, "--port", "0", "--parallel", str(parallel),
                          "--context", "512"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in p.stderr:
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, int(m.group(1))
    raise SystemExit("server did not start")


def ask(port, prompt, tokens):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    c.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    n = 0
    for raw in r.read().decode().split("\n\n"):
        if raw.startswith("data: {"):
            j = json.loads(raw[6:])
            if j.get("usage"):
                n = j["usage"]["completion_tokens"]
    c.close()
    return n


def run(port, requests, tokens, clients):
    work = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    done, lock = [], threading.Lock()

    def client(k):
        for i in range(k, len(work), clients):
            n = ask(port, work[i], tokens)
            with lock:
                done.append(n)

    t0 = time.time()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--binary", default="./build/moetier")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    one, many = [], []
    for r in range(a.rounds):
        for parallel, clients, out in ((1, 1, one), (a.parallel, 8, many)):
            p, port = start(a.binary, a.store, parallel)
            ask(port, "warm up", 4)
            out.append(run(port, a.requests, a.tokens, clients))
            p.terminate()
            p.wait()
        print(f"round {r + 1}: one client at a time {one[-1]:.2f} tok/s; 8 clients, --parallel {a.parallel}: "
              f"{many[-1]:.2f} tok/s", flush=True)
    m1, m2 = statistics.median(one), statistics.median(many)
    print(f"median: one at a time {m1:.2f} tok/s, batched {m2:.2f} tok/s, ratio {m2 / m1:.2f}")


if __name__ == "__main__":
    main()
