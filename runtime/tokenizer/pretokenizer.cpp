// Pre-tokenizer pipeline: HF `tokenizers` Split / Digits / ByteLevel semantics on PCRE2.
#include "runtime/tokenizer/pretokenizer.h"

#include "runtime/tokenizer/unicode_extra.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <utility>

namespace mt::tok {

namespace {

// Unicode White_Space (the set Oniguruma's \s matches for UTF-8 text, and hence what HF's
// Rust tokenizers mean by \s): U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
constexpr const char* kWhiteSpaceClassBody =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is true (as in HF).
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Characters that Unicode 15.0-16.0 added to general category `c` (L, M, N, P, S), or nullptr.
const char* unicode16_extra(char c) {
  for (const auto& e : kUnicode16Extra) {
    if (e.category == c) return e.class_body;
  }
  return nullptr;
}

pcre2_code* as_code(const std::shared_ptr<void>& p) { return static_cast<pcre2_code*>(p.get()); }

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  int n = pcre2_get_error_message(code, buf, sizeof(buf));
  if (n < 0) return "PCRE2 error " + std::to_string(code);
  return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

struct Segment {
  uint32_t begin, end;
  bool is_match;
};

// HF NormalizedString::split: cut `piece` by the matches of `re` with the given behaviour.
void split_piece(std::string_view piece, const Regex& re, SplitBehavior behavior, bool invert,
                 MatchScratch& scratch, std::vector<std::pair<uint32_t, uint32_t>>& matches,
                 std::vector<Segment>& segs, std::vector<std::string_view>& out) {
  matches.clear();
  re.find_all(piece, scratch, matches);
  if (matches.empty() && !invert) {  // fast path: nothing to cut
    if (!piece.empty()) out.push_back(piece);
    return;
  }
  segs.clear();
  uint32_t prev = 0;
  for (const auto& m : matches) {
    if (prev < m.first) segs.push_back({prev, m.first, false});
    segs.push_back({m.first, m.second, true});
    prev = m.second;
  }
  if (prev < piece.size()) segs.push_back({prev, static_cast<uint32_t>(piece.size()), false});
  if (invert) {
    for (auto& s : segs) s.is_match = !s.is_match;
  }

  // (begin, end, removed)
  struct Out {
    uint32_t begin, end;
    bool removed;
  };
  std::vector<Out> res;
  res.reserve(segs.size());
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const auto& s : segs) res.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::Removed:
      for (const auto& s : segs) res.push_back({s.begin, s.end, s.is_match});
      break;
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const auto& s : segs) {
        if (s.is_match == previous_match && !res.empty()) {
          res.back().end = s.end;
        } else {
          res.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const auto& s : segs) {
        if (s.is_match && !previous_match && !res.empty()) {
          res.back().end = s.end;
        } else {
          res.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (size_t k = segs.size(); k-- > 0;) {
        const auto& s = segs[k];
        if (s.is_match && !previous_match && !res.empty()) {
          res.back().begin = s.begin;
        } else {
          res.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
  }
  for (const auto& r : res) {
    if (!r.removed && r.end > r.begin) out.push_back(piece.substr(r.begin, r.end - r.begin));
  }
}

}  // namespace

size_t utf8_valid_len(std::string_view s, size_t i) {
  const size_t n = s.size();
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;  // continuation byte or overlong 2-byte lead
  if (c < 0xE0) {
    if (i + 1 >= n || (b(i + 1) & 0xC0) != 0x80) return 0;
    return 2;
  }
  if (c < 0xF0) {
    if (i + 2 >= n) return 0;
    const unsigned char c1 = b(i + 1);
    if ((c1 & 0xC0) != 0x80 || (b(i + 2) & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c < 0xF5) {
    if (i + 3 >= n) return 0;
    const unsigned char c1 = b(i + 1);
    if ((c1 & 0xC0) != 0x80 || (b(i + 2) & 0xC0) != 0x80 || (b(i + 3) & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

std::string rewrite_pattern_for_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_body_start = 0;  // index in p of the first char of the current class body
  size_t i = 0;
  const size_t n = p.size();
  while (i < n) {
    const char c = p[i];
    if (c == '\\' && i + 1 < n) {
      const char d = p[i + 1];
      if (d == 's') {
        if (in_class) {
          out += kWhiteSpaceClassBody;
        } else {
          out += '[';
          out += kWhiteSpaceClassBody;
          out += ']';
        }
        i += 2;
        continue;
      }
      if (d == 'S' && !in_class) {
        out += "[^";
        out += kWhiteSpaceClassBody;
        out += ']';
        i += 2;
        continue;
      }
      if (d == 'p' || d == 'P') {  // \p{X} / \pX: add the Unicode 15-16 characters of X
        size_t stop;
        std::string_view name;
        if (i + 2 < n && p[i + 2] == '{') {
          const size_t close = p.find('}', i + 3);
          stop = (close == std::string_view::npos) ? n : close + 1;
          name = p.substr(i + 3, (close == std::string_view::npos ? n : close) - (i + 3));
        } else {
          stop = std::min(n, i + 3);
          name = p.substr(i + 2, stop - (i + 2));
        }
        const std::string_view escape = p.substr(i, stop - i);
        const char* extra = name.size() == 1 ? unicode16_extra(name[0]) : nullptr;
        if (extra == nullptr || (d == 'P' && in_class)) {
          out.append(escape);
        } else if (in_class) {
          out.append(escape);
          out += extra;
        } else {
          out += (d == 'P') ? "[^\\p{" : "[\\p{";
          out += name;
          out += '}';
          out += extra;
          out += ']';
        }
        i = stop;
        continue;
      }
      if (d == 'Q') {  // quoted literal up to \E: copy unchanged
        size_t e = p.find("\\E", i + 2);
        size_t stop = (e == std::string_view::npos) ? n : e + 2;
        out.append(p.substr(i, stop - i));
        i = stop;
        continue;
      }
      out += c;
      out += d;
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < n && p[i + 1] == ':') {  // POSIX class [:name:]
        size_t e = p.find(":]", i + 2);
        size_t stop = (e == std::string_view::npos) ? i + 1 : e + 2;
        out.append(p.substr(i, stop - i));
        i = stop;
        continue;
      }
      if (c == ']' && i != class_body_start) in_class = false;
      out += c;
      ++i;
      continue;
    }
    out += c;
    ++i;
    if (c == '[') {
      in_class = true;
      if (i < n && p[i] == '^') out += p[i++];
      class_body_start = i;  // a ']' here is a literal
    }
  }
  return out;
}

MatchScratch::MatchScratch() { md_ = pcre2_match_data_create(4, nullptr); }
MatchScratch::~MatchScratch() { pcre2_match_data_free(static_cast<pcre2_match_data*>(md_)); }

Result<Regex> Regex::compile(std::string_view pattern, bool literal) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  std::string pat = literal ? std::string(pattern) : rewrite_pattern_for_pcre2(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), opts,
                                   &err, &err_off, nullptr);
  if (code == nullptr) {
    return make_error("regex /" + std::string(pattern) + "/ does not compile: " +
                      pcre2_message(err) + " at offset " + std::to_string(err_off));
  }
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter
  Regex r;
  r.code_ = std::shared_ptr<void>(code, [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
  return r;
}

void Regex::find_all(std::string_view subject, MatchScratch& scratch,
                     std::vector<std::pair<uint32_t, uint32_t>>& out) const {
  pcre2_code* code = as_code(code_);
  if (code == nullptr || scratch.get() == nullptr) return;
  auto* md = static_cast<pcre2_match_data*>(scratch.get());
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t len = subject.size();
  size_t start = 0;
  while (start < len) {
    int rc = pcre2_match(code, subj, len, start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subj, len, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    }
    if (rc < 0) break;  // no match, or a resource limit: the rest is a gap
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t s = ov[0], e = ov[1];
    if (s < start || s > len) break;  // defensive (\K tricks)
    if (e <= s) {                     // empty match: skip one character, as find_iter does
      if (s >= len) break;
      size_t adv = utf8_valid_len(subject, s);
      start = s + (adv == 0 ? 1 : adv);
      continue;
    }
    if (e > len) e = len;
    out.emplace_back(static_cast<uint32_t>(s), static_cast<uint32_t>(e));
    start = e;
  }
}

Status PreTokenizer::add_step(const nlohmann::json& j, const std::string& file,
                              const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return make_error(file + ": " + where + " is not an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (has_byte_level_) {
    return make_error(file + ": " + where + " (" + type +
                      ") follows ByteLevel; ByteLevel must be the last pre-tokenizer step");
  }
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return make_error(file + ": " + where + " (Sequence) has no \"pretokenizers\" array");
    }
    size_t k = 0;
    for (const auto& sub : j["pretokenizers"]) {
      MT_TRY(add_step(sub, file, where + ".pretokenizers[" + std::to_string(k) + "]"));
      ++k;
    }
    return ok_status();
  }
  if (type == "Split") {
    PreTokenizerStep st;
    st.kind = PreTokenizerStep::Kind::Split;
    if (!j.contains("pattern") || !j["pattern"].is_object()) {
      return make_error(file + ": " + where + " (Split) has no \"pattern\" object");
    }
    const auto& pat = j["pattern"];
    bool literal = false;
    std::string text;
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
      text = pat["Regex"].get<std::string>();
    } else if (pat.contains("String") && pat["String"].is_string()) {
      text = pat["String"].get<std::string>();
      literal = true;
    } else {
      return make_error(file + ": " + where + " (Split) pattern has neither \"Regex\" nor \"String\"");
    }
    auto re = Regex::compile(text, literal);
    if (!re.ok()) return make_error(file + ": " + where + " (Split): " + re.error());
    st.regex = std::move(re).value();
    st.has_regex = true;
    const std::string behavior =
        j.contains("behavior") && j["behavior"].is_string() ? j["behavior"].get<std::string>() : "Isolated";
    if (behavior == "Isolated") {
      st.behavior = SplitBehavior::Isolated;
    } else if (behavior == "Removed") {
      st.behavior = SplitBehavior::Removed;
    } else if (behavior == "MergedWithPrevious") {
      st.behavior = SplitBehavior::MergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      st.behavior = SplitBehavior::MergedWithNext;
    } else if (behavior == "Contiguous") {
      st.behavior = SplitBehavior::Contiguous;
    } else {
      return make_error(file + ": " + where + " (Split) has unknown behavior \"" + behavior + "\"");
    }
    st.invert = j.contains("invert") && j["invert"].is_boolean() && j["invert"].get<bool>();
    steps_.push_back(std::move(st));
    return ok_status();
  }
  if (type == "Digits") {
    const bool individual = j.contains("individual_digits") && j["individual_digits"].is_boolean() &&
                            j["individual_digits"].get<bool>();
    PreTokenizerStep st;
    st.kind = PreTokenizerStep::Kind::Split;
    auto re = Regex::compile(individual ? "\\p{N}" : "\\p{N}+", false);
    if (!re.ok()) return make_error(file + ": " + where + " (Digits): " + re.error());
    st.regex = std::move(re).value();
    st.has_regex = true;
    st.behavior = SplitBehavior::Isolated;
    steps_.push_back(std::move(st));
    return ok_status();
  }
  if (type == "ByteLevel") {
    PreTokenizerStep st;
    st.kind = PreTokenizerStep::Kind::ByteLevel;
    st.add_prefix_space = j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean() &&
                          j["add_prefix_space"].get<bool>();
    // HF's default for use_regex is true.
    const bool use_regex = !(j.contains("use_regex") && j["use_regex"].is_boolean() &&
                             !j["use_regex"].get<bool>());
    if (use_regex) {
      auto re = Regex::compile(kGpt2Pattern, false);
      if (!re.ok()) return make_error(file + ": " + where + " (ByteLevel): " + re.error());
      st.regex = std::move(re).value();
      st.has_regex = true;
      st.behavior = SplitBehavior::Isolated;
    }
    steps_.push_back(std::move(st));
    has_byte_level_ = true;
    return ok_status();
  }
  return make_error(file + ": " + where + " has unsupported pre-tokenizer type \"" + type +
                    "\" (supported: Sequence, Split, Digits, ByteLevel)");
}

Result<PreTokenizer> PreTokenizer::from_json(const nlohmann::json& j, const std::string& file) {
  PreTokenizer pt;
  if (j.is_null()) return pt;
  MT_TRY(pt.add_step(j, file, "pre_tokenizer"));
  return pt;
}

void PreTokenizer::split(std::string_view text, MatchScratch& scratch, std::deque<std::string>& arena,
                         std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  std::vector<std::string_view> cur{text};
  std::vector<std::string_view> next;
  std::vector<std::pair<uint32_t, uint32_t>> matches;
  std::vector<Segment> segs;
  for (const auto& st : steps_) {
    next.clear();
    next.reserve(cur.size() * 2);
    for (std::string_view piece : cur) {
      if (st.kind == PreTokenizerStep::Kind::ByteLevel && st.add_prefix_space &&
          (piece.empty() || piece.front() != ' ')) {
        std::string prefixed;
        prefixed.reserve(piece.size() + 1);
        prefixed += ' ';
        prefixed.append(piece);
        arena.push_back(std::move(prefixed));
        piece = arena.back();
      }
      if (st.has_regex) {
        split_piece(piece, st.regex, st.behavior, st.invert, scratch, matches, segs, next);
      } else if (!piece.empty()) {
        next.push_back(piece);
      }
    }
    cur.swap(next);
  }
  pieces.insert(pieces.end(), cur.begin(), cur.end());
}

const nlohmann::json* named_pre_tokenizer(const std::string& name) {
  // DeepSeek V3's tokenizer.json pre_tokenizer (data/tokenizer-deepseek-v3): digits in threes,
  // runs of CJK, then words / punctuation / whitespace, then byte-level mapping.
  static const nlohmann::json kDeepSeekV3 = [] {
    auto split = [](const std::string& re) {
      return nlohmann::json{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}};
    };
    nlohmann::json steps = nlohmann::json::array();
    steps.push_back(split("\\p{N}{1,3}"));
    steps.push_back(split("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"));
    steps.push_back(split("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
                          " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"));
    steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
    return nlohmann::json{{"type", "Sequence"}, {"pretokenizers", steps}};
  }();
  if (name == "deepseek-v3") return &kDeepSeekV3;
  return nullptr;
}

}  // namespace mt::tok
