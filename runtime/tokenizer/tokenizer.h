// Byte-level BPE tokenizer for DeepSeek V3-family models, read from a Hugging Face
// `tokenizer.json` (plus the optional `tokenizer_config.json` next to it).
//
// Encoding follows HF `tokenizers` (the Rust library, which uses Oniguruma regexes):
//   1. added tokens (`added_tokens`) are cut out of the raw text first, leftmost-longest;
//      tokens with normalized=false are matched first, then those with normalized=true
//      in the remaining gaps (HF's two passes; the normalizer here is the identity);
//   2. every remaining gap goes through the pre-tokenizer pipeline (Sequence of Split /
//      Digits / ByteLevel steps; regexes compiled with PCRE2 in UTF+UCP mode, with `\s`
//      rewritten to the Unicode White_Space set so that it means what it means in Oniguruma);
//   3. each piece is mapped to the GPT-2 byte alphabet and merged by BPE rank.
// Invalid UTF-8 in the input never crashes: each invalid byte becomes a piece of its own
// and is encoded as its single-byte token.
//
// A Tokenizer is cheap to copy (copies share the immutable tables and the thread-safe
// per-piece cache). All const methods may be called from several threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"
#include "runtime/tokenizer/chat_format.h"

namespace mt {

namespace tok {
struct TokenizerJson;
}

// A byte-level BPE vocabulary given as lists, as GGUF files store it (tokenizer.ggml.*): token i
// has id i, spelled as in tokenizer.json's vocab (byte-level: "Ġthe") or, for added tokens, as
// their text; merges are "left right" strings in rank order.
struct TokenizerVocab {
  static constexpr int kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;  // llama.cpp's token types
  std::vector<std::string> tokens;
  std::vector<int32_t> types;  // kControl: a special added token; kUserDefined: an added token; kUnused: none
  std::vector<std::string> merges;
  std::string pre;             // the pre-tokenizer's name ("deepseek-v3")
  int64_t bos_id = -1, eos_id = -1;
  bool add_bos = true;
  std::string chat_template;
};

class Tokenizer {
 public:
  // An empty tokenizer: encode() gives {}, decode() gives "", vocab_size() is 0.
  Tokenizer() = default;

  // `path` is a model directory holding tokenizer.json (and optionally
  // tokenizer_config.json), or a tokenizer.json file path (a tokenizer_config.json in the
  // same directory is read too). Errors name the file and what is wrong.
  static Result<Tokenizer> load(const std::filesystem::path& path);
  // The same tokenizer from vocabulary lists (a GGUF's); `label` names the source in errors.
  static Result<Tokenizer> from_vocab(const TokenizerVocab& v, const std::string& label);

  // Added/special tokens in the text are matched first; no BOS is added.
  std::vector<int32_t> encode(std::string_view text) const;

  // Concatenated token bytes; special tokens appear as their text; invalid ids are skipped.
  // The result is raw bytes: a sequence of ids that cuts a UTF-8 character in two gives
  // a string that is not valid UTF-8 (no U+FFFD substitution is made).
  std::string decode(const std::vector<int32_t>& ids) const;

  // Decoded bytes of one token (may be a partial UTF-8 sequence); "" for an invalid id.
  std::string token_text(int32_t id) const;

  // 1 + largest id (including added tokens).
  int64_t vocab_size() const;

  // From tokenizer_config.json bos_token/eos_token; defaults are the ids of
  // "<｜begin▁of▁sentence｜>" / "<｜end▁of▁sentence｜>"; -1 when neither is known.
  int32_t bos_id() const;
  int32_t eos_id() const;

  // tokenizer_config.json add_bos_token (default true).
  bool add_bos() const;

  // Looks `token` up as an added token's content, then as a vocabulary entry exactly as
  // spelled in tokenizer.json (e.g. "Ġthe"), then as the byte-level spelling of the given
  // text (so " the" also finds "Ġthe").
  std::optional<int32_t> find_token(std::string_view token) const;

  // The chat template text from tokenizer_config.json ("" if none), used to pick the chat style.
  const std::string& chat_template() const;

 private:
  // bos_id / eos_id >= 0 override the config's spellings.
  static Result<Tokenizer> build(tok::TokenizerJson tj, const std::string& fname,
                                 const std::optional<nlohmann::json>& config, const std::string& config_name,
                                 int64_t bos_id = -2, int64_t eos_id = -2);
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace mt
