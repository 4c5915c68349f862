// Fuzz target: the OpenAI request parsers (HTTP body -> ChatRequest / CompletionRequest) must
// never crash on any bytes; a refusal is a 4xx with a message, an acceptance holds only values
// inside the documented ranges.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/server/api_request.h"

namespace {

const mt::server::RequestLimits kLimits{2048, 64, 4};

void check_refusal(const mt::server::ApiError& e) {
  if (e.status < 400 || e.status > 499 || e.message.empty()) std::abort();
  (void)e.to_json().dump();
}

void check_generation(const mt::server::GenerationOptions& g) {
  if (g.max_tokens && (*g.max_tokens < 1 || *g.max_tokens > kLimits.max_tokens)) std::abort();
  if (!(g.temperature >= 0 && g.temperature <= 2) || !(g.top_p > 0 && g.top_p <= 1)) std::abort();
  if (g.stop.size() > kLimits.max_stop) std::abort();
  for (const auto& s : g.stop)
    if (s.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto chat = mt::server::parse_chat_request(body, kLimits);
  if (auto* e = std::get_if<mt::server::ApiError>(&chat)) {
    check_refusal(*e);
  } else {
    const auto& r = std::get<mt::server::ChatRequest>(chat);
    if (r.messages.empty() || r.messages.size() > kLimits.max_messages) std::abort();
    for (const auto& m : r.messages)
      if (!m["content"].is_string()) std::abort();
    check_generation(r.gen);
  }
  auto completion = mt::server::parse_completion_request(body, kLimits);
  if (auto* e = std::get_if<mt::server::ApiError>(&completion)) check_refusal(*e);
  else check_generation(std::get<mt::server::CompletionRequest>(completion).gen);
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const std::string& s) { seeds.emplace_back(s.begin(), s.end()); };
  add(R"({"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],)"
      R"("max_tokens":16,"temperature":0.7,"top_p":0.9,"seed":1,"stop":["\n"],"stream":true,)"
      R"("stream_options":{"include_usage":true}})");
  add(R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":)"
      R"({"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"a","content":"1"}],)"
      R"("tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto",)"
      R"("chat_template_kwargs":{"thinking":true}})");
  add(R"({"prompt":"Once upon a time","max_tokens":8,"stop":"x","n":1})");
  add(R"({"prompt":["a"],"echo":false,"temperature":0})");
  add(R"({"messages":[]})");
  return seeds;
}
