#include "runtime/server/output_parser.h"

#include <algorithm>

namespace mt::server {

namespace {

constexpr std::string_view kThinkEnd = "</think>";
constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kSep = "<｜tool▁sep｜>";

// Length of the longest suffix of `text` that is a proper prefix of `marker`: text that may
// still become the marker and must be held back.
size_t partial_suffix(std::string_view text, std::string_view marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  return 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

OutputParser::OutputParser(bool thinking, std::vector<std::string> stop)
    : phase_(thinking ? Phase::Reasoning : Phase::Content), stop_(std::move(stop)) {
  std::erase_if(stop_, [](const std::string& s) { return s.empty(); });
}

OutputDelta OutputParser::push(std::string_view text) {
  OutputDelta out;
  if (phase_ == Phase::Done) return out;
  if (phase_ == Phase::ToolCalls) {
    call_text_ += text;
    return out;
  }
  held_ += text;
  if (phase_ == Phase::Reasoning) {
    const size_t pos = held_.find(kThinkEnd);
    if (pos == std::string::npos) {
      const size_t keep = partial_suffix(held_, kThinkEnd);
      out.reasoning = held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return out;
    }
    out.reasoning = held_.substr(0, pos);
    held_.erase(0, pos + kThinkEnd.size());
    phase_ = Phase::Content;
  }
  // Content: the earliest stop sequence or tool-call opening ends it.
  size_t best = std::string::npos, best_len = 0;
  bool best_is_call = false;
  auto consider = [&](std::string_view marker, bool is_call) {
    const size_t pos = held_.find(marker);
    if (pos != std::string::npos && (best == std::string::npos || pos < best)) {
      best = pos;
      best_len = marker.size();
      best_is_call = is_call;
    }
  };
  for (const auto& s : stop_) consider(s, false);
  consider(kCallsBegin, true);
  if (best != std::string::npos) {
    out.content = held_.substr(0, best);
    if (best_is_call) {
      phase_ = Phase::ToolCalls;
      call_text_ = held_.substr(best + best_len);
    } else {
      stopped_ = true;
      phase_ = Phase::Done;
    }
    held_.clear();
    return out;
  }
  size_t keep = partial_suffix(held_, kCallsBegin);
  for (const auto& s : stop_) keep = std::max(keep, partial_suffix(held_, s));
  out.content = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

OutputDelta OutputParser::finish() {
  OutputDelta out;
  switch (phase_) {
    case Phase::Reasoning: out.reasoning = std::move(held_); break;  // thinking never closed
    case Phase::Content: out.content = std::move(held_); break;
    case Phase::ToolCalls:
      parse_tool_calls();
      if (malformed_) out.content = std::string(kCallsBegin) + call_text_;
      break;
    case Phase::Done: break;
  }
  held_.clear();
  phase_ = Phase::Done;
  return out;
}

void OutputParser::parse_tool_calls() {
  std::string_view rest = call_text_;
  std::vector<ToolCall> calls;
  while (true) {
    rest = trim(rest);
    if (rest.empty() || rest.substr(0, kCallsEnd.size()) == kCallsEnd) break;
    if (rest.substr(0, kCallBegin.size()) != kCallBegin) return void(malformed_ = true);
    rest.remove_prefix(kCallBegin.size());
    const size_t sep = rest.find(kSep), end = rest.find(kCallEnd);
    if (sep == std::string_view::npos || end == std::string_view::npos || sep > end) return void(malformed_ = true);
    std::string_view head = trim(rest.substr(0, sep));
    std::string_view body = rest.substr(sep + kSep.size(), end - sep - kSep.size());
    rest.remove_prefix(end + kCallEnd.size());
    ToolCall call;
    // V3: "function<sep>NAME\n```json\nARGS\n```"; V3.1/V3.2: "NAME<sep>ARGS".
    const size_t fence = body.find("```json");
    if (head == "function" && fence != std::string_view::npos) {
      call.name = std::string(trim(body.substr(0, fence)));
      std::string_view args = body.substr(fence + 7);
      const size_t close = args.rfind("```");
      if (close == std::string_view::npos) return void(malformed_ = true);
      call.arguments = std::string(trim(args.substr(0, close)));
    } else {
      call.name = std::string(head);
      call.arguments = std::string(trim(body));
    }
    if (call.name.empty()) return void(malformed_ = true);
    calls.push_back(std::move(call));
  }
  if (calls.empty()) return void(malformed_ = true);
  calls_ = std::move(calls);
}

}  // namespace mt::server
