#include "runtime/server/http_server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "runtime/core/process_memory.h"
#include "runtime/server/api_request.h"
#include "runtime/server/batch_scheduler.h"
#include "runtime/server/output_parser.h"
#include "runtime/server/tool_prompt.h"
#include "runtime/tokenizer/chat_format.h"

namespace mt::server {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// What one request's generation has produced so far, shared by the scheduler thread (writer)
// and the HTTP thread that answers (reader).
struct JobState {
  JobState(const Tokenizer& tok, bool thinking, std::vector<std::string> stop, bool streamed)
      : stream(tok), parser(thinking, std::move(stop)), streamed(streamed) {}
  // Scheduler thread only.
  TextStream stream;
  OutputParser parser;
  const bool streamed;              // deltas are sent as they come (else only `whole` is)
  // Shared, under mu.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<OutputDelta> pending;  // not yet streamed (streamed requests only)
  OutputDelta whole;                // everything, for the non-streamed answer
  std::vector<ToolCall> calls;
  int64_t completion_tokens = 0;
  bool finished = false;
  FinishReason reason = FinishReason::Stop;
  std::string error;
  Clock::time_point submitted = Clock::now();

  void add(const OutputDelta& d) {
    if (d.empty()) return;
    if (streamed) pending.push_back(d);
    whole.reasoning += d.reasoning;
    whole.content += d.content;
  }
};

struct Metrics {
  std::mutex mu;
  std::map<std::string, uint64_t> requests;  // the label text `ENDPOINT",code="STATUS` -> count
  double ttft_sum = 0;
  uint64_t ttft_count = 0;
  void count(const std::string& endpoint, int status) {
    std::lock_guard<std::mutex> lock(mu);
    ++requests[endpoint + "\",code=\"" + std::to_string(status)];
  }
  void first_token(double s) {
    std::lock_guard<std::mutex> lock(mu);
    ttft_sum += s;
    ++ttft_count;
  }
};

std::string finish_text(const JobState& s) {
  if (!s.calls.empty()) return "tool_calls";
  return s.reason == FinishReason::Length ? "length" : "stop";
}

// JSON text; invalid UTF-8 (a token cut from a random model, a byte-level token) is replaced
// rather than thrown on.
std::string text_of(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json usage(int64_t prompt_tokens, int64_t completion) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion}, {"total_tokens", prompt_tokens + completion}};
}

