#include "runtime/server/batch_scheduler.h"

#include <algorithm>
#include <chrono>

namespace mt::server {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "error";
}

struct BatchScheduler::Active {
  uint64_t id = 0;
  GenerationJob job;
  Sampler sampler;
  backend::AttentionCache* cache = nullptr;
  int64_t generated = 0;
  int32_t next = -1;       // the token to feed at the next step
  bool prefilled = false;
  bool done = false;
  Active(uint64_t i, GenerationJob j, backend::AttentionCache* c)
      : id(i), job(std::move(j)), sampler(job.sampling), cache(c) {}
};

BatchScheduler::BatchScheduler(Engine& engine, int64_t context) : engine_(engine), context_(context) {}

Result<std::unique_ptr<BatchScheduler>> BatchScheduler::start(Engine& engine, int64_t slots, int64_t context) {
  if (slots < 1) return make_error("the server needs at least one slot (--parallel 1)");
  if (context < 2) return make_error("the context must hold at least 2 tokens");
  std::unique_ptr<BatchScheduler> s(new BatchScheduler(engine, context));
  for (int64_t i = 0; i < slots; ++i) s->caches_.push_back(engine.new_sequence(context));
  s->active_.resize(static_cast<size_t>(slots));
  s->stats_.slots = slots;
  s->thread_ = std::thread([p = s.get()] { p->run(); });
  return s;
}

uint64_t BatchScheduler::kv_bytes_per_slot(Engine& engine, int64_t context) {
  return engine.new_sequence(context)->bytes();
}

BatchScheduler::~BatchScheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<uint64_t> BatchScheduler::submit(GenerationJob job) {
  if (job.prompt.empty()) return make_error("the prompt is empty");
  if (job.max_tokens < 1) return make_error("max_tokens must be at least 1");
  const int64_t need = static_cast<int64_t>(job.prompt.size()) + job.max_tokens;
  if (static_cast<int64_t>(job.prompt.size()) >= context_)
    return make_error("the prompt is " + std::to_string(job.prompt.size()) + " tokens; the context holds " +
                      std::to_string(context_) + " (prompt and answer together)");
  if (need > context_)
    return make_error("the prompt (" + std::to_string(job.prompt.size()) + " tokens) plus max_tokens (" +
                      std::to_string(job.max_tokens) + ") is " + std::to_string(need) + " tokens; the context holds " +
                      std::to_string(context_));
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || closed_) return make_error("the server is shutting down");
    id = next_id_++;
    queue_.emplace_back(id, std::move(job));
    ++stats_.queued;
  }
  wake_.notify_all();
  return id;
}

bool BatchScheduler::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool queued = std::any_of(queue_.begin(), queue_.end(), [&](const auto& q) { return q.first == id; });
    const bool running = std::any_of(active_.begin(), active_.end(), [&](const auto& a) { return a && a->id == id; });
    if (!queued && !running) return false;
    cancelled_.push_back(id);
  }
  wake_.notify_all();
  return true;
}

void BatchScheduler::cancel_all() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    for (const auto& q : queue_) cancelled_.push_back(q.first);
    for (const auto& a : active_)
      if (a) cancelled_.push_back(a->id);
  }
  wake_.notify_all();
}

SchedulerStats BatchScheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BatchScheduler::admit(std::unique_lock<std::mutex>&) {
  for (size_t s = 0; s < active_.size() && !queue_.empty(); ++s) {
    if (active_[s]) continue;
    auto [id, job] = std::move(queue_.front());
    queue_.pop_front();
    --stats_.queued;
    ++stats_.running;
    caches_[s]->set_size(0);
    active_[s] = std::make_unique<Active>(id, std::move(job), caches_[s].get());
  }
}

void BatchScheduler::finish(Active& a, FinishReason r, const std::string& error) {
  if (a.done) return;
  a.done = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    (r == FinishReason::Cancelled ? stats_.cancelled : r == FinishReason::Error ? stats_.failed : stats_.completed)++;
    --stats_.running;  // before on_finish, so that a caller woken by it sees the job gone
  }
  if (a.job.on_finish) a.job.on_finish(r, error);
}

