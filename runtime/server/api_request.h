// OpenAI-compatible request bodies (POST /v1/chat/completions, /v1/completions) parsed and
// checked into plain structs. Untrusted input: every field is type- and range-checked (through
// JsonFields), unknown roles, empty message lists and unsupported options are refused, and each
// refusal is an ApiError that becomes a 4xx with OpenAI's error object. What depends on the
// model (the prompt's length against the context, rendering the chat) is checked by the server.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt::server {

// An OpenAI-style error: HTTP status, `type`, the offending parameter (may be empty) and a
// message that names the field and what is allowed.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string param;
  std::string message;
  // {"error": {"message": ..., "type": ..., "param": ..., "code": null}}
  nlohmann::json to_json() const;
};

template <class T>
using ApiResult = std::variant<T, ApiError>;

// Sampling and stopping options shared by both endpoints.
struct GenerationOptions {
  std::optional<int64_t> max_tokens;   // max_tokens or max_completion_tokens; absent: up to the context
  double temperature = 1.0;            // [0, 2]; 0 = greedy
  double top_p = 1.0;                  // (0, 1]
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;       // at most 4 non-empty strings
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
};

struct ChatRequest {
  std::string model;                   // as sent ("" when absent); informative
  // Messages normalised for render_chat: role, content as one string (text parts joined), and
  // an assistant's tool_calls / a tool's tool_call_id kept.
  nlohmann::json messages = nlohmann::json::array();
  nlohmann::json tools = nlohmann::json::array();  // [{"type":"function","function":{name, description, parameters}}]
  bool thinking = false;               // V3.1/V3.2 thinking mode (chat_template_kwargs.thinking or "thinking")
  GenerationOptions gen;
};

struct CompletionRequest {
  std::string model;
  std::string prompt;
  GenerationOptions gen;
};

// Limits a request is checked against before any model work.
struct RequestLimits {
  int64_t max_tokens = 1 << 20;        // the server passes its context length
  size_t max_messages = 4096;
  size_t max_stop = 4;
};

ApiResult<ChatRequest> parse_chat_request(std::string_view body, const RequestLimits& limits);
ApiResult<CompletionRequest> parse_completion_request(std::string_view body, const RequestLimits& limits);

}  // namespace mt::server
