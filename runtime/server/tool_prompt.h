// OpenAI `tools` described to a DeepSeek model: the "## Tools" section its chat format expects
// at the end of the system prompt (one "### name" per function with its description and JSON
// parameter schema, then the exact call format of the model's chat style), so that its answers
// carry calls the output parser (output_parser.h) reads back.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/chat_format.h"

namespace mt::server {

// tools: [{"type": "function", "function": {"name", "description"?, "parameters"?}}] (checked by
// api_request.h). Empty when there are none.
std::string render_tool_section(const nlohmann::json& tools, ChatStyle style);

// The messages with that section appended to the system prompt (a system message is added
// first when there is none).
nlohmann::json with_tool_section(const nlohmann::json& messages, const nlohmann::json& tools, ChatStyle style);

}  // namespace mt::server
