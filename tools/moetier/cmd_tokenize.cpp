// `moetier tokenize`: text (or chat messages) on stdin -> token ids as JSON on stdout.
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/tokenizer.h"
#include "runtime/weights/gguf_tokenizer.h"
#include "tools/moetier/commands.h"

namespace {

constexpr const char* kTokenizeUsage =
    R"(usage: moetier tokenize --tokenizer PATH [--jsonl] [--chat] [--bos] [--thinking]
                         [--no-generation-prompt]

Reads text on stdin and prints its token ids as a JSON array on one line.

  --tokenizer PATH         model directory holding tokenizer.json (and tokenizer_config.json),
                           or the path of a tokenizer.json file, or a GGUF model (the
                           tokenizer.json beside it, else the tokenizer stored in the file)
  --jsonl                  read JSON lines {"text": "..."} and write one line {"ids": [...]} each
  --chat                   the input is a chat: a JSON array of messages (or {"messages": [...]}),
                           rendered with the model's chat format (DeepSeek V3 or V3.1, detected
                           from the chat template) before encoding; with --jsonl each line is
                           {"messages": [...]} and may also set "add_generation_prompt" and
                           "thinking" (booleans)
  --bos                    prepend the BOS id (unless the ids already start with it, as a
                           rendered chat does)
  --thinking               chat only, V3.1 format: open the assistant turn in thinking mode
  --no-generation-prompt   chat only: do not end with the assistant prompt
  --help                   print this text

Special-token text in the input (e.g. <｜User｜>) is encoded as the special token.
Errors: one line on stderr starting with "error: ", exit status 1 (2 for bad arguments).
)";

struct TokenizeArgs {
  std::string tokenizer;
  bool jsonl = false;
  bool chat = false;
  bool bos = false;
  bool thinking = false;
  bool generation_prompt = true;
};

std::string ids_json(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  s += ']';
  return s;
}

// Renders and encodes one chat input: an array of messages or {"messages": [...], ...}.
mt::Result<std::vector<int32_t>> encode_chat(const mt::Tokenizer& tok, const nlohmann::json& input,
                                             const TokenizeArgs& args) {
  mt::ChatOptions opt;
  opt.style = mt::detect_chat_style(tok.chat_template());
  opt.add_generation_prompt = args.generation_prompt;
  opt.thinking = args.thinking;
  const nlohmann::json* messages = &input;
  if (input.is_object()) {
    if (!input.contains("messages")) return mt::make_error("expected {\"messages\": [...]}");
    messages = &input["messages"];
    for (const char* key : {"add_generation_prompt", "thinking"}) {
      if (!input.contains(key)) continue;
      if (!input[key].is_boolean()) return mt::make_error(std::string(key) + ": expected a boolean");
      (std::string(key) == "thinking" ? opt.thinking : opt.add_generation_prompt) = input[key].get<bool>();
    }
  }
  auto text = mt::render_chat(*messages, opt);
  if (!text.ok()) return mt::Error{text.error()};
  return tok.encode(*text);
}

void maybe_add_bos(const mt::Tokenizer& tok, const TokenizeArgs& args, std::vector<int32_t>& ids) {
  if (!args.bos || tok.bos_id() < 0) return;
  if (!ids.empty() && ids.front() == tok.bos_id()) return;
  ids.insert(ids.begin(), tok.bos_id());
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  TokenizeArgs args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kTokenizeUsage;
      return 0;
    } else if (a == "--tokenizer") {
      if (i + 1 >= argc) {
        std::cerr << "error: --tokenizer needs a path (see moetier tokenize --help)\n";
        return 2;
      }
      args.tokenizer = argv[++i];
    } else if (a.rfind("--tokenizer=", 0) == 0) {
      args.tokenizer = a.substr(12);
    } else if (a == "--jsonl") {
      args.jsonl = true;
    } else if (a == "--chat") {
      args.chat = true;
    } else if (a == "--bos") {
      args.bos = true;
    } else if (a == "--thinking") {
      args.thinking = true;
    } else if (a == "--no-generation-prompt") {
      args.generation_prompt = false;
    } else {
      std::cerr << "error: unknown argument \"" << a << "\" (see moetier tokenize --help)\n";
      return 2;
    }
  }
  if (args.tokenizer.empty()) {
    std::cerr << "error: --tokenizer PATH is required (see moetier tokenize --help)\n";
    return 2;
  }

  // A GGUF model: tokenizer.json beside it, else the tokenizer the file stores.
  auto loaded = [&]() -> mt::Result<mt::Tokenizer> {
    if (!mt::is_gguf_path(args.tokenizer)) return mt::Tokenizer::load(args.tokenizer);
    MT_ASSIGN(mt::GgufModel g, mt::GgufModel::open(args.tokenizer));
    return mt::load_gguf_tokenizer(g, args.tokenizer);
  }();
  if (!loaded.ok()) {
    std::cerr << "error: " << loaded.error() << "\n";
    return 1;
  }
  const mt::Tokenizer& tok = *loaded;

  if (!args.jsonl) {
    std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    std::vector<int32_t> ids;
    if (args.chat) {
      nlohmann::json j = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        std::cerr << "error: stdin: invalid JSON (expected a messages array)\n";
        return 1;
      }
      auto r = encode_chat(tok, j, args);
      if (!r.ok()) {
        std::cerr << "error: stdin: " << r.error() << "\n";
        return 1;
      }
      ids = std::move(r).value();
    } else {
      ids = tok.encode(input);
    }
    maybe_add_bos(tok, args, ids);
    std::cout << ids_json(ids) << "\n";
    std::cout.flush();
    return std::cout.good() ? 0 : 1;
  }

  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank line
    const std::string where = "line " + std::to_string(line_no) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "error: " << where << "invalid JSON: " << e.what() << "\n";
      return 1;
    }
    std::vector<int32_t> ids;
    if (args.chat) {
      if (!j.is_object() || !j.contains("messages")) {
        std::cerr << "error: " << where << "expected an object {\"messages\": [...]}\n";
        return 1;
      }
      auto r = encode_chat(tok, j, args);
      if (!r.ok()) {
        std::cerr << "error: " << where << r.error() << "\n";
        return 1;
      }
      ids = std::move(r).value();
    } else {
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        std::cerr << "error: " << where << "expected an object {\"text\": \"...\"}\n";
        return 1;
      }
      ids = tok.encode(j["text"].get_ref<const std::string&>());
    }
    maybe_add_bos(tok, args, ids);
    std::cout << "{\"ids\":" << ids_json(ids) << "}\n";
  }
  std::cout.flush();
  return std::cout.good() ? 0 : 1;
}
