#!/usr/bin/env python3
"""`moetier trace` on the tiny model, checked independently of the C++ code:

* token accounting: tokens = prompt tokens (counted with `moetier tokenize`) + generated tokens;
  every layer's counts sum to tokens x top_k; the co-occurrence lists are complete (16 experts,
  under the 32-follower cap), so they must sum to the counts of both layers they pair;
* the routing itself: the NumPy float64 reference (tests/reference/deepseek_ref.py) routes the
  same tokens (the prompt plus its own greedy continuation) to the same experts;
* determinism (two runs, identical files) and additivity (a prompt listed twice gives exactly
  double the counts);
* --max-tokens-per-prompt, --chat, and bad inputs: one `error:` line, non-zero exit, no output.
"""
import json
import os
import subprocess

import numpy as np

import e2e_common as C
import deepseek_ref as R

N_GEN = 4


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def tokenize(exe, model, lines):
    """Token counts as `generate` builds plain prompts (BOS per the tokenizer config), via the CLI."""
    tok_cfg = json.load(open(os.path.join(model, "tokenizer_config.json")))
    args = [exe, "tokenize", "--tokenizer", model, "--jsonl"] + (["--bos"] if tok_cfg.get("add_bos_token") else [])
    p = subprocess.run(args, input="".join(json.dumps(l) + "\n" for l in lines), capture_output=True,
                       text=True, check=True)
    return [json.loads(l)["ids"] for l in p.stdout.splitlines()]


def trace(exe, model, prompts, out, *extra):
    C.run_cli(exe, ["trace", "--model", model, "--prompts", prompts, "--out", out] + list(extra))
    with open(out) as f:
        return json.load(f)


def dense_next(t, li):
    """The co-occurrence of layers[li] as an [E, E] matrix."""
    E = t["n_routed_experts"]
    m = np.zeros((E, E), dtype=np.int64)
    for e, lst in enumerate(t["layers"][li]["next"]):
        for f, c in lst:
            m[e, f] += c
    return m


def check_structure(ck, name, t, cfg, model):
    K, E = cfg["num_experts_per_tok"], cfg["n_routed_experts"]
    moe = [L for L in range(cfg["num_hidden_layers"]) if L >= cfg["first_k_dense_replace"]]
    ck.check(f"{name}: header", t["format"] == "moetier-activations" and t["version"] == 1 and
             t["model"] == os.path.basename(model) and t["num_hidden_layers"] == cfg["num_hidden_layers"] and
             t["first_moe_layer"] == cfg["first_k_dense_replace"] and t["n_routed_experts"] == E and
             t["top_k"] == K and t["uniform_prior"] is False,
             json.dumps({k: v for k, v in t.items() if k != "layers"}))
    ck.check(f"{name}: one entry per MoE layer", [l["layer"] for l in t["layers"]] == moe,
             str([l["layer"] for l in t["layers"]]))
    for i, l in enumerate(t["layers"]):
        c = np.array(l["counts"], dtype=np.int64)
        ck.check(f"{name}: layer {l['layer']} counts sum to tokens x top_k",
                 len(c) == E and c.sum() == t["tokens"] * K, f"{c.sum()} vs {t['tokens']} x {K}")
        last = i == len(t["layers"]) - 1
        if last:
            ck.check(f"{name}: last MoE layer has no followers", l["next"] == [], str(l["next"])[:80])
            continue
        m = dense_next(t, i)
        c2 = np.array(t["layers"][i + 1]["counts"], dtype=np.int64)
        ck.check(f"{name}: layer {l['layer']} followers of each expert sum to its count x top_k",
                 np.array_equal(m.sum(axis=1), c * K), f"{m.sum(axis=1)} vs {c * K}")
        ck.check(f"{name}: layer {l['layer']} leaders of each next-layer expert sum to its count x top_k",
                 np.array_equal(m.sum(axis=0), c2 * K), f"{m.sum(axis=0)} vs {c2 * K}")
        ok_sorted = all(all(a[1] > b[1] or (a[1] == b[1] and a[0] < b[0]) for a, b in zip(lst, lst[1:]))
                        for lst in l["next"])
        ck.check(f"{name}: layer {l['layer']} followers sorted by count", ok_sorted)


