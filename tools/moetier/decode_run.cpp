#include "tools/moetier/decode_run.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <span>
#include <vector>

namespace mt::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

Result<DecodeRun> run_decode(Engine& e, int64_t prompt_tokens, int64_t steps, int64_t batch) {
  DecodeRun r;
  r.prompt_tokens = prompt_tokens;
  r.steps = steps;
  r.batch = batch;
  const int64_t B = batch;
  // B sequences, each with its own prompt (prefilled one after the other; the first is timed).
  std::vector<std::unique_ptr<backend::AttentionCache>> extra;
  std::vector<backend::AttentionCache*> seqs = {&e.sequence()};
  for (int64_t b = 1; b < B; ++b) {
    extra.push_back(e.new_sequence());
    seqs.push_back(extra.back().get());
  }
  std::vector<float> logits;
  const int64_t V = e.config().vocab_size;
  std::vector<int32_t> next(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> prompt;
    for (int64_t i = 0; i < prompt_tokens; ++i) prompt.push_back(static_cast<int32_t>((i * 7919 + 11 + b * 101) % 128000 % V));
    const auto t0 = Clock::now();
    std::vector<backend::AttentionCache*> one = {seqs[size_t(b)]};
    if (b == 0) {
      MT_TRY(e.eval(prompt, false, logits));
      r.prefill_seconds = seconds(t0);
    } else {
      // Other sequences: their prompt token by token through the batched path (B = 1 per step).
      for (int32_t id : prompt) MT_TRY(e.eval_batch(std::span<const int32_t>(&id, 1), one, logits));
    }
    next[size_t(b)] = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
  }
  if (e.expert_scheduler()) e.expert_scheduler()->reset_stats();
  e.set_profile(&r.profile);
  const auto t0 = Clock::now();
  Status failed = ok_status();
  for (int64_t i = 0; i < steps && failed.ok(); ++i) {
    failed = B == 1 ? e.eval(std::span<const int32_t>(next.data(), 1), false, logits) : e.eval_batch(next, seqs, logits);
    const auto ts = Clock::now();
    for (int64_t b = 0; b < B && failed.ok(); ++b)
      next[size_t(b)] = static_cast<int32_t>(std::max_element(logits.begin() + b * V, logits.begin() + (b + 1) * V) -
                                             (logits.begin() + b * V));
    r.sampling_seconds += seconds(ts);
  }
  r.decode_seconds = seconds(t0);
  e.set_profile(nullptr);
  MT_TRY(failed);
  // Routed-expert bytes: every use reads one blob (from RAM, or the disk and then RAM).
  if (const ExpertScheduler* pe = e.expert_scheduler()) {
    r.experts = pe->stats();
    r.blob_bytes = pe->store().manifest().blob_bytes;
    const ExpertSchedulerStats& st = *r.experts;
    r.profile.weight_bytes[static_cast<size_t>(ModelPart::RoutedExperts)] +=
        (st.uses_vram + st.uses_ram + st.uses_nvme_hit + st.uses_nvme_miss) * r.blob_bytes;
  }
  return r;
}

}  // namespace mt::cli
