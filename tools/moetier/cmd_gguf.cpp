// moetier gguf: what a GGUF file (or split model) holds, checked as strictly as moetier will
// read it, and any tensor decoded to a NumPy file.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu_kernels/ggml_dequant.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/text_file.h"
#include "runtime/weights/gguf.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/npy.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier gguf FILE.gguf [--tensors] [--tensor NAME --out FILE.npy] [--json FILE]

Reads a GGUF model (llama.cpp's format, v2/v3; a split model from any of its parts,
NAME-00001-of-0000N.gguf) and checks it as moetier reads it: every key, every tensor's type,
shape, alignment and bytes. Prints the architecture, the model's shape keys, the tokenizer, and
the bytes per tensor type, saying which types moetier can decode.

  --tensors          list every tensor: name, type, shape (ggml order, innermost first), bytes, file
  --tensor NAME      decode one tensor to fp32 ...
  --out FILE.npy     ... into this NumPy file (shape in NumPy order: outermost first)
  --json FILE        also write the metadata (arrays as their length) and the tensor table as JSON
)";

std::string value_text(const GgufValue& v) {
  switch (v.type) {
    case GgufType::String: return v.s.size() > 60 ? "\"" + v.s.substr(0, 57) + "...\"" : "\"" + v.s + "\"";
    case GgufType::Array: return std::string("[") + gguf_type_name(v.elem) + " x " + std::to_string(v.count) + "]";
    case GgufType::F32: case GgufType::F64: { char b[32]; std::snprintf(b, sizeof b, "%g", v.f); return b; }
    case GgufType::Bool: return v.u ? "true" : "false";
    case GgufType::U64: return std::to_string(v.u);
    default: return v.as_int() ? std::to_string(*v.as_int()) : "?";
  }
}

nlohmann::ordered_json value_json(const GgufValue& v) {
  switch (v.type) {
    case GgufType::String: return v.s;
    case GgufType::Array: return {{"array", gguf_type_name(v.elem)}, {"count", v.count}};
    case GgufType::F32: case GgufType::F64: return v.f;
    case GgufType::Bool: return v.u != 0;
    case GgufType::U64: return v.u;
    default: return v.as_int() ? nlohmann::ordered_json(*v.as_int()) : nlohmann::ordered_json();
  }
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}
}  // namespace

int cmd_gguf(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv, {{"tensors", false}, {"tensor"}, {"out"}, {"json"}, {"help", false}}, "gguf");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  if (a.positional().size() != 1)
    return std::fprintf(stderr, "error: gguf needs one GGUF file (moetier gguf --help)\n"), 2;
  if (a.has("tensor") != a.has("out")) return std::fprintf(stderr, "error: --tensor and --out go together\n"), 2;
  auto model = GgufModel::open(a.positional()[0]);
  if (!model) return std::fprintf(stderr, "error: %s\n", model.error().c_str()), 1;
  const GgufModel& g = *model;

  // Bytes and tensors per type.
  struct PerType {
    int64_t tensors = 0;
    uint64_t bytes = 0;
    std::string example;
  };
  std::map<uint32_t, PerType> per_type;
  for (const GgufTensor& t : g.tensors()) {
    PerType& p = per_type[t.type];
    ++p.tensors;
    p.bytes += t.nbytes;
    if (p.example.empty()) p.example = t.name;
  }
  auto str_key = [&](const std::string& k) {
    const GgufValue* v = g.find_key(k);
    return v && v->as_string() ? *v->as_string() : std::string();
  };
  const std::string arch = str_key("general.architecture");
  std::printf("%s: GGUF v%u, %zu part%s, %zu tensors, %s of tensor data\n", a.positional()[0].c_str(), g.version(),
              g.files().size(), g.files().size() == 1 ? "" : "s", g.tensors().size(),
              format_bytes(double(g.data_bytes())).c_str());
  std::printf("architecture: %s%s\n", arch.empty() ? "(none)" : arch.c_str(),
              str_key("general.name").empty() ? "" : ("   name: " + str_key("general.name")).c_str());
  if (!arch.empty()) {
    std::printf("%s keys:\n", arch.c_str());
    for (const auto& [k, v] : g.metadata())
      if (k.rfind(arch + ".", 0) == 0) std::printf("  %-48s %s\n", k.c_str(), value_text(v).c_str());
  }
  if (const GgufValue* tokens = g.find_key("tokenizer.ggml.tokens"))
    std::printf("tokenizer: %s, %llu tokens\n", str_key("tokenizer.ggml.model").c_str(),
                static_cast<unsigned long long>(tokens->count));
  std::printf("tensor types:\n");
  std::vector<std::string> missing;
  for (const auto& [type, p] : per_type) {
    const bool ok = cpu::ggml_can_dequantize(type);
    std::printf("  %-8s %6lld tensors %12s  %s\n", ggml_type_name(type).c_str(), static_cast<long long>(p.tensors),
                format_bytes(double(p.bytes)).c_str(), ok ? "" : "(moetier cannot decode this type yet)");
    if (!ok) missing.push_back(ggml_type_name(type) + " (e.g. " + p.example + ")");
  }
  if (!missing.empty()) {
    std::printf("not decodable by moetier:");
    for (const std::string& m : missing) std::printf(" %s;", m.c_str());
    std::printf("\n");
  }
  if (a.has("tensors"))
    for (const GgufTensor& t : g.tensors())
      std::printf("  %-52s %-8s %-24s %12s  %s\n", t.name.c_str(), ggml_type_name(t.type).c_str(),
                  shape_text(t.dims).c_str(), format_bytes(double(t.nbytes)).c_str(), t.file.c_str());

  if (auto path = a.get("json")) {
    nlohmann::ordered_json j;
    j["version"] = g.version();
    for (const auto& f : g.files()) j["files"].push_back(f.filename().string());
    for (const auto& [k, v] : g.metadata()) j["metadata"][k] = value_json(v);
    j["tensors"] = nlohmann::ordered_json::array();
    for (const GgufTensor& t : g.tensors())
      j["tensors"].push_back({{"name", t.name}, {"type", ggml_type_name(t.type)}, {"dims", t.dims},
                              {"bytes", t.nbytes}, {"file", t.file}});
    if (Status s = write_file_atomic(*path, j.dump(1) + "\n"); !s.ok())
      return std::fprintf(stderr, "error: %s\n", s.error().c_str()), 1;
  }

  if (auto name = a.get("tensor")) {
    const GgufTensor* t = g.find(*name);
    if (!t) return std::fprintf(stderr, "error: %s has no tensor '%s' (--tensors lists them)\n",
                                a.positional()[0].c_str(), name->c_str()), 1;
    if (!cpu::ggml_can_dequantize(t->type))
      return std::fprintf(stderr, "error: tensor '%s' is %s, which moetier cannot decode yet\n", name->c_str(),
                          ggml_type_name(t->type).c_str()), 1;
    std::vector<float> out(static_cast<size_t>(t->numel()));
    cpu::ggml_dequantize(t->type, t->data, t->numel(), out.data());
    const std::vector<int64_t> shape(t->dims.rbegin(), t->dims.rend());
    if (Status s = write_npy_f32(*a.get("out"), out.data(), shape); !s.ok())
      return std::fprintf(stderr, "error: %s\n", s.error().c_str()), 1;
    std::printf("wrote %s: %s %s as fp32\n", a.get("out")->c_str(), name->c_str(), shape_text(shape).c_str());
  }
  return 0;
}

}  // namespace mt::cli