def reference_routing(model, ids, n_gen, cfg):
    """Greedy continuation by the reference and its routing counts/co-occurrence over all fed tokens
    (the prompt and the n_gen generated tokens). Returns (counts per layer, next matrices, min logit gap)."""
    ids = list(ids)
    gap = np.inf
    for _ in range(n_gen):
        lg = R.logits(model, ids)[-1]
        top2 = np.sort(lg)[-2:]
        gap = min(gap, (top2[1] - top2[0]) / np.std(lg))
        ids.append(int(np.argmax(lg)))
    rd = R.routing_diagnostics(model, ids)
    E = cfg["n_routed_experts"]
    counts = [np.bincount(r["chosen"].ravel(), minlength=E) for r in rd]
    nexts = []
    for a, b in zip(rd, rd[1:]):
        m = np.zeros((E, E), dtype=np.int64)
        for ra, rb in zip(a["chosen"], b["chosen"]):
            for e in ra:
                for f in rb:
                    m[e, f] += 1
        nexts.append(m)
    margin = min(min(r["expert_gap"], r["group_gap"]) for r in rd)
    return counts, nexts, gap, margin


def main():
    a = C.parse_args()
    exe, work = a.moetier, a.workdir
    ck = C.Checker()
    model = os.path.join(work, "tiny")
    cfg = C.make_model(exe, model, seed=2)
    K = cfg["num_experts_per_tok"]

    prompts = ["The quick brown fox jumps over the lazy dog.", "Ünïcödé and 数字 1234",
               "A prompt with \"quotes\" and\ttabs"]
    pfile = write(os.path.join(work, "prompts.txt"),
                  prompts[0] + "\r\n\n   \n" + json.dumps({"prompt": prompts[1]}) + "\n" +
                  json.dumps({"prompt": prompts[2], "note": "extra keys are fine"}) + "\n")
    n_prompt = [len(ids) for ids in tokenize(exe, model, [{"text": p} for p in prompts])]

    out1 = os.path.join(work, "t1.json")
    t1 = ck.guard("trace runs", lambda: trace(exe, model, pfile, out1, "-n", N_GEN, "--ignore-eos"))
    if t1 is None:
        return ck.finish()
    ck.check("tokens = prompt tokens + generated tokens", t1["tokens"] == sum(n_prompt) + N_GEN * len(prompts),
             f"{t1['tokens']} vs {sum(n_prompt)} + {N_GEN} x {len(prompts)} (prompt tokens {n_prompt})")
    check_structure(ck, "3 prompts", t1, cfg, model)
    ck.check("no temporary file left", not os.path.exists(out1 + ".tmp"))

    # Determinism: a second run writes the same bytes.
    out2 = os.path.join(work, "t2.json")
    ck.guard("trace again", lambda: trace(exe, model, pfile, out2, "-n", N_GEN, "--ignore-eos"))
    ck.check("two runs give identical files", open(out1, "rb").read() == open(out2, "rb").read())

    # Additivity: the same prompt twice gives exactly double the counts and co-occurrences.
    once = write(os.path.join(work, "once.txt"), prompts[0] + "\n")
    twice = write(os.path.join(work, "twice.txt"), prompts[0] + "\n" + prompts[0] + "\n")
    t_once = trace(exe, model, once, os.path.join(work, "once.json"), "-n", N_GEN, "--ignore-eos")
    t_twice = trace(exe, model, twice, os.path.join(work, "twice.json"), "-n", N_GEN, "--ignore-eos")
    ck.check("twice: double the tokens", t_twice["tokens"] == 2 * t_once["tokens"],
             f"{t_twice['tokens']} vs 2 x {t_once['tokens']}")
    for i, (l1, l2) in enumerate(zip(t_once["layers"], t_twice["layers"])):
        ck.check(f"twice: layer {l1['layer']} counts double",
                 np.array_equal(2 * np.array(l1["counts"]), np.array(l2["counts"])))
        if l1["next"]:
            ck.check(f"twice: layer {l1['layer']} co-occurrences double",
                     np.array_equal(2 * dense_next(t_once, i), dense_next(t_twice, i)))

    # The routing itself, against the NumPy float64 reference: the prompt alone (prefill only),
    # then with the reference's own greedy continuation (decode steps through the KV cache).
    ids = tokenize(exe, model, [{"text": prompts[0]}])[0]
    for n_gen in (0, 3):
        name = f"reference routing, prompt + {n_gen} generated"
        t = trace(exe, model, once, os.path.join(work, f"ref{n_gen}.json"), "-n", n_gen, "--ignore-eos")
        counts, nexts, gap, margin = reference_routing(model, ids, n_gen, cfg)
        ck.info(f"{name}: smallest routing margin {margin:.2e}, smallest greedy logit gap {gap:.2e} std")
        if margin < 1e-5 or gap < 1e-3:
            ck.info(f"{name}: near-tie in the reference, comparison skipped")
            continue
        ck.check(f"{name}: tokens", t["tokens"] == len(ids) + n_gen, f"{t['tokens']} vs {len(ids) + n_gen}")
        for i, l in enumerate(t["layers"]):
            ck.check(f"{name}: layer {l['layer']} counts", np.array_equal(np.array(l["counts"]), counts[i]),
                     f"trace {l['counts']} reference {counts[i].tolist()}")
            if i < len(nexts):
                ck.check(f"{name}: layer {l['layer']} co-occurrences", np.array_equal(dense_next(t, i), nexts[i]))

    # --max-tokens-per-prompt truncates; prompt + generated tokens then fit a small context.
    long_prompt = " ".join(["word"] * 60)
    lfile = write(os.path.join(work, "long.txt"), long_prompt + "\n")
    t = trace(exe, model, lfile, os.path.join(work, "long.json"), "-n", 2, "--ignore-eos",
              "--max-tokens-per-prompt", 10, "--ctx", 16)
    ck.check("--max-tokens-per-prompt 10 -n 2: 12 tokens", t["tokens"] == 12, str(t["tokens"]))
    # A full context stops decoding early (not an error).
    t = trace(exe, model, lfile, os.path.join(work, "full.json"), "-n", 50, "--ignore-eos",
              "--max-tokens-per-prompt", 10, "--ctx", 16)
    ck.check("decoding stops when the context is full", t["tokens"] == 16, str(t["tokens"]))

    # --chat: the prompt as a user turn in the chat format.
    chat_ids = subprocess.run([exe, "tokenize", "--tokenizer", model, "--jsonl", "--chat"],
                              input=json.dumps({"messages": [{"role": "user", "content": prompts[0]}]}) + "\n",
                              capture_output=True, text=True, check=True)
    n_chat = len(json.loads(chat_ids.stdout)["ids"])
    t = trace(exe, model, once, os.path.join(work, "chat.json"), "-n", 1, "--ignore-eos", "--chat")
    ck.check("--chat: tokens = chat prompt tokens + 1", t["tokens"] == n_chat + 1, f"{t['tokens']} vs {n_chat} + 1")

    # Bad inputs: one error line naming the problem, non-zero exit, no output file.
    def expect_error(label, prompts_path, needles, *extra, model_dir=model, out=os.path.join(work, "bad.json")):
        if os.path.exists(out):
            os.remove(out)
        p = subprocess.run([exe, "trace", "--model", model_dir, "--prompts", prompts_path, "--out", out] +
                           [str(x) for x in extra], capture_output=True, text=True, timeout=300)
        problems, msg = C.error_problems(p, needles)
        if os.path.exists(out) or os.path.exists(out + ".tmp"):
            problems.append("an output file was written")
        ck.check(f"bad input: {label}", not problems,
                 "; ".join(problems) + f" | stderr: {p.stderr.strip()[-300:]}" if problems else msg)

    expect_error("missing prompts file", os.path.join(work, "nope.txt"), ["nope.txt", "cannot read"])
    expect_error("empty prompts file", write(os.path.join(work, "empty.txt"), "\n  \n\n"),
                 ["empty.txt", "no prompts"])
    expect_error("malformed JSONL line", write(os.path.join(work, "badjson.txt"), "hello\n{\"prompt\": \"x\"\n"),
                 ["badjson.txt:2", "not valid JSON"])
    expect_error("JSONL line without a prompt", write(os.path.join(work, "noprompt.txt"), "{\"text\": \"x\"}\n"),
                 ["noprompt.txt:1", "prompt"])
    expect_error("prompt longer than the context", lfile, ["long.txt:1", "context"], "--ctx", 8)
    expect_error("unreadable model", pfile, ["nomodel"], model_dir=os.path.join(work, "nomodel"))
    expect_error("bad -n", pfile, ["many"], "-n", "many")
    expect_error("output directory missing", pfile, ["no/such/dir"], out=os.path.join(work, "no/such/dir/t.json"))
    ck.finish()


if __name__ == "__main__":
    main()
