// Serves many generation requests on one engine: up to `slots` sequences decode together, one
// token each per batched step (each weight read once per step); the rest wait in arrival order
// and take the first slot that frees. Each slot owns a KV cache of the full context, made and
// charged to the memory budget at start-up, so a running server never allocates a cache and a
// request that cannot fit the context is refused before it queues. A request ends at its end of
// sequence, its token limit, the context's end, or when its sink says stop (a stop sequence
// met, or the client gone), which frees its slot at once for the next one.
//
// One thread (the scheduler's) drives the engine; submit() and cancel() may be called from any
// thread. Sinks run on the scheduler thread and must not block.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/engine/engine.h"
#include "runtime/sampling/sampler.h"

namespace mt::server {

enum class FinishReason { Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct GenerationJob {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;         // > 0
  SamplingParams sampling;
  // Each generated token, in order; return false to end the request here (reason Stop).
  std::function<bool(int32_t token)> on_token;
  // Exactly once, after the last on_token: why it ended, and the error text for Error.
  std::function<void(FinishReason, const std::string& error)> on_finish;
};

struct SchedulerStats {
  int64_t queued = 0, running = 0, slots = 0;
  uint64_t completed = 0, cancelled = 0, failed = 0;  // ended by stop/length; cancelled (queued or running); errors
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  double busy_seconds = 0;        // time the engine spent on prefill and decode steps
  uint64_t batched_steps = 0, batched_tokens = 0;  // decode steps and the tokens they carried
  // The engine's expert scheduler, read between steps (packed stores only): uses by tier and
  // bytes read from disk since start-up.
  bool experts = false;
  double expert_cache_hit_rate = 0;
  uint64_t expert_uses_vram = 0, expert_uses_ram = 0, expert_uses_nvme_hit = 0, expert_uses_nvme_miss = 0;
  uint64_t disk_bytes_read = 0;
};

class BatchScheduler {
 public:
  // Makes `slots` caches of `context` tokens (engine.new_sequence); the caller has checked that
  // they fit its memory budget (kv_bytes_per_slot()).
  static Result<std::unique_ptr<BatchScheduler>> start(Engine& engine, int64_t slots, int64_t context);
  ~BatchScheduler();  // finishes every request as Cancelled, then stops the thread
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues a job; returns its id, or an error (nothing queued, no callback) when the prompt is
  // empty or the prompt plus max_tokens does not fit the context.
  Result<uint64_t> submit(GenerationJob job);
  // Ends a queued or running job (Cancelled); false if it is already finished.
  bool cancel(uint64_t id);
  // Ends every queued and running job (Cancelled) and refuses new ones: a server stopping.
  void cancel_all();

  SchedulerStats stats() const;
  int64_t context() const { return context_; }
  // Bytes of one slot's KV cache (what --parallel N costs: N times this).
  static uint64_t kv_bytes_per_slot(Engine& engine, int64_t context);

 private:
  struct Active;
  BatchScheduler(Engine& engine, int64_t context);
  void run();
  void admit(std::unique_lock<std::mutex>& lock);
  void finish(Active& a, FinishReason r, const std::string& error);

  Engine& engine_;
  const int64_t context_;
  std::vector<std::unique_ptr<backend::AttentionCache>> caches_;
  std::vector<std::unique_ptr<Active>> active_;   // one per slot; null when free
  std::deque<std::pair<uint64_t, GenerationJob>> queue_;
  std::vector<uint64_t> cancelled_;               // ids asked to stop, applied by the thread
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool closed_ = false;  // cancel_all(): no new jobs
  uint64_t next_id_ = 1;
  SchedulerStats stats_;
  std::thread thread_;
};

}  // namespace mt::server
