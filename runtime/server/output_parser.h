// Generated text into what an OpenAI response carries, as it streams: the V3.1/V3.2 thinking
// part (`reasoning_content`, up to "</think>"), the answer (`content`), stop sequences (the
// answer ends before the first one, which is not returned) and DeepSeek tool calls
// ("<｜tool▁calls▁begin｜>..." in the V3 or V3.1 form, returned as `tool_calls`). Text that could be the
// start of a marker or a stop sequence is held back until it is known not to be, so streamed
// deltas concatenate to exactly the non-streamed result, however the text is chunked.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mt::server {

struct OutputDelta {
  std::string reasoning;
  std::string content;
  bool empty() const { return reasoning.empty() && content.empty(); }
};

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text, as the model wrote it
};

class OutputParser {
 public:
  // thinking: the prompt opened a thinking turn, so the text starts as reasoning.
  OutputParser(bool thinking, std::vector<std::string> stop);

  // The next piece of generated text; returns what can be sent now.
  OutputDelta push(std::string_view text);
  // Generation ended (end of sequence, length, or a stop): returns the held-back text.
  OutputDelta finish();

  // A stop sequence was met: generation should end now (later text is ignored).
  bool stopped() const { return stopped_; }
  // Tool calls, complete after finish(); the model's call text never appears in `content`.
  const std::vector<ToolCall>& tool_calls() const { return calls_; }
  // The tool-call text could not be read as calls (it is then returned as content).
  bool malformed_tool_calls() const { return malformed_; }

 private:
  enum class Phase { Reasoning, Content, ToolCalls, Done };
  void parse_tool_calls();

  Phase phase_;
  std::vector<std::string> stop_;
  std::string held_;        // text not yet sent (a possible marker or stop prefix)
  std::string call_text_;   // after "<｜tool▁calls▁begin｜>"
  std::vector<ToolCall> calls_;
  bool stopped_ = false;
  bool malformed_ = false;
};

}  // namespace mt::server
