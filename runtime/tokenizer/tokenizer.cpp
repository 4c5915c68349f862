// Byte-level BPE tokenizer: loading tokenizer.json, encoding and decoding.
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer_json.h"

namespace mt {

namespace {

using json = nlohmann::json;

constexpr const char* kDefaultBos = "<｜begin▁of▁sentence｜>";
constexpr const char* kDefaultEos = "<｜end▁of▁sentence｜>";
constexpr int64_t kMaxId = int64_t{1} << 21;  // sanity bound for ids in tokenizer.json

// ---- GPT-2 byte <-> unicode alphabet ----
struct ByteAlphabet {
  std::array<uint32_t, 256> byte_to_cp{};
  std::array<int16_t, 512> cp_to_byte{};  // all alphabet code points are < 512
  ByteAlphabet() {
    cp_to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_cp[b] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Bytes -> byte-level spelling (as vocabulary entries are written).
std::string to_byte_level(std::string_view bytes) {
  std::string s;
  s.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(s, alphabet().byte_to_cp[b]);
  return s;
}

// Byte-level spelling -> bytes. Like HF's ByteLevel decoder: if some character is not in
// the alphabet, the token's own UTF-8 text is used instead.
std::string from_byte_level(std::string_view tok) {
  std::string out;
  out.reserve(tok.size());
  size_t i = 0;
  while (i < tok.size()) {
    const size_t len = tok::utf8_valid_len(tok, i);
    if (len == 0) return std::string(tok);
    uint32_t cp = 0;
    const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(tok[k])); };
    if (len == 1) {
      cp = b(i);
    } else if (len == 2) {
      cp = ((b(i) & 0x1F) << 6) | (b(i + 1) & 0x3F);
    } else {
      return std::string(tok);  // alphabet code points are all below U+0800
    }
    if (cp >= 512 || alphabet().cp_to_byte[cp] < 0) return std::string(tok);
    out += static_cast<char>(alphabet().cp_to_byte[cp]);
    i += len;
  }
  return out;
}

// ---- merge table: open addressing, (left id, right id) -> (rank, merged id) ----
class MergeTable {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  // Later entries overwrite earlier ones (as HF's HashMap collect does).
  void insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
    const uint64_t key = pack(a, b);
    size_t h = hash(key);
    while (slots_[h].key != kEmpty && slots_[h].key != key) h = (h + 1) & mask_;
    slots_[h] = Slot{key, rank, merged};
  }
  // Returns false when (a, b) is not a merge.
  bool find(int32_t a, int32_t b, int32_t& rank, int32_t& merged) const {
    if (slots_.empty()) return false;
    const uint64_t key = pack(a, b);
    size_t h = hash(key);
    while (true) {
      const Slot& s = slots_[h];
      if (s.key == key) {
        rank = s.rank;
        merged = s.merged;
        return true;
      }
      if (s.key == kEmpty) return false;
      h = (h + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t hash(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// ---- vocabulary: byte-level spelling -> id (open addressing over a flat entry list) ----
class VocabMap {
 public:
  // Duplicate spellings: the last one wins (as when a JSON object has a repeated key).
  void build(std::vector<std::pair<std::string, int64_t>>&& entries) {
    entries_.clear();
    entries_.reserve(entries.size());
    size_t cap = 16;
    while (cap < entries.size() * 2) cap <<= 1;
    slots_.assign(cap, 0);
    mask_ = cap - 1;
    for (auto& [spelling, id] : entries) {
      size_t h = std::hash<std::string_view>()(spelling) & mask_;
      while (slots_[h] != 0 && entries_[slots_[h] - 1].first != spelling) h = (h + 1) & mask_;
      if (slots_[h] != 0) {
        entries_[slots_[h] - 1].second = static_cast<int32_t>(id);
      } else {
        entries_.emplace_back(std::move(spelling), static_cast<int32_t>(id));
        slots_[h] = static_cast<uint32_t>(entries_.size());
      }
    }
  }
  // -1 when absent.
  int32_t find(std::string_view spelling) const {
    if (slots_.empty()) return -1;
    size_t h = std::hash<std::string_view>()(spelling) & mask_;
    while (slots_[h] != 0) {
      const auto& e = entries_[slots_[h] - 1];
      if (e.first == spelling) return e.second;
      h = (h + 1) & mask_;
    }
    return -1;
  }
  const std::vector<std::pair<std::string, int32_t>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, int32_t>> entries_;
  std::vector<uint32_t> slots_;  // entry index + 1; 0 = empty
  size_t mask_ = 0;
};

// ---- added tokens: a byte trie for leftmost-longest matching ----
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

class TokenTrie {
 public:
  TokenTrie() { root_.fill(-1); }
  bool empty() const { return nodes_.empty(); }
  void insert(std::string_view s, int32_t token_index) {
    if (s.empty()) return;
    int32_t node = root_[static_cast<unsigned char>(s[0])];
    if (node < 0) {
      node = new_node();
      root_[static_cast<unsigned char>(s[0])] = node;
    }
    for (size_t k = 1; k < s.size(); ++k) {
      const uint64_t key = edge_key(node, static_cast<unsigned char>(s[k]));
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        const int32_t child = new_node();
        edges_.emplace(key, child);
        node = child;
      } else {
        node = it->second;
      }
    }
    nodes_[node] = token_index;
  }
  // Lengths of all tokens that start at text[pos], longest first, with their token indices.
  void matches_at(std::string_view text, size_t pos, std::vector<std::pair<size_t, int32_t>>& out) const {
    out.clear();
    int32_t node = root_[static_cast<unsigned char>(text[pos])];
    size_t k = pos + 1;
    while (node >= 0) {
      if (nodes_[node] >= 0) out.emplace_back(k - pos, nodes_[node]);
      if (k >= text.size()) break;
      auto it = edges_.find(edge_key(node, static_cast<unsigned char>(text[k])));
      if (it == edges_.end()) break;
      node = it->second;
      ++k;
    }
    std::reverse(out.begin(), out.end());
  }
  bool may_start(unsigned char c) const { return root_[c] >= 0; }

 private:
  static uint64_t edge_key(int32_t node, unsigned char c) {
    return (static_cast<uint64_t>(node) << 8) | c;
  }
  int32_t new_node() {
    nodes_.push_back(-1);
    return static_cast<int32_t>(nodes_.size() - 1);
  }
  std::array<int32_t, 256> root_{};
  std::vector<int32_t> nodes_;  // token index ending at the node, or -1
  std::unordered_map<uint64_t, int32_t> edges_;
};

bool is_ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
bool is_word_byte(unsigned char c) {
  // Approximation of char::is_alphanumeric for single_word: ASCII alnum, '_' and any
  // non-ASCII byte.
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c >= 0x80;
}

Result<std::string> read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return make_error(p.string() + ": cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return make_error(p.string() + ": read error");
  return ss.str();
}

Result<json> parse_json_file(const std::filesystem::path& p) {
  MT_ASSIGN(std::string text, read_file(p));
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    return make_error(p.string() + ": invalid JSON: " + e.what());
  }
}

// "<token>" or {"content": "<token>"} as in tokenizer_config.json; "" if absent/null.
std::string config_token(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

struct Tokenizer::Impl {
  std::string file;
  VocabMap vocab;  // byte-level spelling -> id
  std::vector<std::string> id_bytes;               // decoded bytes per id
  std::vector<uint8_t> id_valid;
  std::array<int32_t, 256> byte_id{};
  MergeTable merges;
  bool ignore_merges = false;
  tok::PreTokenizer pre;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  TokenTrie trie_raw;   // added tokens with normalized=false (matched first)
  TokenTrie trie_norm;  // added tokens with normalized=true
  int64_t vocab_size = 0;
  int32_t bos = -1;
  int32_t eos = -1;
  bool add_bos = true;
  std::string chat_template;

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, tok::MatchScratch& scratch, std::vector<int32_t>& out) const;
  void split_added(std::string_view text, const TokenTrie& trie,
                   std::vector<std::pair<std::string_view, int32_t>>& out) const;
};

void Tokenizer::Impl::bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const {
  const int n = static_cast<int>(piece.size());
  if (ignore_merges) {
    const int32_t whole = vocab.find(to_byte_level(piece));
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  std::vector<int32_t> id(n), prev(n), next(n);
  std::vector<uint8_t> alive(n, 1);
  for (int i = 0; i < n; ++i) {
    id[i] = byte_id[static_cast<unsigned char>(piece[i])];
    prev[i] = i - 1;
    next[i] = (i + 1 < n) ? i + 1 : -1;
  }
  struct Cand {
    int32_t rank, pos, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Cand> storage;
  storage.reserve(n);
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>(), std::move(storage));
  int32_t rank = 0, merged = 0;
  for (int i = 0; i + 1 < n; ++i) {
    if (merges.find(id[i], id[i + 1], rank, merged)) heap.push({rank, i, merged});
  }
  while (!heap.empty()) {
    const Cand top = heap.top();
    heap.pop();
    const int pos = top.pos;
    if (!alive[pos]) continue;
    const int nx = next[pos];
    if (nx < 0) continue;
    if (!merges.find(id[pos], id[nx], rank, merged) || merged != top.merged || rank != top.rank) continue;
    id[pos] = merged;
    alive[nx] = 0;
    next[pos] = next[nx];
    if (next[nx] >= 0) prev[next[nx]] = pos;
    if (prev[pos] >= 0 && merges.find(id[prev[pos]], id[pos], rank, merged)) heap.push({rank, prev[pos], merged});
    if (next[pos] >= 0 && merges.find(id[pos], id[next[pos]], rank, merged)) heap.push({rank, pos, merged});
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    out.push_back(byte_id[static_cast<unsigned char>(piece[0])]);
    return;
  }
  constexpr size_t kMaxCachedPiece = 256;
  constexpr size_t kMaxCacheEntries = 1 << 16;
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(std::string(piece));
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  bpe_uncached(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(std::string(piece), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
  }
}

void Tokenizer::Impl::encode_plain(std::string_view text, tok::MatchScratch& scratch,
                                   std::vector<int32_t>& out) const {
  std::deque<std::string> arena;
  std::vector<std::string_view> pieces;
  auto flush = [&](size_t b, size_t e) {
    if (e <= b) return;
    pieces.clear();
    pre.split(text.substr(b, e - b), scratch, arena, pieces);
    for (std::string_view p : pieces) bpe(p, out);
  };
  // Valid UTF-8 runs go through the pre-tokenizer; each invalid byte is a piece of its own.
  size_t run = 0, i = 0;
  while (i < text.size()) {
    const size_t len = tok::utf8_valid_len(text, i);
    if (len == 0) {
      flush(run, i);
      out.push_back(byte_id[static_cast<unsigned char>(text[i])]);
      ++i;
      run = i;
    } else {
      i += len;
    }
  }
  flush(run, text.size());
}

// Cuts `text` at the leftmost-longest occurrences of the trie's tokens. Output: pieces of
// text (token index -1) and matched tokens (index into `added`).
void Tokenizer::Impl::split_added(std::string_view text, const TokenTrie& trie,
                                  std::vector<std::pair<std::string_view, int32_t>>& out) const {
  if (trie.empty()) {
    if (!text.empty()) out.emplace_back(text, -1);
    return;
  }
  std::vector<std::pair<size_t, int32_t>> cands;
  size_t gap = 0;  // start of the pending text gap
  size_t pos = 0;
  while (pos < text.size()) {
    if (!trie.may_start(static_cast<unsigned char>(text[pos]))) {
      ++pos;
      continue;
    }
    trie.matches_at(text, pos, cands);
    bool found = false;
    for (const auto& [len, index] : cands) {
      const AddedToken& t = added[index];
      size_t b = pos, e = pos + len;
      if (t.single_word) {
        const bool left_ok = b == 0 || !is_word_byte(static_cast<unsigned char>(text[b - 1]));
        const bool right_ok = e == text.size() || !is_word_byte(static_cast<unsigned char>(text[e]));
        if (!left_ok || !right_ok) continue;
      }
      if (t.lstrip) {
        while (b > gap && is_ascii_space(static_cast<unsigned char>(text[b - 1]))) --b;
      }
      if (t.rstrip) {
        while (e < text.size() && is_ascii_space(static_cast<unsigned char>(text[e]))) ++e;
      }
      if (b > gap) out.emplace_back(text.substr(gap, b - gap), -1);
      out.emplace_back(text.substr(b, e - b), index);
      gap = pos = e;
      found = true;
      break;
    }
    if (!found) ++pos;
  }
  if (gap < text.size()) out.emplace_back(text.substr(gap), -1);
}

Result<Tokenizer> Tokenizer::load(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file, config;
  if (fs::is_directory(path, ec)) {
    file = path / "tokenizer.json";
    config = path / "tokenizer_config.json";
    if (!fs::exists(file, ec)) return make_error(file.string() + ": not found (no tokenizer.json in the model directory)");
  } else {
    if (!fs::exists(path, ec)) return make_error(path.string() + ": no such file or directory");
    file = path;
    config = path.parent_path() / "tokenizer_config.json";
  }
  const std::string fname = file.string();
  tok::TokenizerJson tj;
  {
    MT_ASSIGN(std::string text, read_file(file));
    MT_ASSIGN(tj, tok::parse_tokenizer_json(text, fname));
  }
  std::optional<json> cfg;
  if (fs::exists(config, ec)) {
    try {
      MT_ASSIGN(json c, parse_json_file(config));
      cfg = std::move(c);
    } catch (const std::exception& e) {
      return make_error(config.string() + ": unexpected content: " + e.what());
    }
  }
  return build(std::move(tj), fname, cfg, config.string());
}

Result<Tokenizer> Tokenizer::from_vocab(const TokenizerVocab& v, const std::string& label) {
  // The same tables tokenizer.json would give: the vocabulary, the added tokens with their HF
  // flags (control tokens are special and matched as written; user-defined ones are not
  // special and are matched in the normalised pass), the merges, the named pre-tokenizer.
  const json* pre = tok::named_pre_tokenizer(v.pre);
  if (!pre)
    return make_error(label + ": pre-tokenizer '" + v.pre + "' is not supported (DeepSeek V3's is 'deepseek-v3')");
  if (v.types.size() != v.tokens.size())
    return make_error(label + ": " + std::to_string(v.tokens.size()) + " tokens but " + std::to_string(v.types.size()) +
                      " token types");
  tok::TokenizerJson tj;
  tj.has_vocab = tj.has_merges = true;
  json added = json::array();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const int t = v.types[id];
    // Unused slots (the padding of a rounded-up vocabulary) and empty control tokens are no
    // tokens at all, as in the Hugging Face tokenizer.
    if (t == TokenizerVocab::kUnused || v.tokens[id].empty()) continue;
    if (t == TokenizerVocab::kControl || t == TokenizerVocab::kUserDefined) {
      const bool special = t == TokenizerVocab::kControl;
      added.push_back({{"id", id}, {"content", v.tokens[id]}, {"special", special}, {"normalized", !special},
                       {"lstrip", false}, {"rstrip", false}, {"single_word", false}});
    } else {
      tj.vocab.emplace_back(v.tokens[id], static_cast<int64_t>(id));
    }
  }
  for (size_t k = 0; k < v.merges.size(); ++k) {
    const std::string& m = v.merges[k];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos)
      return make_error(label + ": merge " + std::to_string(k) + " (\"" + m.substr(0, 40) + "\") is not two tokens");
    tj.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  tj.root = {{"normalizer", {{"type", "Sequence"}, {"normalizers", json::array()}}},
             {"model", {{"type", "BPE"}}},
             {"added_tokens", std::move(added)},
             {"pre_tokenizer", *pre}};
  json cfg = json::object();
  cfg["add_bos_token"] = v.add_bos;
  if (!v.chat_template.empty()) cfg["chat_template"] = v.chat_template;
  // BOS and EOS by id (two tokens may share a spelling); without one, by the default spellings.
  auto kept = [&](int64_t id) {
    return id >= 0 && size_t(id) < v.tokens.size() && !v.tokens[size_t(id)].empty() &&
           v.types[size_t(id)] != TokenizerVocab::kUnused;
  };
  return build(std::move(tj), label, cfg, label, kept(v.bos_id) ? v.bos_id : -2, kept(v.eos_id) ? v.eos_id : -2);
}

Result<Tokenizer> Tokenizer::build(tok::TokenizerJson tj, const std::string& fname, const std::optional<json>& config,
                                   const std::string& cname, int64_t bos_id, int64_t eos_id) {
  auto impl = std::make_shared<Impl>();
  impl->file = fname;
  try {
    const json& root = tj.root;
    if (!root.is_object()) return make_error(fname + ": top level is not a JSON object");

    // ---- normalizer: only the identity is supported ----
    if (root.contains("normalizer") && !root["normalizer"].is_null()) {
      const json& nz = root["normalizer"];
      const bool empty_seq = nz.is_object() && nz.value("type", "") == "Sequence" && nz.contains("normalizers") &&
                             nz["normalizers"].is_array() && nz["normalizers"].empty();
      if (!empty_seq) return make_error(fname + ": unsupported normalizer " + nz.dump().substr(0, 120));
    }

    // ---- model ----
    if (!root.contains("model") || !root["model"].is_object()) {
      return make_error(fname + ": no \"model\" object");
    }
    const json& model = root["model"];
    if (model.contains("type") && model["type"].is_string() && model["type"].get<std::string>() != "BPE") {
      return make_error(fname + ": model type \"" + model["type"].get<std::string>() +
                        "\" is not supported (only BPE)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null() &&
          !(model[key].is_string() && model[key].get<std::string>().empty())) {
        return make_error(fname + ": model." + key + " is not supported");
      }
    }
    impl->ignore_merges = model.contains("ignore_merges") && model["ignore_merges"].is_boolean() &&
                          model["ignore_merges"].get<bool>();
    if (!tj.has_vocab) return make_error(fname + ": model has no \"vocab\" object");
    if (!tj.has_merges) return make_error(fname + ": model has no \"merges\" array");
    int64_t max_id = -1;
    for (const auto& [spelling, id] : tj.vocab) {
      if (id < 0 || id >= kMaxId) {
        return make_error(fname + ": vocab entry \"" + spelling + "\" has out-of-range id " + std::to_string(id));
      }
      max_id = std::max(max_id, id);
    }
    impl->vocab.build(std::move(tj.vocab));

    // ---- added tokens ----
    if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
      if (!root["added_tokens"].is_array()) return make_error(fname + ": \"added_tokens\" is not an array");
      size_t k = 0;
      for (const json& a : root["added_tokens"]) {
        const std::string where = fname + ": added_tokens[" + std::to_string(k++) + "]";
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
            !a["content"].is_string()) {
          return make_error(where + " needs an integer \"id\" and a string \"content\"");
        }
        AddedToken t;
        const int64_t id = a["id"].get<int64_t>();
        if (id < 0 || id >= kMaxId) return make_error(where + " has out-of-range id " + std::to_string(id));
        t.id = static_cast<int32_t>(id);
        t.content = a["content"].get<std::string>();
        if (t.content.empty()) return make_error(where + " has empty content");
        auto flag = [&](const char* key, bool def) {
          return a.contains(key) && a[key].is_boolean() ? a[key].get<bool>() : def;
        };
        t.special = flag("special", false);
        t.normalized = flag("normalized", !t.special);
        t.lstrip = flag("lstrip", false);
        t.rstrip = flag("rstrip", false);
        t.single_word = flag("single_word", false);
        max_id = std::max(max_id, id);
        impl->added_by_content[t.content] = t.id;
        impl->added.push_back(std::move(t));
      }
      for (size_t i = 0; i < impl->added.size(); ++i) {
        const AddedToken& t = impl->added[i];
        (t.normalized ? impl->trie_norm : impl->trie_raw).insert(t.content, static_cast<int32_t>(i));
      }
    }
    impl->vocab_size = max_id + 1;

    // ---- id -> bytes ----
    impl->id_bytes.assign(static_cast<size_t>(impl->vocab_size), std::string());
    impl->id_valid.assign(static_cast<size_t>(impl->vocab_size), 0);
    for (const auto& [spelling, id] : impl->vocab.entries()) {
      impl->id_bytes[id] = from_byte_level(spelling);
      impl->id_valid[id] = 1;
    }
    for (const AddedToken& t : impl->added) {
      impl->id_bytes[t.id] = t.content;
      impl->id_valid[t.id] = 1;
    }

    // ---- byte tokens ----
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, alphabet().byte_to_cp[b]);
      const int32_t id = impl->vocab.find(s);
      if (id < 0) {
        return make_error(fname + ": vocab lacks the byte-level token for byte " + std::to_string(b) +
                          " (not a byte-level BPE vocabulary)");
      }
      impl->byte_id[b] = id;
    }

    // ---- merges (given as "a b" strings or [a, b] pairs; the reader makes both pairs) ----
    impl->merges.reserve(tj.merges.size());
    std::string joined;
    int32_t rank = 0;
    for (const auto& [left, right] : tj.merges) {
      joined.assign(left);
      joined += right;
      const int32_t ia = impl->vocab.find(left), ib = impl->vocab.find(right), im = impl->vocab.find(joined);
      if (ia < 0 || ib < 0 || im < 0) {
        return make_error(fname + ": merges[" + std::to_string(rank) + "] (\"" + left + "\", \"" + right +
                          "\") uses a token that is not in the vocab");
      }
      impl->merges.insert(ia, ib, rank, im);
      ++rank;
    }

    // ---- pre-tokenizer ----
    const json null_json;
    MT_ASSIGN(impl->pre, tok::PreTokenizer::from_json(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : null_json, fname));
    if (!impl->pre.has_byte_level()) {
      return make_error(fname + ": pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
    }
  } catch (const std::exception& e) {
    return make_error(fname + ": unexpected content: " + e.what());
  }

  // ---- tokenizer_config.json (optional) ----
  std::string bos_text = kDefaultBos, eos_text = kDefaultEos;
  if (config) {
    try {
      const json& cfg = *config;
      if (!cfg.is_object()) return make_error(cname + ": top level is not a JSON object");
      if (std::string s = config_token(cfg, "bos_token"); !s.empty()) bos_text = s;
      if (std::string s = config_token(cfg, "eos_token"); !s.empty()) eos_text = s;
      if (cfg.contains("add_bos_token")) {
        if (!cfg["add_bos_token"].is_boolean()) return make_error(cname + ": add_bos_token is not a boolean");
        impl->add_bos = cfg["add_bos_token"].get<bool>();
      }
      if (cfg.contains("chat_template")) {
        const json& ct = cfg["chat_template"];
        if (ct.is_string()) {
          impl->chat_template = ct.get<std::string>();
        } else if (ct.is_array()) {  // [{"name": ..., "template": ...}]: prefer "default"
          for (const json& e : ct) {
            if (!e.is_object() || !e.contains("template") || !e["template"].is_string()) continue;
            if (impl->chat_template.empty() || e.value("name", "") == "default") {
              impl->chat_template = e["template"].get<std::string>();
            }
          }
        } else if (!ct.is_null()) {
          return make_error(cname + ": chat_template is neither a string nor a list of templates");
        }
      }
    } catch (const std::exception& e) {
      return make_error(cname + ": unexpected content: " + e.what());
    }
  }
  auto lookup = [&](const std::string& t) -> int32_t {
    if (auto it = impl->added_by_content.find(t); it != impl->added_by_content.end()) return it->second;
    return impl->vocab.find(t);
  };
  impl->bos = bos_id >= 0 ? static_cast<int32_t>(bos_id) : lookup(bos_text);
  impl->eos = eos_id >= 0 ? static_cast<int32_t>(eos_id) : lookup(eos_text);

  Tokenizer tk;
  tk.impl_ = std::move(impl);
  return tk;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  if (!impl_ || text.empty()) return out;
  const Impl& im = *impl_;
  out.reserve(text.size() / 3 + 4);
  std::vector<std::pair<std::string_view, int32_t>> pass1, pass2;
  im.split_added(text, im.trie_raw, pass1);
  for (const auto& [piece, index] : pass1) {
    if (index >= 0) {
      pass2.emplace_back(piece, index);
    } else {
      im.split_added(piece, im.trie_norm, pass2);
    }
  }
  tok::MatchScratch scratch;
  for (const auto& [piece, index] : pass2) {
    if (index >= 0) {
      out.push_back(im.added[index].id);
    } else {
      im.encode_plain(piece, scratch, out);
    }
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  if (!impl_) return out;
  const Impl& im = *impl_;
  for (int32_t id : ids) {
    if (id >= 0 && id < im.vocab_size && im.id_valid[id]) out += im.id_bytes[id];
  }
  return out;
}

std::string Tokenizer::token_text(int32_t id) const {
  if (!impl_ || id < 0 || id >= impl_->vocab_size || !impl_->id_valid[id]) return "";
  return impl_->id_bytes[id];
}

int64_t Tokenizer::vocab_size() const { return impl_ ? impl_->vocab_size : 0; }
int32_t Tokenizer::bos_id() const { return impl_ ? impl_->bos : -1; }
int32_t Tokenizer::eos_id() const { return impl_ ? impl_->eos : -1; }
bool Tokenizer::add_bos() const { return impl_ ? impl_->add_bos : true; }

std::optional<int32_t> Tokenizer::find_token(std::string_view token) const {
  if (!impl_ || token.empty()) return std::nullopt;
  const std::string t(token);
  if (auto it = impl_->added_by_content.find(t); it != impl_->added_by_content.end()) return it->second;
  if (int32_t id = impl_->vocab.find(t); id >= 0) return id;
  if (int32_t id = impl_->vocab.find(to_byte_level(token)); id >= 0) return id;
  return std::nullopt;
}

const std::string& Tokenizer::chat_template() const {
  static const std::string kEmpty;
  return impl_ ? impl_->chat_template : kEmpty;
}

}  // namespace mt