json tool_calls_json(const std::vector<ToolCall>& calls, bool with_index) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json c = {{"id", "call_" + std::to_string(i)},
              {"type", "function"},
              {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (with_index) c["index"] = i;
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

struct HttpServer::Impl {
  Engine& engine;
  ServerOptions opt;
  const Tokenizer* tok = nullptr;
  ChatStyle style = ChatStyle::V3;
  std::unique_ptr<BatchScheduler> sched;
  httplib::Server http;
  Metrics metrics;
  std::atomic<uint64_t> next_id{1};
  int bound_port = 0;
  Clock::time_point started = Clock::now();

  Impl(Engine& e, const ServerOptions& o) : engine(e), opt(o) {}

  void reply_error(httplib::Response& res, const std::string& endpoint, const ApiError& e) {
    res.status = e.status;
    res.set_content(text_of(e.to_json()), "application/json");
    metrics.count(endpoint, e.status);
  }

  bool authorized(const httplib::Request& req, httplib::Response& res, const std::string& endpoint) {
    if (opt.api_key.empty()) return true;
    if (req.get_header_value("Authorization") == "Bearer " + opt.api_key) return true;
    ApiError e{401, "invalid_request_error", "", "missing or wrong API key: send \"Authorization: Bearer KEY\""};
    reply_error(res, endpoint, e);
    return false;
  }

  // Tokens of the request's prompt, or the error (a prompt the context cannot hold).
  std::variant<std::vector<int32_t>, ApiError> tokens_of(const std::string& text, bool add_bos) {
    std::vector<int32_t> ids;
    if (add_bos && tok->add_bos()) ids.push_back(tok->bos_id());
    const std::vector<int32_t> body = tok->encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    if (ids.empty()) return ApiError{400, "invalid_request_error", "", "the prompt is empty"};
    if (static_cast<int64_t>(ids.size()) >= opt.context)
      return ApiError{400, "invalid_request_error", "messages",
                      "the prompt is " + std::to_string(ids.size()) + " tokens; this server's context is " +
                          std::to_string(opt.context) + " tokens for prompt and answer together (serve --context)"};
    return ids;
  }

  // Submits the generation; the job's state fills as tokens come.
  std::variant<std::pair<uint64_t, std::shared_ptr<JobState>>, ApiError> submit(std::vector<int32_t> prompt,
                                                                               const GenerationOptions& g,
                                                                               bool thinking) {
    const int64_t room = opt.context - static_cast<int64_t>(prompt.size());
    if (g.max_tokens && *g.max_tokens > room)
      return ApiError{400, "invalid_request_error", "max_tokens",
                      "the prompt is " + std::to_string(prompt.size()) + " tokens and max_tokens is " +
                          std::to_string(*g.max_tokens) + "; together they exceed this server's context of " +
                          std::to_string(opt.context) + " tokens"};
    auto state = std::make_shared<JobState>(*tok, thinking, g.stop, g.stream);
    GenerationJob job;
    job.prompt = std::move(prompt);
    job.max_tokens = g.max_tokens.value_or(room);
    job.sampling.temperature = static_cast<float>(g.temperature);
    job.sampling.top_p = static_cast<float>(g.top_p);
    job.sampling.seed = g.seed.value_or(next_id.load());
    job.on_token = [state, this](int32_t id) {
      const OutputDelta d = state->parser.push(state->stream.push(id));
      std::lock_guard<std::mutex> lock(state->mu);
      if (state->completion_tokens++ == 0) {
        metrics.first_token(std::chrono::duration<double>(Clock::now() - state->submitted).count());
      }
      state->add(d);
      state->cv.notify_all();
      return !state->parser.stopped();
    };
    job.on_finish = [state](FinishReason r, const std::string& error) {
      OutputDelta d = state->parser.push(state->stream.flush());
      const OutputDelta rest = state->parser.finish();
      d.reasoning += rest.reasoning;
      d.content += rest.content;
      std::lock_guard<std::mutex> lock(state->mu);
      state->add(d);
      state->calls = state->parser.tool_calls();
      state->reason = r;
      state->error = error;
      state->finished = true;
      state->cv.notify_all();
    };
    auto id = sched->submit(std::move(job));
    if (!id && id.error().find("shutting down") != std::string::npos)
      return ApiError{503, "server_error", "", "the server is shutting down"};
    if (!id) return ApiError{400, "invalid_request_error", "", id.error()};
    return std::make_pair(*id, state);
  }

  // POST /v1/chat/completions and /v1/completions.
  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    if (!authorized(req, res, endpoint)) return;
    const RequestLimits limits{opt.context, 4096, 4};
    std::vector<int32_t> prompt;
    GenerationOptions gen;
    bool thinking = false;
    if (chat) {
      auto r = parse_chat_request(req.body, limits);
      if (auto* e = std::get_if<ApiError>(&r)) return reply_error(res, endpoint, *e);
      ChatRequest& c = std::get<ChatRequest>(r);
      if (c.thinking && style != ChatStyle::V31)
        return reply_error(res, endpoint, {400, "invalid_request_error", "thinking",
                                           "thinking mode needs a V3.1/V3.2 chat template; this model has the V3 one"});
      ChatOptions co;
      co.add_generation_prompt = true;
      co.style = style;
      co.thinking = c.thinking;
      auto rendered = render_chat(with_tool_section(c.messages, c.tools, style), co);
      if (!rendered) return reply_error(res, endpoint, {400, "invalid_request_error", "messages", rendered.error()});
      auto ids = tokens_of(*rendered, /*add_bos=*/false);  // the template writes BOS itself
      if (auto* e = std::get_if<ApiError>(&ids)) return reply_error(res, endpoint, *e);
      prompt = std::move(std::get<std::vector<int32_t>>(ids));
      gen = c.gen;
      thinking = c.thinking;
    } else {
      auto r = parse_completion_request(req.body, limits);
      if (auto* e = std::get_if<ApiError>(&r)) return reply_error(res, endpoint, *e);
      CompletionRequest& c = std::get<CompletionRequest>(r);
      auto ids = tokens_of(c.prompt, /*add_bos=*/true);
      if (auto* e = std::get_if<ApiError>(&ids)) return reply_error(res, endpoint, *e);
      prompt = std::move(std::get<std::vector<int32_t>>(ids));
      gen = c.gen;
    }
    const auto prompt_tokens = static_cast<int64_t>(prompt.size());
    auto submitted = submit(std::move(prompt), gen, thinking);
    if (auto* e = std::get_if<ApiError>(&submitted)) return reply_error(res, endpoint, *e);
    auto [job_id, state] = std::get<std::pair<uint64_t, std::shared_ptr<JobState>>>(submitted);
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
    const auto created = static_cast<int64_t>(std::time(nullptr));
    const std::string object = chat ? "chat.completion" : "text_completion";

    if (!gen.stream) {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait(lock, [&] { return state->finished; });
      if (state->reason == FinishReason::Error)
        return reply_error(res, endpoint, {500, "server_error", "", "generation failed: " + state->error});
      json choice = {{"index", 0}, {"finish_reason", finish_text(*state)}};
      if (chat) {
        json msg = {{"role", "assistant"}, {"content", state->whole.content}};
        if (thinking) msg["reasoning_content"] = state->whole.reasoning;
        if (!state->calls.empty()) msg["tool_calls"] = tool_calls_json(state->calls, false);
        choice["message"] = msg;
      } else {
        choice["text"] = state->whole.content;
      }
      json body = {{"id", id},          {"object", object}, {"created", created},
                   {"model", opt.model_name}, {"choices", json::array({choice})},
                   {"usage", usage(prompt_tokens, state->completion_tokens)}};
      res.set_content(text_of(body), "application/json");
      metrics.count(endpoint, 200);
      return;
    }
    metrics.count(endpoint, 200);  // the stream starts

    // Server-sent events: one chunk per delta, then the finish, the usage if asked, [DONE].
    const std::string chunk_object = chat ? "chat.completion.chunk" : "text_completion";
    const std::string model = opt.model_name;
    auto chunk = [=](json choice) {
      return json{{"id", id}, {"object", chunk_object}, {"created", created}, {"model", model},
                  {"choices", json::array({std::move(choice)})}};
    };
    auto send = [](httplib::DataSink& sink, const json& j) {
      const std::string line = "data: " + text_of(j) + "\n\n";
      return sink.write(line.data(), line.size());
    };
    auto started = std::make_shared<bool>(false);
    BatchScheduler* s = sched.get();
    const bool include_usage = gen.include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](size_t, httplib::DataSink& sink) {
          if (!*started) {
            *started = true;
            json first = chat ? json{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}}
                              : json{{"index", 0}, {"text", ""}, {"finish_reason", nullptr}};
            if (!send(sink, chunk(first))) return s->cancel(job_id), false;
          }
          std::unique_lock<std::mutex> lock(state->mu);
          state->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return state->finished || !state->pending.empty(); });
          std::deque<OutputDelta> deltas;
          deltas.swap(state->pending);
          const bool finished = state->finished;
          lock.unlock();
          for (const OutputDelta& d : deltas) {
            json delta = json::object();
            if (chat) {
              if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
              if (!d.content.empty()) delta["content"] = d.content;
            }
            json choice = chat ? json{{"index", 0}, {"delta", delta}, {"finish_reason", nullptr}}
                               : json{{"index", 0}, {"text", d.content}, {"finish_reason", nullptr}};
            if (!send(sink, chunk(choice))) return s->cancel(job_id), false;
          }
          if (!finished) {
            // Nothing new: make sure the client is still there (a closed socket frees the slot).
            if (deltas.empty() && !sink.is_writable()) return s->cancel(job_id), false;
            return true;
          }
          lock.lock();
          if (state->reason == FinishReason::Error) {
            json err = ApiError{500, "server_error", "", "generation failed: " + state->error}.to_json();
            lock.unlock();
            send(sink, err);
            sink.done();
            return true;
          }
          json last = chat ? json{{"index", 0}, {"delta", json::object()}, {"finish_reason", finish_text(*state)}}
                           : json{{"index", 0}, {"text", ""}, {"finish_reason", finish_text(*state)}};
          if (chat && !state->calls.empty()) last["delta"]["tool_calls"] = tool_calls_json(state->calls, true);
          const int64_t completion = state->completion_tokens;
          lock.unlock();
          if (!send(sink, chunk(last))) return false;
          if (include_usage) {
            json u = chunk(json());
            u["choices"] = json::array();
            u["usage"] = usage(prompt_tokens, completion);
            if (!send(sink, u)) return false;
          }
          const std::string done = "data: [DONE]\n\n";
          sink.write(done.data(), done.size());
          sink.done();
          return true;
        },
        [=](bool success) {
          if (!success) s->cancel(job_id);  // the client went away: free the slot
        });
  }

  std::string metrics_text() {
    const SchedulerStats s = sched->stats();
    std::string out;
    auto line = [&](const char* name, const char* type, const char* help, double v) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
             std::to_string(v) + "\n";
    };
    {
      std::lock_guard<std::mutex> lock(metrics.mu);
      out += "# HELP moetier_requests_total HTTP requests answered, by endpoint and status\n"
             "# TYPE moetier_requests_total counter\n";
      for (const auto& [k, v] : metrics.requests)
        out += "moetier_requests_total{endpoint=\"" + k + "\"} " + std::to_string(v) + "\n";
      line("moetier_time_to_first_token_seconds_sum", "counter", "sum of the time from submission to the first token",
           metrics.ttft_sum);
      line("moetier_time_to_first_token_seconds_count", "counter", "requests that produced a first token",
           double(metrics.ttft_count));
    }
    line("moetier_queue_depth", "gauge", "requests waiting for a slot", double(s.queued));
    line("moetier_running_sequences", "gauge", "sequences decoding now", double(s.running));
    line("moetier_slots", "gauge", "sequences decoded together at most (--parallel)", double(s.slots));
    line("moetier_prompt_tokens_total", "counter", "prompt tokens prefilled", double(s.prompt_tokens));
    line("moetier_generated_tokens_total", "counter", "tokens generated", double(s.generated_tokens));
    line("moetier_decode_tokens_per_second", "gauge", "tokens per second of engine time, all sequences",
         s.busy_seconds > 0 ? double(s.generated_tokens) / s.busy_seconds : 0.0);
    line("moetier_requests_completed_total", "counter", "generations ended by stop or length", double(s.completed));
    line("moetier_requests_cancelled_total", "counter", "generations cancelled (client gone, shutdown)",
         double(s.cancelled));
    line("moetier_requests_failed_total", "counter", "generations that failed in the engine", double(s.failed));
    if (s.experts) {
      line("moetier_expert_cache_hit_rate", "gauge", "share of expert reads served by the RAM cache",
           s.expert_cache_hit_rate);
      out += "# HELP moetier_expert_uses_total routed-expert uses by the tier that served them\n"
             "# TYPE moetier_expert_uses_total counter\n";
      out += "moetier_expert_uses_total{tier=\"vram\"} " + std::to_string(s.expert_uses_vram) + "\n";
      out += "moetier_expert_uses_total{tier=\"ram\"} " + std::to_string(s.expert_uses_ram) + "\n";
      out += "moetier_expert_uses_total{tier=\"nvme_hit\"} " + std::to_string(s.expert_uses_nvme_hit) + "\n";
      out += "moetier_expert_uses_total{tier=\"nvme_miss\"} " + std::to_string(s.expert_uses_nvme_miss) + "\n";
      line("moetier_disk_read_bytes_total", "counter", "expert bytes read from disk", double(s.disk_bytes_read));
    }
    line("moetier_process_resident_bytes", "gauge", "process RSS", double(process_rss_bytes()));
    line("moetier_uptime_seconds", "gauge", "seconds since start-up",
         std::chrono::duration<double>(Clock::now() - started).count());
    return out;
  }

  void routes() {
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(text_of(json{{"status", "ok"}}), "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res, "/v1/models")) return;
      json m = {{"id", opt.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "moetier"}};
      res.set_content(text_of(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
      metrics.count("/v1/models", 200);
    });
    http.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res, "/metrics")) return;
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    http.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });
    http.Post("/v1/completions",
              [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
    // Anything else: OpenAI's error object with a 404 (or 413 for an oversized body).
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string msg = res.status == 413 ? "the request body is too large"
                              : res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                                  : "bad request";
      res.set_content(text_of(ApiError{res.status, "invalid_request_error", "", msg}.to_json()), "application/json");
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      res.status = 500;
      res.set_content(text_of(ApiError{500, "server_error", "", "internal error"}.to_json()), "application/json");
    });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::start(Engine& engine, const ServerOptions& o) {
  auto impl = std::make_unique<Impl>(engine, o);
  MT_ASSIGN(impl->tok, engine.tokenizer());
  impl->style = detect_chat_style(impl->tok->chat_template());
  MT_ASSIGN(impl->sched, BatchScheduler::start(engine, o.parallel, o.context));
  impl->http.set_payload_max_length(o.max_body_bytes);
  impl->http.set_read_timeout(o.read_timeout_seconds, 0);
  impl->http.set_keep_alive_timeout(2);  // an idle keep-alive connection holds a thread (and delays stop) this long
  // Streaming answers hold a thread each: room for every slot, the queue and short requests.
  const size_t threads = static_cast<size_t>(std::max<int64_t>(16, 4 * o.parallel));
  impl->http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  impl->routes();
  if (o.port == 0) {
    impl->bound_port = impl->http.bind_to_any_port(o.host);
    if (impl->bound_port <= 0) return make_error("cannot listen on " + o.host + " (any port)");
  } else {
    if (!impl->http.bind_to_port(o.host, o.port))
      return make_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                        " (in use, or not an address of this machine? try --port)");
    impl->bound_port = o.port;
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

Status HttpServer::serve() {
  if (!impl_->http.listen_after_bind()) return make_error("the HTTP server stopped with an error");
  return ok_status();
}

void HttpServer::stop() {
  if (!impl_) return;
  // Streams end first (their jobs cancelled), so that the HTTP threads can finish.
  impl_->sched->cancel_all();
  impl_->http.stop();
}

int HttpServer::port() const { return impl_->bound_port; }

}  // namespace mt::server
