// Pre-tokenizer pipeline of a Hugging Face tokenizer.json (internal to mt_tokenizer).
//
// Supported steps (possibly nested in "Sequence"): Split (Regex or String pattern, every
// SplitDelimiterBehavior, invert), Digits, ByteLevel (add_prefix_space, use_regex; must be
// the last step). Regexes are compiled with PCRE2 (UTF + UCP, JIT when available) after
// rewrite_pattern_for_pcre2(), which gives `\s`/`\S` the Oniguruma (HF Rust) meaning.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"

namespace mt::tok {

// Rewrites an Oniguruma-style pattern so that PCRE2 (UTF+UCP) matches what HF's Rust
// tokenizers (Oniguruma, Unicode 16.0) match:
// - `\s` becomes the Unicode White_Space set (which includes U+0085 and excludes U+180E,
//   unlike PCRE2's own \s), `\S` its complement;
// - `\p{L}`, `\p{M}`, `\p{N}`, `\p{P}`, `\p{S}` (and `\pL` etc.) also match the characters
//   Unicode 15.0-16.0 added to those categories (PCRE2 10.42 knows Unicode 14.0 only);
//   `\P{X}` likewise outside character classes.
// Everything else is copied unchanged.
std::string rewrite_pattern_for_pcre2(std::string_view pattern);

// Per-call scratch space for matching (one PCRE2 match block); not shareable across threads.
class MatchScratch {
 public:
  MatchScratch();
  ~MatchScratch();
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
  void* get() const { return md_; }

 private:
  void* md_ = nullptr;
};

// A compiled PCRE2 pattern (shared, immutable).
class Regex {
 public:
  // literal: match `pattern` as a plain string. Errors describe the PCRE2 failure and offset.
  static Result<Regex> compile(std::string_view pattern, bool literal);
  // All non-empty, non-overlapping matches in `subject` (valid UTF-8), as byte ranges
  // [first, second) appended to `out`. Empty matches are skipped. If PCRE2 fails (resource
  // limits), the matches found so far are kept and the rest of the subject counts as a gap.
  void find_all(std::string_view subject, MatchScratch& scratch,
                std::vector<std::pair<uint32_t, uint32_t>>& out) const;

 private:
  std::shared_ptr<void> code_;  // pcre2_code_8*
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
  enum class Kind { Split, ByteLevel } kind = Kind::Split;
  Regex regex;                 // Split; ByteLevel with use_regex
  bool has_regex = false;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
};

class PreTokenizer {
 public:
  // `j` is tokenizer.json's "pre_tokenizer" value (null allowed). `file` names the file in errors.
  static Result<PreTokenizer> from_json(const nlohmann::json& j, const std::string& file);

  // Splits `text` (valid UTF-8) into pieces, appended to `pieces`. Pieces view either `text`
  // or strings kept in `arena` (when a step prepends a space).
  void split(std::string_view text, MatchScratch& scratch, std::deque<std::string>& arena,
             std::vector<std::string_view>& pieces) const;

  bool has_byte_level() const { return has_byte_level_; }

 private:
  Status add_step(const nlohmann::json& j, const std::string& file, const std::string& where);
  std::vector<PreTokenizerStep> steps_;
  bool has_byte_level_ = false;
};

// The pre_tokenizer of tokenizer.json for a pre-tokenizer named as GGUF files name them
// (tokenizer.ggml.pre): "deepseek-v3" is DeepSeek V3's, exactly as its tokenizer.json gives it.
// Null for a name this runtime does not know.
const nlohmann::json* named_pre_tokenizer(const std::string& name);

// UTF-8 helpers.
// Length of the valid UTF-8 sequence starting at s[i] (1..4), or 0 if the bytes there are
// not a valid sequence (overlong forms, surrogates and values above U+10FFFF are invalid).
size_t utf8_valid_len(std::string_view s, size_t i);

}  // namespace mt::tok
