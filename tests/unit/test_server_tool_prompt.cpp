// Tool definitions described to the model, and the call format they announce read back by the
// output parser.
#include <catch2/catch.hpp>

#include "runtime/server/output_parser.h"
#include "runtime/server/tool_prompt.h"

using namespace mt;
using namespace mt::server;
using json = nlohmann::json;

namespace {

const json kTools = json::parse(R"([{"type": "function", "function": {"name": "get_time",
  "description": "The time in a time zone", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
  {"type": "function", "function": {"name": "ping"}}])");

// The announced call format with a concrete call filled in.
std::string filled(const std::string& section, const std::string& name, const std::string& args) {
  const std::string from = "<｜tool▁calls▁begin｜>", to = "<｜tool▁calls▁end｜>";
  std::string f = section.substr(section.find(from), section.find(to) + to.size() - section.find(from));
  auto put = [&](const std::string& key, const std::string& v) { f.replace(f.find(key), key.size(), v); };
  put("tool_call_name", name);
  put("tool_call_arguments", args);
  if (f.find("{{additional_tool_calls}}") != std::string::npos) put("{{additional_tool_calls}}", "");
  return f;
}

}  // namespace

TEST_CASE("tools become a ## Tools section with each function's schema", "[server]") {
  for (ChatStyle style : {ChatStyle::V3, ChatStyle::V31}) {
    const std::string s = render_tool_section(kTools, style);
    CHECK(s.find("## Tools") != std::string::npos);
    CHECK(s.find("### get_time\nDescription: The time in a time zone\n") != std::string::npos);
    CHECK(s.find(R"(Parameters: {"properties":{"tz":{"type":"string"}},"type":"object"})") != std::string::npos);
    CHECK(s.find("### ping\n\nParameters: {}") != std::string::npos);
    // The format the section announces is the one the parser reads.
    OutputParser p(false, {});
    p.push(filled(s, "get_time", R"({"tz": "UTC"})"));
    p.finish();
    REQUIRE(p.tool_calls().size() == 1);
    CHECK(p.tool_calls()[0].name == "get_time");
    CHECK(p.tool_calls()[0].arguments == R"({"tz": "UTC"})");
  }
  CHECK(render_tool_section(json::array(), ChatStyle::V31).empty());
}

TEST_CASE("the section joins the system prompt, or becomes one", "[server]") {
  const json with_system = json::parse(R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])");
  json out = with_tool_section(with_system, kTools, ChatStyle::V31);
  REQUIRE(out.size() == 2);
  CHECK(out[0]["content"].get<std::string>().rfind("Be brief.\n\n## Tools", 0) == 0);
  const json without = json::parse(R"([{"role": "user", "content": "hi"}])");
  out = with_tool_section(without, kTools, ChatStyle::V31);
  REQUIRE(out.size() == 2);
  CHECK(out[0]["role"] == "system");
  CHECK(out[0]["content"].get<std::string>().rfind("## Tools", 0) == 0);
  auto rendered = render_chat(out, ChatOptions{true, false, ChatStyle::V31});
  REQUIRE(rendered.ok());
  CHECK(rendered->find("## Tools") < rendered->find("hi"));
  CHECK(with_tool_section(without, json::array(), ChatStyle::V3) == without);
}
