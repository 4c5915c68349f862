// Fuzz target: the command line's value parsers, `--ram-budget 24G` (parse_bytes) and
// `--ids 1,2,3` (parse_id_list), must never crash or wrap: accepted sizes are non-negative,
// accepted ids are non-negative int32.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "tools/moetier/args.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto b = mt::cli::parse_bytes(text);
  if (b.ok() && *b < 0) std::abort();
  auto ids = mt::cli::parse_id_list(text);
  if (ids.ok())
    for (int32_t id : *ids)
      if (id < 0) std::abort();
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  for (const char* s : {"24G", "1.5GiB", "512M", "4096", "0", "1,2,3", "128000,5", "9223372036854775807", "1e30G",
                        "-1", "0x10", "  7  "})
    seeds.emplace_back(s, s + std::char_traits<char>::length(s));
  return seeds;
}
