#include "runtime/weights/gguf_tokenizer.h"

namespace mt {

Result<TokenizerVocab> gguf_tokenizer_vocab(const GgufModel& g) {
  const std::string file = g.files().front().string();
  auto get = [&](const char* key) { return g.find_key(key); };
  auto bad = [&](const std::string& key, const std::string& what) { return make_error(file + ": " + key + " " + what); };
  const GgufValue* model = get("tokenizer.ggml.model");
  if (!model) return make_error(file + ": no tokenizer in the file (no tokenizer.ggml.model); put the model's "
                                       "tokenizer.json beside it");
  if (!model->as_string() || *model->as_string() != "gpt2")
    return bad("tokenizer.ggml.model", "is '" + (model->as_string() ? *model->as_string() : std::string("?")) +
                                           "'; DeepSeek V3's tokenizer is byte-level BPE ('gpt2')");
  TokenizerVocab v;
  const GgufValue* tokens = get("tokenizer.ggml.tokens");
  if (!tokens || tokens->type != GgufType::Array || tokens->elem != GgufType::String)
    return bad("tokenizer.ggml.tokens", "is missing or not an array of strings");
  v.tokens = tokens->strings;
  if (const GgufValue* types = get("tokenizer.ggml.token_type")) {
    if (types->type != GgufType::Array || types->ints.size() != types->count || types->count != v.tokens.size())
      return bad("tokenizer.ggml.token_type", "is not an array of integers, one per token");
    for (int64_t t : types->ints) v.types.push_back(static_cast<int32_t>(t));
  } else {
    v.types.assign(v.tokens.size(), TokenizerVocab::kNormal);
  }
  const GgufValue* merges = get("tokenizer.ggml.merges");
  if (!merges || merges->type != GgufType::Array || merges->elem != GgufType::String)
    return bad("tokenizer.ggml.merges", "is missing or not an array of strings");
  v.merges = merges->strings;
  const GgufValue* pre = get("tokenizer.ggml.pre");
  if (!pre || !pre->as_string()) return bad("tokenizer.ggml.pre", "is missing (the pre-tokenizer's name)");
  v.pre = *pre->as_string();
  for (auto [key, out] : {std::pair{"tokenizer.ggml.bos_token_id", &v.bos_id}, std::pair{"tokenizer.ggml.eos_token_id", &v.eos_id}})
    if (const GgufValue* id = get(key)) {
      if (!id->as_int() || *id->as_int() < 0 || *id->as_int() >= static_cast<int64_t>(v.tokens.size()))
        return bad(key, "is not a token id of this vocabulary");
      *out = *id->as_int();
    }
  if (const GgufValue* b = get("tokenizer.ggml.add_bos_token")) {
    if (b->type != GgufType::Bool) return bad("tokenizer.ggml.add_bos_token", "is not a bool");
    v.add_bos = b->u != 0;
  }
  if (const GgufValue* t = get("tokenizer.chat_template"); t && t->as_string()) v.chat_template = *t->as_string();
  return v;
}

Result<Tokenizer> load_gguf_tokenizer(const GgufModel& g, const std::filesystem::path& gguf_path, std::string* source) {
  std::error_code ec;
  const std::filesystem::path beside = gguf_path.parent_path() / "tokenizer.json";
  if (std::filesystem::exists(beside, ec)) {
    if (source) *source = beside.string();
    return Tokenizer::load(beside);
  }
  MT_ASSIGN(TokenizerVocab v, gguf_tokenizer_vocab(g));
  if (source) *source = gguf_path.string() + " (its own tokenizer)";
  return Tokenizer::from_vocab(v, gguf_path.string());
}

}  // namespace mt
