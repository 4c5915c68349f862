// The tokenizer built from vocabulary lists, as a GGUF stores it (Tokenizer::from_vocab): the
// DeepSeek V3 tokenizer.json turned into those lists as llama.cpp's converter does (tokens in id
// order; added tokens typed control when special, user-defined otherwise; merges "a b"; the
// pre-tokenizer by name) must encode every golden line to the golden ids, and the chat
// renderings too. Expected values come from data/tokenizer-deepseek-v3/*.jsonl (HF tokenizers).
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

namespace {

using json = nlohmann::json;
const std::string kDir = std::string(MOETIER_TEST_DATA) + "/tokenizer-deepseek-v3";

json read_json(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// tokenizer.json + tokenizer_config.json as GGUF lists.
mt::TokenizerVocab lists_from_hf(const json& tj, const json& cfg) {
  mt::TokenizerVocab v;
  size_t n = 0;
  for (const auto& [s, id] : tj["model"]["vocab"].items()) n = std::max<size_t>(n, id.get<size_t>() + 1);
  for (const json& a : tj["added_tokens"]) n = std::max<size_t>(n, a["id"].get<size_t>() + 1);
  v.tokens.assign(n, "");
  v.types.assign(n, mt::TokenizerVocab::kNormal);
  for (const auto& [s, id] : tj["model"]["vocab"].items()) v.tokens[id.get<size_t>()] = s;
  for (const json& a : tj["added_tokens"]) {
    v.tokens[a["id"].get<size_t>()] = a["content"].get<std::string>();
    v.types[a["id"].get<size_t>()] = a["special"].get<bool>() ? mt::TokenizerVocab::kControl : mt::TokenizerVocab::kUserDefined;
  }
  for (const json& m : tj["model"]["merges"]) v.merges.push_back(m.get<std::string>());
  v.pre = "deepseek-v3";
  v.bos_id = 0;
  v.eos_id = 1;
  v.add_bos = cfg.value("add_bos_token", true);
  v.chat_template = cfg.value("chat_template", "");
  return v;
}

}  // namespace

TEST_CASE("the named deepseek-v3 pre-tokenizer is tokenizer.json's, exactly", "[tokenizer][gguf]") {
  const json tj = read_json(kDir + "/tokenizer.json");
  const json* pre = mt::tok::named_pre_tokenizer("deepseek-v3");
  REQUIRE(pre);
  CHECK(*pre == tj["pre_tokenizer"]);
  CHECK(mt::tok::named_pre_tokenizer("llama3") == nullptr);
}

TEST_CASE("a tokenizer from GGUF-style lists encodes the golden files as HF does", "[tokenizer][gguf][golden]") {
  const json tj = read_json(kDir + "/tokenizer.json"), cfg = read_json(kDir + "/tokenizer_config.json");
  auto built = mt::Tokenizer::from_vocab(lists_from_hf(tj, cfg), "lists");
  REQUIRE(built.ok());
  const mt::Tokenizer& tok = *built;
  auto hf = mt::Tokenizer::load(kDir);
  REQUIRE(hf.ok());
  CHECK(tok.vocab_size() == hf->vocab_size());
  CHECK(tok.bos_id() == hf->bos_id());
  CHECK(tok.eos_id() == hf->eos_id());
  CHECK(tok.add_bos() == hf->add_bos());
  CHECK(tok.chat_template() == hf->chat_template());
  int compared = 0;
  for (const json& l : read_jsonl(kDir + "/golden_public.jsonl")) {
    const auto expected = (l["hf_rust_agrees"].get<bool>() ? l["ids"] : l["ids_hf_rust"]).get<std::vector<int32_t>>();
    INFO(l["id"].get<std::string>() << ": " << l["text"].dump());
    CHECK(tok.encode(l["text"].get<std::string>()) == expected);
    CHECK(tok.decode(l["ids"].get<std::vector<int32_t>>()) == l["decoded"].get<std::string>());
    ++compared;
  }
  for (const json& l : read_jsonl(kDir + "/chat_golden.jsonl")) {
    if (!l["hf_rust_agrees"].get<bool>()) continue;
    INFO(l["id"].get<std::string>());
    CHECK(tok.encode(l["rendered"].get<std::string>()) == l["ids"].get<std::vector<int32_t>>());
    ++compared;
  }
  CHECK(compared >= 318);
}

TEST_CASE("unused slots and empty control tokens are no tokens; BOS and EOS go by id", "[tokenizer][gguf]") {
  const json tj = read_json(kDir + "/tokenizer.json"), cfg = read_json(kDir + "/tokenizer_config.json");
  mt::TokenizerVocab v = lists_from_hf(tj, cfg);
  const auto hf = mt::Tokenizer::load(kDir);
  REQUIRE(hf.ok());
  // A vocabulary padded as converters pad it, with an empty control token in the padding.
  for (int i = 0; i < 5; ++i) {
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    v.types.push_back(mt::TokenizerVocab::kUnused);
  }
  v.tokens.push_back("");
  v.types.push_back(mt::TokenizerVocab::kControl);
  auto t = mt::Tokenizer::from_vocab(v, "padded");
  REQUIRE(t.ok());
  CHECK(t->vocab_size() == hf->vocab_size());
  CHECK(t->encode("[PAD0] hello") == hf->encode("[PAD0] hello"));
  // EOS given by id, even where its spelling is not the default one.
  v.eos_id = 2;
  auto e = mt::Tokenizer::from_vocab(v, "eos2");
  REQUIRE(e.ok());
  CHECK(e->eos_id() == 2);
  CHECK(e->bos_id() == 0);
}

TEST_CASE("bad vocabulary lists are one clear error", "[tokenizer][gguf]") {
  const json tj = read_json(kDir + "/tokenizer.json"), cfg = read_json(kDir + "/tokenizer_config.json");
  mt::TokenizerVocab v = lists_from_hf(tj, cfg);
  {
    mt::TokenizerVocab b = v;
    b.pre = "llama3";
    auto r = mt::Tokenizer::from_vocab(b, "x.gguf");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error(), Catch::Contains("x.gguf") && Catch::Contains("llama3"));
  }
  {
    mt::TokenizerVocab b = v;
    b.merges[5] = "nospace";
    auto r = mt::Tokenizer::from_vocab(b, "x.gguf");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error(), Catch::Contains("merge 5"));
  }
  {
    mt::TokenizerVocab b = v;
    b.types.pop_back();
    CHECK_FALSE(mt::Tokenizer::from_vocab(b, "x.gguf").ok());
  }
  {
    mt::TokenizerVocab b = v;
    b.merges[7] = "Ġt zzzzzzzz_not_a_token";
    auto r = mt::Tokenizer::from_vocab(b, "x.gguf");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error(), Catch::Contains("not in the vocab"));
  }
}
