#include "runtime/server/tool_prompt.h"

namespace mt::server {

std::string render_tool_section(const nlohmann::json& tools, ChatStyle style) {
  if (!tools.is_array() || tools.empty()) return "";
  std::string s = "\n\n## Tools\nYou have access to the following tools:\n";
  for (const auto& t : tools) {
    const auto& fn = t["function"];
    s += "\n### " + fn["name"].get<std::string>() + "\n";
    if (fn.contains("description") && fn["description"].is_string())
      s += "Description: " + fn["description"].get<std::string>() + "\n";
    const nlohmann::json params = fn.contains("parameters") && fn["parameters"].is_object() ? fn["parameters"]
                                                                                           : nlohmann::json::object();
    s += "\nParameters: " + params.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  // The call format the model was trained on, in its style.
  if (style == ChatStyle::V31) {
    s += "\nIMPORTANT: to call tools, answer in exactly this format:\n"
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments<｜tool▁call▁end｜>"
         "{{additional_tool_calls}}<｜tool▁calls▁end｜>\n\n"
         "where tool_call_name is exactly one of the tools above, tool_call_arguments is valid JSON that follows "
         "its Parameters schema, and several calls follow each other with nothing between them.\n";
  } else {
    s += "\nIMPORTANT: to call tools, answer in exactly this format:\n"
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>tool_call_name\n```json\n"
         "tool_call_arguments\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n\n"
         "where tool_call_name is exactly one of the tools above and tool_call_arguments is valid JSON that "
         "follows its Parameters schema.\n";
  }
  return s;
}

nlohmann::json with_tool_section(const nlohmann::json& messages, const nlohmann::json& tools, ChatStyle style) {
  const std::string section = render_tool_section(tools, style);
  if (section.empty()) return messages;
  nlohmann::json out = messages;
  for (auto& m : out)
    if (m["role"] == "system") {
      m["content"] = m["content"].get<std::string>() + section;
      return out;
    }
  nlohmann::json system = nlohmann::json::object();
  system["role"] = "system";
  system["content"] = section.substr(2);  // no blank line before the first section
  out.insert(out.begin(), std::move(system));
  return out;
}

}  // namespace mt::server
