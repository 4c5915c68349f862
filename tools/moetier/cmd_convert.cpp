#include <unistd.h>

#include <cstdio>

#include "planner/dense_format.h"
#include "runtime/weights/gguf.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/convert.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier convert SRC DST [--experts q4|q8|bf16] [--dense auto|q8|q4|bf16] [--group N] [--force]
       moetier convert FILE.gguf DST [--gguf-tiles on|off] [--force]

Turns a Hugging Face DeepSeek checkpoint (FP8 block-scaled or BF16) into the packed store that
moetier runs from (format 3): manifest.json (config, formats, a crc32c per blob and per tensor),
every non-expert weight in dense.bin in the layout its kernel streams, and one 4 KiB-aligned blob
per (layer, expert) in the CPU kernels' layout, so one O_DIRECT read brings a whole expert and
nothing is repacked at run time. Memory stays bounded (one expert, one slab of a dense matrix);
DST is written as DST.partial and renamed at the end, so an interrupted conversion never leaves
a store that looks valid.

  --experts FMT   routed experts: q4 (4-bit, fp16 group scales), q8 (int8, fp32 group
                  scales), bf16                                                          [q4]
  --dense FMT     attention, indexer, shared experts, dense FFN, embedding and lm_head:
                  q8 or q4 (packed like the experts), bf16. kv_b, routers and norms stay as
                  stored. auto: q8, or q4 when the q8 weights would fill more than half of
                  this machine's RAM (the 671B model below ~40 GB)                      [auto]
  --group N       quantisation group size along the reduction dimension                  [32]
  --force         replace DST if it exists

A GGUF file (llama.cpp's deepseek2, any part of a split model) keeps its own quantisation: each
expert's blocks are copied into its blob as they are (Q4_K_M's Q4_K and Q6_K mix included), every
other weight into dense.bin as stored, so the store computes what the GGUF does and streams its
experts from disk like any store (docs/gguf.md). kv_b is stored rejoined in fp32.

  --gguf-tiles on|off   each expert matrix, and each other matrix the model multiplies (not the
                        embedding or kv_b), of Q2_K..Q6_K or Q8_0 (rows a multiple of 16) as
                        16-row tiles of its blocks (the same bytes rearranged, Q4_K/Q5_K 2-3%
                        larger), which the tile GEMV reads at RAM speed; off keeps the blocks in
                        the file's order (read by the slower block GEMV)                    [on]
)";
}  // namespace

int cmd_convert(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv, {{"experts"}, {"dense"}, {"group"}, {"gguf-tiles"}, {"force", false}, {"help", false}}, "convert");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m) { std::fprintf(stderr, "error: %s\n", m.c_str()); return 1; };
  if (a.positional().size() != 2) return fail("convert needs SRC and DST (see --help)");
  ConvertOptions o;
  o.src = a.positional()[0];
  o.dst = a.positional()[1];
  const std::string fmt = a.get_or("experts", "q4");
  if (!expert_quant_from_name(fmt, o.quant)) return fail("--experts must be q4, q8 or bf16, got '" + fmt + "'");
  auto group = a.get_int("group", 32, 1, 1 << 20);
  if (!group) return fail(group.error());
  o.group = *group;
  o.overwrite = a.has("force");
  if (is_gguf_path(o.src.string())) {
    // A GGUF keeps its own quantisation: its blocks are copied, not re-encoded.
    if (a.has("experts") || a.has("dense") || a.has("group"))
      return fail("--experts, --dense and --group do not apply to a GGUF file: the store keeps its blocks as they are");
    const std::string tiles = a.get_or("gguf-tiles", "on");
    if (tiles != "on" && tiles != "off") return fail("--gguf-tiles must be on or off, got '" + tiles + "'");
    o.gguf_tiles = tiles == "on";
    auto plan = plan_gguf_conversion(o);
    if (!plan) return fail(plan.error());
    std::fprintf(stderr, "convert: %llu experts of up to %s in their GGUF blocks%s, %s of other weights in the GGUF\n",
                 static_cast<unsigned long long>(plan->n_blobs), format_bytes(double(plan->blob_bytes)).c_str(),
                 o.gguf_tiles ? " (Q2_K..Q6_K and Q8_0 as row tiles, as are those of the other matrices)" : "", format_bytes(double(plan->dense_bytes)).c_str());
    ProgressBar bar("converting", static_cast<int64_t>(plan->input_bytes));
    Status st = convert_gguf_to_store(o, [&](uint64_t b) { bar.advance(static_cast<int64_t>(b)); });
    bar.finish();
    if (!st) return fail(st.error());
    std::printf("wrote %s\n", o.dst.c_str());
    return 0;
  }
  if (a.has("gguf-tiles"))
    return fail("--gguf-tiles applies to a GGUF file only; " + o.src.string() + " is not one (a .gguf file)");
  const std::string dense = a.get_or("dense", "auto");
  if (dense != "auto" && dense != "q8" && dense != "q4" && dense != "bf16")
    return fail("--dense must be auto, q8, q4 or bf16, got '" + dense + "'");
  auto plan = plan_conversion(o);
  if (!plan) return fail(plan.error());
  o.dense = dense;
  if (dense == "auto") {
    std::string why;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    o.dense = planner::default_dense_format(plan->config, pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0, &why);
    std::fprintf(stderr, "convert: --dense auto chose %s\n", why.c_str());
  }
  std::fprintf(stderr, "convert: %llu experts of %s as %s (group %lld), %s dense (as stored) as %s\n",
               static_cast<unsigned long long>(plan->n_blobs), format_bytes(double(plan->blob_bytes)).c_str(),
               fmt.c_str(), static_cast<long long>(o.group), format_bytes(double(plan->dense_bytes)).c_str(),
               o.dense.c_str());
  ProgressBar bar("converting", static_cast<int64_t>(plan->input_bytes));
  Status st = convert_to_store(o, [&](uint64_t b) { bar.advance(static_cast<int64_t>(b)); });
  bar.finish();
  if (!st) return fail(st.error());
  std::printf("wrote %s\n", o.dst.c_str());
  return 0;
}

}  // namespace mt::cli
