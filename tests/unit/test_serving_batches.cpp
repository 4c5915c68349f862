// The server's batch scheduler on a tiny synthetic model: concurrent greedy jobs give exactly
// the tokens each gives alone (decoded here through Engine::eval, one sequence at a time),
// batching actually happens, and stops, cancellations, refusals and shutdown end each job once.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <unistd.h>

#include "runtime/engine/engine.h"
#include "runtime/server/batch_scheduler.h"
#include "tools/moetier/synthetic_model.h"

using namespace mt;
using namespace mt::server;
namespace fs = std::filesystem;

namespace {

fs::path tiny_model() {
  static const fs::path dir = [] {
    SyntheticModelOptions o;
    o.config = *preset_config("tiny", ModelArch::V3);
    o.seed = 23;
    o.tokenizer = fs::path(MOETIER_TEST_DATA) / "tokenizer-deepseek-v3";
    o.out = fs::temp_directory_path() / ("moetier_test_serving_" + std::to_string(::getpid()));
    fs::remove_all(o.out);
    Status st = write_synthetic_model(o, nullptr);
    if (!st.ok()) FAIL(st.error());
    return o.out;
  }();
  return dir;
}

std::unique_ptr<Engine> open_engine(int64_t context) {
  EngineOptions eo;
  eo.context = context;
  eo.announce_device = false;
  auto e = Engine::open(tiny_model(), eo);
  REQUIRE(e.ok());
  return std::move(*e);
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// One sequence alone, greedy, through the engine's own cache: the independent formulation.
std::vector<int32_t> alone(Engine& e, const std::vector<int32_t>& prompt, int64_t n) {
  e.reset();
  std::vector<float> logits;
  REQUIRE(e.eval(prompt, false, logits).ok());
  std::vector<int32_t> out;
  const auto eos = static_cast<int32_t>(e.config().eos_token_id);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = argmax(logits);
    if (t == eos) break;
    out.push_back(t);
    if (i + 1 < n) REQUIRE(e.eval(std::span<const int32_t>(&t, 1), false, logits).ok());
  }
  return out;
}

// Collects every job's tokens and finish, and waits for them.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, std::vector<int32_t>> tokens;
  std::map<int, FinishReason> finished;
  std::map<int, int> finish_calls;

  GenerationJob job(int key, std::vector<int32_t> prompt, int64_t max_tokens, int stop_after = -1) {
    GenerationJob j;
    j.prompt = std::move(prompt);
    j.max_tokens = max_tokens;
    j.on_token = [this, key, stop_after](int32_t t) {
      std::lock_guard<std::mutex> lock(mu);
      tokens[key].push_back(t);
      cv.notify_all();
      return stop_after < 0 || static_cast<int>(tokens[key].size()) < stop_after;
    };
    j.on_finish = [this, key](FinishReason r, const std::string&) {
      std::lock_guard<std::mutex> lock(mu);
      finished[key] = r;
      ++finish_calls[key];
      cv.notify_all();
    };
    return j;
  }
  bool wait(size_t n_finished) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(300), [&] { return finished.size() >= n_finished; });
  }
};

std::vector<int32_t> prompt_of(int k, int64_t V) {
  std::vector<int32_t> p;
  for (int i = 0; i < 3 + (k * 5) % 9; ++i) p.push_back(static_cast<int32_t>((i * 977 + k * 131 + 7) % V));
  return p;
}

}  // namespace

TEST_CASE("concurrent greedy jobs give exactly the tokens of each alone, batched", "[server]") {
  auto engine = open_engine(64);
  const int64_t V = engine->config().vocab_size;
  const int jobs = 7;
  const int64_t n = 6;
  std::map<int, std::vector<int32_t>> expect;
  for (int k = 0; k < jobs; ++k) expect[k] = alone(*engine, prompt_of(k, V), n);

  Collector c;
  {
    auto sched = BatchScheduler::start(*engine, 3, 64);
    REQUIRE(sched.ok());
    for (int k = 0; k < jobs; ++k) REQUIRE((*sched)->submit(c.job(k, prompt_of(k, V), n)).ok());
    REQUIRE(c.wait(jobs));
    const SchedulerStats s = (*sched)->stats();
    CHECK(s.completed == static_cast<uint64_t>(jobs));
    CHECK(s.cancelled == 0);
    CHECK(s.failed == 0);
    CHECK(s.batched_tokens > s.batched_steps);  // steps carried more than one sequence
    CHECK(s.running + s.queued == 0);
  }
  for (int k = 0; k < jobs; ++k) {
    INFO("job " << k);
    CHECK(c.tokens[k] == expect[k]);
    CHECK(c.finish_calls[k] == 1);
    CHECK(c.finished[k] == (expect[k].size() == static_cast<size_t>(n) ? FinishReason::Length : FinishReason::Stop));
  }
}

TEST_CASE("a stopped or cancelled job frees its slot at once; bad jobs are refused; shutdown cancels", "[server]") {
  auto engine = open_engine(48);
  const int64_t V = engine->config().vocab_size;
  Collector c;
  auto sched_r = BatchScheduler::start(*engine, 1, 48);
  REQUIRE(sched_r.ok());
  auto& sched = *sched_r;

  // One slot: a job whose sink says stop after 2 tokens, then one that runs behind it.
  REQUIRE(sched->submit(c.job(0, prompt_of(0, V), 20, 2)).ok());
  REQUIRE(sched->submit(c.job(1, prompt_of(1, V), 3)).ok());
  REQUIRE(c.wait(2));
  CHECK(c.finished[0] == FinishReason::Stop);
  CHECK(c.tokens[0].size() == 2);
  CHECK(c.tokens[1] == alone(*engine, prompt_of(1, V), 3));  // the engine is idle between waits

  // Cancel a running job after its first token; the queued one behind it still runs.
  auto long_id = sched->submit(c.job(2, prompt_of(2, V), 40));
  REQUIRE(long_id.ok());
  REQUIRE(sched->submit(c.job(3, prompt_of(3, V), 2)).ok());
  {
    std::unique_lock<std::mutex> lock(c.mu);
    REQUIRE(c.cv.wait_for(lock, std::chrono::seconds(300), [&] { return !c.tokens[2].empty(); }));
  }
  CHECK(sched->cancel(*long_id));
  REQUIRE(c.wait(4));
  CHECK(c.finished[2] == FinishReason::Cancelled);
  CHECK(c.tokens[2].size() < 40);
  CHECK(c.finished[3] != FinishReason::Cancelled);
  CHECK_FALSE(sched->cancel(*long_id));  // already finished

  // Refused before queueing: too long for the context, empty, no tokens asked.
  auto too_long = sched->submit(c.job(9, std::vector<int32_t>(40, 5), 9));
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.error().find("context holds 48") != std::string::npos);
  CHECK_FALSE(sched->submit(c.job(9, {}, 4)).ok());
  CHECK_FALSE(sched->submit(c.job(9, {1, 2}, 0)).ok());

  // Shutdown with work queued: every job ends exactly once, as cancelled.
  REQUIRE(sched->submit(c.job(5, prompt_of(5, V), 30)).ok());
  REQUIRE(sched->submit(c.job(6, prompt_of(6, V), 30)).ok());
  sched.reset();
  CHECK(c.finished.size() == 6);
  CHECK(c.finished[6] == FinishReason::Cancelled);
  for (auto& [k, calls] : c.finish_calls) CHECK(calls == 1);
  CHECK(c.finished.count(9) == 0);
}
