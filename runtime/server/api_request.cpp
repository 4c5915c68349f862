#include "runtime/server/api_request.h"

#include <limits>

#include "runtime/core/json_fields.h"

namespace mt::server {

namespace {

using json = nlohmann::json;
using Fields = JsonFields<json>;

constexpr const char* kWhere = "request";

ApiError bad(std::string param, std::string message) {
  return ApiError{400, "invalid_request_error", std::move(param), std::move(message)};
}

// A field error from JsonFields ("request: field 'x' is ...; it must be ...") as an ApiError.
ApiError field_error(const std::string& param, const std::string& message) { return bad(param, message); }

std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// The body as a JSON object, or the error.
ApiResult<json> parse_body(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("", "the request body is not valid JSON");
  if (!j.is_object()) return bad("", "the request body must be a JSON object, not " + std::string(j.type_name()));
  return j;
}

#define MT_API_TRY(expr)                                  \
  do {                                                    \
    if (auto _e = (expr); _e) return std::move(*_e);      \
  } while (0)

std::optional<ApiError> read_generation(const Fields& f, const RequestLimits& limits, GenerationOptions& g) {
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!f.has(key)) continue;
    auto v = f.integer(key, 1, limits.max_tokens);
    if (!v) return field_error(key, v.error());
    if (g.max_tokens && *g.max_tokens != *v)
      return bad(key, "max_tokens and max_completion_tokens disagree; send one of them");
    g.max_tokens = *v;
  }
  if (auto v = f.number_or("temperature", 1.0, 0.0, 2.0); !v) return field_error("temperature", v.error());
  else g.temperature = *v;
  if (auto v = f.number_or("top_p", 1.0, 0.0, 1.0); !v) return field_error("top_p", v.error());
  else g.top_p = *v;
  if (g.top_p <= 0.0) return bad("top_p", "request: field 'top_p' is 0; it must be greater than 0 and at most 1");
  if (f.has("seed")) {
    auto v = f.integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
    if (!v) return field_error("seed", v.error());
    g.seed = static_cast<uint64_t>(*v);
  }
  if (const json* stop = f.find("stop")) {
    if (stop->is_string()) {
      g.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > limits.max_stop)
        return bad("stop", "request: field 'stop' has " + std::to_string(stop->size()) + " sequences; at most " +
                               std::to_string(limits.max_stop) + " are allowed");
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string())
          return bad("stop", "request: field 'stop[" + std::to_string(i) + "]' is " + shown((*stop)[i]) + "; it must be a string");
        g.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      return bad("stop", "request: field 'stop' is " + shown(*stop) + "; it must be a string or an array of strings");
    }
    for (const auto& s : g.stop)
      if (s.empty()) return bad("stop", "request: field 'stop' holds an empty string; every stop sequence must be non-empty");
  }
  if (auto v = f.boolean_or("stream", false); !v) return field_error("stream", v.error());
  else g.stream = *v;
  if (const json* so = f.find("stream_options")) {
    if (!so->is_object()) return bad("stream_options", "request: field 'stream_options' is " + shown(*so) + "; it must be an object");
    auto v = Fields(*so, kWhere, "stream_options").boolean_or("include_usage", false);
    if (!v) return field_error("stream_options.include_usage", v.error());
    g.include_usage = *v;
  }
  // One choice per request: n > 1 and best_of > 1 are not served.
  for (const char* key : {"n", "best_of"}) {
    auto v = f.integer_or(key, 1, 1, std::numeric_limits<int64_t>::max());
    if (!v) return field_error(key, v.error());
    if (*v != 1) return bad(key, std::string("request: field '") + key + "' is " + std::to_string(*v) + "; this server returns one choice (1)");
  }
  return std::nullopt;
}

std::optional<ApiError> read_model(const Fields& f, std::string& model) {
  auto v = f.string_or("model", "");
  if (!v) return field_error("model", v.error());
  model = *v;
  return std::nullopt;
}