void BatchScheduler::run() {
  using Clock = std::chrono::steady_clock;
  std::vector<float> logits;
  const int64_t V = engine_.config().vocab_size;
  const auto eos = static_cast<int32_t>(engine_.config().eos_token_id);

  // A sampled token: ends the job at end of sequence, its limit, the context's end, or when
  // its sink says stop; otherwise it is fed at the next step.
  auto deliver = [&](Active& a, int32_t token) {
    if (token == eos) return finish(a, FinishReason::Stop, "");
    ++a.generated;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.generated_tokens;
    }
    if (a.job.on_token && !a.job.on_token(token)) return finish(a, FinishReason::Stop, "");
    if (a.generated >= a.job.max_tokens || a.cache->size() + 1 > context_) return finish(a, FinishReason::Length, "");
    a.next = token;
  };

  while (true) {
    std::vector<std::pair<GenerationJob, FinishReason>> dropped;  // queued jobs cancelled
    bool stopping = false;  // stopping_, read under the lock
    {
      std::unique_lock<std::mutex> lock(mu_);
      stopping = stopping_;
      // Cancellations: a queued job never starts; a running one ends now.
      for (uint64_t id : cancelled_) {
        auto q = std::find_if(queue_.begin(), queue_.end(), [&](const auto& e) { return e.first == id; });
        if (q != queue_.end()) {
          dropped.emplace_back(std::move(q->second), FinishReason::Cancelled);
          queue_.erase(q);
          --stats_.queued;
          ++stats_.cancelled;
        }
        for (auto& a : active_)
          if (a && a->id == id && !a->done) {
            lock.unlock();
            finish(*a, FinishReason::Cancelled, "");
            lock.lock();
          }
      }
      cancelled_.clear();
      if (stopping_) {
        for (auto& q : queue_) dropped.emplace_back(std::move(q.second), FinishReason::Cancelled);
        stats_.cancelled += queue_.size();
        stats_.queued = 0;
        queue_.clear();
      }
      // Free the slots of finished jobs, then fill them in arrival order.
      for (auto& a : active_)
        if (a && a->done) a.reset();
      if (!stopping_) admit(lock);
      const bool any = std::any_of(active_.begin(), active_.end(), [](const auto& a) { return a != nullptr; });
      if (!any && dropped.empty()) {
        if (stopping_) break;
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !cancelled_.empty(); });
        continue;
      }
    }
    for (auto& [job, reason] : dropped)
      if (job.on_finish) job.on_finish(reason, "");
    if (stopping) {
      for (auto& a : active_)
        if (a && !a->done) finish(*a, FinishReason::Cancelled, "");
      continue;  // frees the slots, then leaves
    }

    const auto t0 = Clock::now();
    // Prefill the jobs that just took a slot, one at a time; their first token comes from it.
    for (auto& a : active_) {
      if (!a || a->done || a->prefilled) continue;
      a->prefilled = true;
      if (Status s = engine_.eval_sequence(*a->cache, a->job.prompt, false, logits); !s) {
        finish(*a, FinishReason::Error, s.error());
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.prompt_tokens += a->job.prompt.size();
      }
      deliver(*a, a->sampler.sample(logits.data(), V));
    }
    // One batched decode step over every running job.
    std::vector<int32_t> ids;
    std::vector<backend::AttentionCache*> caches;
    std::vector<Active*> who;
    for (auto& a : active_)
      if (a && !a->done && a->prefilled) {
        ids.push_back(a->next);
        caches.push_back(a->cache);
        who.push_back(a.get());
      }
    if (!ids.empty()) {
      if (Status s = engine_.eval_batch(ids, caches, logits); !s) {
        for (Active* a : who) finish(*a, FinishReason::Error, s.error());
      } else {
        for (size_t b = 0; b < who.size(); ++b) deliver(*who[b], who[b]->sampler.sample(logits.data() + b * V, V));
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.batched_steps;
        stats_.batched_tokens += ids.size();
      }
    }
    const ExpertScheduler* es = engine_.expert_scheduler();
    const ExpertSchedulerStats est = es ? es->stats() : ExpertSchedulerStats{};
    std::lock_guard<std::mutex> lock(mu_);
    stats_.busy_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    if (es) {
      stats_.experts = true;
      stats_.expert_cache_hit_rate = est.cache.hit_rate();
      stats_.expert_uses_vram = est.uses_vram;
      stats_.expert_uses_ram = est.uses_ram;
      stats_.expert_uses_nvme_hit = est.uses_nvme_hit;
      stats_.expert_uses_nvme_miss = est.uses_nvme_miss;
      stats_.disk_bytes_read = est.cache.bytes_read;
    }
  }
}

}  // namespace mt::server
