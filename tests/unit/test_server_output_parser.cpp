// The output parser: reasoning / content split, stop sequences and tool calls, the same result
// whether the text arrives whole, byte by byte, or in random chunks.
#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "runtime/server/output_parser.h"

using namespace mt::server;

namespace {

struct Result {
  std::string reasoning, content;
  bool stopped = false;
  std::vector<ToolCall> calls;
  bool malformed = false;
};

// Feeds `text` in chunks of the given sizes (cycled); 0 = the whole text at once.
Result run(bool thinking, std::vector<std::string> stop, const std::string& text, std::vector<size_t> chunks) {
  OutputParser p(thinking, std::move(stop));
  Result r;
  auto take = [&](const OutputDelta& d) {
    r.reasoning += d.reasoning;
    r.content += d.content;
  };
  size_t pos = 0, k = 0;
  while (pos < text.size() && !p.stopped()) {
    const size_t n = chunks.empty() || chunks[k % chunks.size()] == 0 ? text.size() : chunks[k % chunks.size()];
    take(p.push(std::string_view(text).substr(pos, n)));
    pos += n;
    ++k;
  }
  take(p.finish());
  r.stopped = p.stopped();
  r.calls = p.tool_calls();
  r.malformed = p.malformed_tool_calls();
  return r;
}

// The same result for whole, byte-by-byte and random chunking.
Result run_all_ways(bool thinking, const std::vector<std::string>& stop, const std::string& text) {
  const Result whole = run(thinking, stop, text, {0});
  std::mt19937 rng(5);
  std::vector<std::vector<size_t>> ways = {{1}, {2}, {3, 1, 7}};
  for (int i = 0; i < 20; ++i) {
    std::vector<size_t> c;
    for (int j = 0; j < 8; ++j) c.push_back(1 + rng() % 9);
    ways.push_back(c);
  }
  for (const auto& w : ways) {
    const Result r = run(thinking, stop, text, w);
    CHECK(r.reasoning == whole.reasoning);
    CHECK(r.content == whole.content);
    CHECK(r.stopped == whole.stopped);
    CHECK(r.calls.size() == whole.calls.size());
  }
  return whole;
}

}  // namespace

TEST_CASE("thinking text goes to reasoning, the answer to content", "[server]") {
  const Result r = run_all_ways(true, {}, "Let me think: 2+2.</think>It is 4.");
  CHECK(r.reasoning == "Let me think: 2+2.");
  CHECK(r.content == "It is 4.");
  // Without thinking, "</think>" is plain content.
  CHECK(run_all_ways(false, {}, "a</think>b").content == "a</think>b");
  // Thinking that never closes stays reasoning.
  CHECK(run_all_ways(true, {}, "still thinking <").reasoning == "still thinking <");
}

TEST_CASE("a stop sequence ends the answer before it, across chunk boundaries", "[server]") {
  Result r = run_all_ways(false, {"\n\n", "END"}, "one\ntwo\n\nthree END");
  CHECK(r.content == "one\ntwo");
  CHECK(r.stopped);
  r = run_all_ways(false, {"xyz"}, "xy xyx xyz tail");
  CHECK(r.content == "xy xyx ");
  CHECK(r.stopped);
  r = run_all_ways(false, {"xyz"}, "ends with xy");
  CHECK(r.content == "ends with xy");  // a held-back prefix is sent at the end
  CHECK_FALSE(r.stopped);
  // Stops apply to the answer, not to the reasoning.
  r = run_all_ways(true, {"STOP"}, "a STOP in thought</think>answer STOP more");
  CHECK(r.reasoning == "a STOP in thought");
  CHECK(r.content == "answer ");
  // Multi-byte text around a stop.
  r = run_all_ways(false, {"。"}, "你好。再见");
  CHECK(r.content == "你好");
}

TEST_CASE("DeepSeek tool calls, V3.1 and V3 forms", "[server]") {
  const std::string v31 =
      "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"tz\": \"UTC\"}<｜tool▁call▁end｜>"
      "<｜tool▁call▁begin｜>get_date<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  Result r = run_all_ways(false, {}, v31);
  CHECK(r.content == "Checking.");
  REQUIRE(r.calls.size() == 2);
  CHECK(r.calls[0].name == "get_time");
  CHECK(r.calls[0].arguments == "{\"tz\": \"UTC\"}");
  CHECK(r.calls[1].name == "get_date");
  CHECK(r.calls[1].arguments == "{}");
  CHECK_FALSE(r.malformed);

  const std::string v3 =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  r = run_all_ways(false, {}, v3);
  CHECK(r.content.empty());
  REQUIRE(r.calls.size() == 1);
  CHECK(r.calls[0].name == "get_weather");
  CHECK(r.calls[0].arguments == "{\"city\": \"Paris\"}");

  // Cut off inside a call: not a call; the text comes back as content.
  r = run_all_ways(false, {}, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"tz");
  CHECK(r.calls.empty());
  CHECK(r.malformed);
  CHECK(r.content == "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"tz");
}