// content: a string, null, or an array of {"type": "text", "text": ...} parts (joined).
std::optional<ApiError> read_content(const json& m, const std::string& path, bool may_be_null, std::string& out) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) {
    if (may_be_null) return std::nullopt;
    return bad(path + ".content", "request: field '" + path + ".content' is missing; it must be a string or an array of text parts");
  }
  if (it->is_string()) {
    out = it->get<std::string>();
    return std::nullopt;
  }
  if (!it->is_array())
    return bad(path + ".content", "request: field '" + path + ".content' is " + shown(*it) +
                                      "; it must be a string or an array of text parts");
  for (size_t k = 0; k < it->size(); ++k) {
    const json& part = (*it)[k];
    const std::string pp = path + ".content[" + std::to_string(k) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      return bad(pp, "request: field '" + pp + "' must be an object with a string 'type'");
    if (part["type"].get<std::string>() != "text")
      return bad(pp + ".type", "request: field '" + pp + ".type' is " + shown(part["type"]) +
                                   "; only \"text\" parts are served (this model reads text)");
    if (!part.contains("text") || !part["text"].is_string())
      return bad(pp + ".text", "request: field '" + pp + ".text' must be a string");
    out += part["text"].get<std::string>();
  }
  return std::nullopt;
}

std::optional<ApiError> read_tool_calls(const json& m, const std::string& path, json& out) {
  const json& tc = m["tool_calls"];
  if (!tc.is_array()) return bad(path + ".tool_calls", "request: field '" + path + ".tool_calls' must be an array");
  out = json::array();
  for (size_t k = 0; k < tc.size(); ++k) {
    const std::string pk = path + ".tool_calls[" + std::to_string(k) + "]";
    const json& c = tc[k];
    if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
      return bad(pk, "request: field '" + pk + "' must be an object with a 'function' object");
    const json& fn = c["function"];
    if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
      return bad(pk + ".function.name", "request: field '" + pk + ".function.name' must be a non-empty string");
    std::string args = "{}";
    if (fn.contains("arguments")) {
      if (!fn["arguments"].is_string())
        return bad(pk + ".function.arguments", "request: field '" + pk + ".function.arguments' must be a string (JSON text)");
      args = fn["arguments"].get<std::string>();
    }
    out.push_back({{"type", "function"}, {"function", {{"name", fn["name"]}, {"arguments", args}}}});
  }
  return std::nullopt;
}

std::optional<ApiError> read_messages(const Fields& f, const RequestLimits& limits, json& out) {
  const json* msgs = f.find("messages");
  if (!msgs) return bad("messages", "request: field 'messages' is missing; it must be a non-empty array of messages");
  if (!msgs->is_array()) return bad("messages", "request: field 'messages' is " + shown(*msgs) + "; it must be an array");
  if (msgs->empty()) return bad("messages", "request: field 'messages' is empty; send at least one message");
  if (msgs->size() > limits.max_messages)
    return bad("messages", "request: field 'messages' has " + std::to_string(msgs->size()) + " messages; at most " +
                               std::to_string(limits.max_messages) + " are allowed");
  out = json::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string path = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return bad(path, "request: field '" + path + "' must be an object");
    auto role_it = m.find("role");
    if (role_it == m.end() || !role_it->is_string())
      return bad(path + ".role", "request: field '" + path + ".role' must be one of system, developer, user, assistant, tool");
    std::string role = role_it->get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      return bad(path + ".role", "request: field '" + path + ".role' is \"" + role_it->get<std::string>() +
                                     "\"; it must be one of system, developer, user, assistant, tool");
    json nm = {{"role", role}};
    const bool calls = role == "assistant" && m.contains("tool_calls") && !m["tool_calls"].is_null();
    std::string content;
    MT_API_TRY(read_content(m, path, /*may_be_null=*/calls, content));
    nm["content"] = content;
    if (calls) {
      json tc;
      MT_API_TRY(read_tool_calls(m, path, tc));
      nm["tool_calls"] = tc;
    }
    if (role == "tool" && m.contains("tool_call_id") && !m["tool_call_id"].is_null()) {
      if (!m["tool_call_id"].is_string())
        return bad(path + ".tool_call_id", "request: field '" + path + ".tool_call_id' must be a string");
      nm["tool_call_id"] = m["tool_call_id"];
    }
    out.push_back(std::move(nm));
  }
  return std::nullopt;
}

std::optional<ApiError> read_tools(const Fields& f, json& out) {
  out = json::array();
  const json* tools = f.find("tools");
  if (tools) {
    if (!tools->is_array()) return bad("tools", "request: field 'tools' is " + shown(*tools) + "; it must be an array");
    for (size_t k = 0; k < tools->size(); ++k) {
      const json& t = (*tools)[k];
      const std::string p = "tools[" + std::to_string(k) + "]";
      if (!t.is_object() || t.value("type", "") != "function" || !t.contains("function") || !t["function"].is_object())
        return bad(p, "request: field '" + p + "' must be {\"type\": \"function\", \"function\": {...}}");
      const json& fn = t["function"];
      if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
        return bad(p + ".function.name", "request: field '" + p + ".function.name' must be a non-empty string");
      if (fn.contains("description") && !fn["description"].is_null() && !fn["description"].is_string())
        return bad(p + ".function.description", "request: field '" + p + ".function.description' must be a string");
      if (fn.contains("parameters") && !fn["parameters"].is_null() && !fn["parameters"].is_object())
        return bad(p + ".function.parameters", "request: field '" + p + ".function.parameters' must be a JSON schema object");
      out.push_back({{"type", "function"}, {"function", fn}});
    }
  }
  if (const json* choice = f.find("tool_choice")) {
    if (!choice->is_string() || (choice->get<std::string>() != "auto" && choice->get<std::string>() != "none"))
      return bad("tool_choice", "request: field 'tool_choice' is " + shown(*choice) + "; this server takes \"auto\" or \"none\"");
    if (choice->get<std::string>() == "none") out = json::array();
  }
  return std::nullopt;
}

// Thinking mode: chat_template_kwargs.thinking (as vLLM and SGLang take it), or "thinking" as a
// boolean or DeepSeek's {"type": "enabled" | "disabled"}.
std::optional<ApiError> read_thinking(const Fields& f, bool& thinking) {
  if (const json* kw = f.find("chat_template_kwargs")) {
    if (!kw->is_object()) return bad("chat_template_kwargs", "request: field 'chat_template_kwargs' must be an object");
    auto v = Fields(*kw, kWhere, "chat_template_kwargs").boolean_or("thinking", thinking);
    if (!v) return field_error("chat_template_kwargs.thinking", v.error());
    thinking = *v;
  }
  if (const json* t = f.find("thinking")) {
    if (t->is_boolean()) {
      thinking = t->get<bool>();
    } else if (t->is_object() && t->contains("type") && (*t)["type"].is_string() &&
               ((*t)["type"] == "enabled" || (*t)["type"] == "disabled")) {
      thinking = (*t)["type"] == "enabled";
    } else {
      return bad("thinking", "request: field 'thinking' is " + shown(*t) +
                                 "; it must be true, false or {\"type\": \"enabled\" | \"disabled\"}");
    }
  }
  return std::nullopt;
}

}  // namespace

nlohmann::json ApiError::to_json() const {
  return {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
                     {"code", nullptr}}}};
}

ApiResult<ChatRequest> parse_chat_request(std::string_view body, const RequestLimits& limits) {
  auto j = parse_body(body);
  if (auto* e = std::get_if<ApiError>(&j)) return *e;
  const Fields f(std::get<json>(j), kWhere);
  ChatRequest r;
  MT_API_TRY(read_model(f, r.model));
  MT_API_TRY(read_messages(f, limits, r.messages));
  MT_API_TRY(read_tools(f, r.tools));
  MT_API_TRY(read_thinking(f, r.thinking));
  MT_API_TRY(read_generation(f, limits, r.gen));
  return r;
}

ApiResult<CompletionRequest> parse_completion_request(std::string_view body, const RequestLimits& limits) {
  auto j = parse_body(body);
  if (auto* e = std::get_if<ApiError>(&j)) return *e;
  const Fields f(std::get<json>(j), kWhere);
  CompletionRequest r;
  MT_API_TRY(read_model(f, r.model));
  const json* p = f.find("prompt");
  if (!p) return bad("prompt", "request: field 'prompt' is missing; it must be a string");
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
  if (!p->is_string())
    return bad("prompt", "request: field 'prompt' is " + shown(*p) + "; it must be a string (or an array of one string)");
  r.prompt = p->get<std::string>();
  if (auto v = f.boolean_or("echo", false); !v) return field_error("echo", v.error());
  else if (*v) return bad("echo", "request: field 'echo' is true; this server does not echo the prompt");
  if (f.has("suffix")) return bad("suffix", "request: field 'suffix' is not served (no fill-in-the-middle)");
  MT_API_TRY(read_generation(f, limits, r.gen));
  return r;
}

}  // namespace mt::server
