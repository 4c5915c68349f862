// Stand-alone driver for the fuzz_*.cpp targets (no libFuzzer needed): runs every seed of
// fuzz_seed_corpus(), then --iterations N random mutations of them (bit flips, byte changes,
// JSON tokens and numbers, truncation, insertion, erasure, splicing, interesting integers in
// an 8-byte little-endian length prefix), reproducibly from --seed S. Files named on the
// command line are run as extra inputs (to replay a crash). Crashes and UB surface as ASan /
// UBSan reports when built with -DMOETIER_SANITIZE=ON; otherwise it prints a one-line summary
// and returns 0.
//
//   fuzz_x [--iterations N] [--seed S] [--max-len BYTES] [FILE...]
//   fuzz_x --write-seeds DIR     writes the seed corpus as files (libFuzzer's starting corpus)
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
std::vector<std::vector<uint8_t>> fuzz_seed_corpus();

namespace {

using Bytes = std::vector<uint8_t>;

// Runs one input from a heap buffer of exactly its size, so that ASan flags any read past it.
void run_one(const Bytes& input) {
  auto* buf = new uint8_t[input.size()];
  if (!input.empty()) std::memcpy(buf, input.data(), input.size());
  LLVMFuzzerTestOneInput(buf, input.size());
  delete[] buf;
}

class Mutator {
 public:
  Mutator(uint64_t seed, const std::vector<Bytes>* seeds, size_t max_len)
      : rng_(seed), seeds_(seeds), max_len_(max_len) {}

  Bytes mutate(Bytes b) {
    const int rounds = 1 + static_cast<int>(below(3));
    length_set_ = false;
    for (int r = 0; r < rounds; ++r) mutate_once(b);
    // Usually make the length prefix agree with the (mutated) JSON header again, so that the
    // input gets past the length check and exercises the header validation.
    if (!length_set_ && below(8) != 0) fix_length_prefix(b);
    if (b.size() > max_len_) b.resize(max_len_);
    return b;
  }

  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

 private:
  void mutate_once(Bytes& b) {
    switch (below(12)) {
      case 0:  // flip one bit
        if (!b.empty()) b[below(b.size())] ^= static_cast<uint8_t>(1u << below(8));
        break;
      case 1:  // random byte, printable ASCII half of the time
        if (!b.empty()) b[below(b.size())] = random_byte();
        break;
      case 2: {  // interesting byte
        static const uint8_t kBytes[] = {0x00, 0xff, 0x7f, 0x80, 0xc0, 0xe0, 0xf0, 0xf8, '"',
                                         '\\', '{',  '}',  '[',  ']',  ',',  ':',  '-',  '0',
                                         '9',  'e',  '.',  ' ',  '\n'};
        if (!b.empty()) b[below(b.size())] = kBytes[below(sizeof kBytes)];
        break;
      }
      case 3:  // truncate
        if (!b.empty()) b.resize(below(b.size()));
        break;
      case 4: {  // insert random bytes
        const size_t n = 1 + below(16);
        const size_t at = below(b.size() + 1);
        Bytes ins(n);
        for (auto& c : ins) c = random_byte();
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), ins.begin(), ins.end());
        break;
      }
      case 5: {  // insert a JSON-ish token
        static const char* kTokens[] = {
            "{", "}", "[", "]", ",", ":", "\"", "-1", "0", "18446744073709551615",
            "18446744073709551616", "9223372036854775807", "9223372036854775808", "4294967296",
            "1e308", "1.5", "-0", "null", "true", "\"F32\"", "\"BF16\"", "\"F8_E4M3\"",
            "\"I64\"", "\"F64\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
            "[]", "{}", "[0,0]", "\\u0000", "\\ud800", "\xff", "\xc3\x28", "\xed\xa0\x80", " "};
        const char* t = kTokens[below(sizeof kTokens / sizeof *kTokens)];
        const size_t at = below(b.size() + 1);
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), t, t + std::strlen(t));
        break;
      }
      case 6: {  // erase a chunk
        if (b.empty()) break;
        const size_t at = below(b.size());
        const size_t n = 1 + below(std::min<size_t>(b.size() - at, 32));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at),
                b.begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      case 7: {  // duplicate a chunk somewhere else
        if (b.empty()) break;
        const size_t from = below(b.size());
        const size_t n = 1 + below(std::min<size_t>(b.size() - from, 64));
        Bytes chunk(b.begin() + static_cast<std::ptrdiff_t>(from),
                    b.begin() + static_cast<std::ptrdiff_t>(from + n));
        const size_t at = below(b.size() + 1);
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), chunk.begin(), chunk.end());
        break;
      }
      case 8: {  // splice: a prefix of this input and a suffix of a seed
        if (seeds_->empty()) break;
        const Bytes& o = (*seeds_)[below(seeds_->size())];
        const size_t cut = below(b.size() + 1);
        const size_t from = below(o.size() + 1);
        b.resize(cut);
        b.insert(b.end(), o.begin() + static_cast<std::ptrdiff_t>(from), o.end());
        break;
      }
      case 9:  // interesting integer in the 8-byte length prefix
        set_length_prefix(b, interesting_length(b));
        length_set_ = true;
        break;
      case 10:  // replace a run of ASCII digits with an interesting number
        replace_number(b);
        break;
      case 11:  // replace the text of a JSON string with another
        replace_string(b);
        break;
    }
  }

  uint8_t random_byte() {
    return below(2) ? static_cast<uint8_t>(0x20 + below(0x5f)) : static_cast<uint8_t>(rng_());
  }

  uint64_t interesting_length(const Bytes& b) {
    const uint64_t size = b.size();
    uint64_t cur = 0;
    if (size >= 8) {
      for (int i = 7; i >= 0; --i) cur = (cur << 8) | b[static_cast<size_t>(i)];
    }
    const uint64_t k[] = {0,
                          1,
                          7,
                          8,
                          size >= 8 ? size - 8 : 0,
                          size >= 9 ? size - 9 : 0,
                          size >= 7 ? size - 7 : 0,
                          size,
                          size + 1,
                          cur + 1,
                          cur - 1,
                          cur + 8,
                          0x7fffffffull,
                          0x80000000ull,
                          0xffffffffull,
                          0x100000000ull,
                          0x7fffffffffffffffull,
                          0x8000000000000000ull,
                          0xffffffffffffffffull,
                          0xfffffffffffffff8ull,
                          100000000ull,
                          100000001ull,
                          99999999ull};
    return k[below(sizeof k / sizeof *k)];
  }

  static void set_length_prefix(Bytes& b, uint64_t n) {
    if (b.size() < 8) b.resize(8, 0);
    for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  }

  // If the input is a JSON object behind an 8-byte length prefix (possibly knocked out of
  // place by an earlier mutation), re-seat the prefix and set it to where the object ends.
  static void fix_length_prefix(Bytes& b) {
    size_t p = 0;
    while (p < b.size() && p < 24 && b[p] != '{') ++p;
    if (p >= b.size() || b[p] != '{') return;
    if (p != 8) {
      Bytes fixed(8, 0);
      fixed.insert(fixed.end(), b.begin() + static_cast<std::ptrdiff_t>(p), b.end());
      b.swap(fixed);
    }
    size_t i = 8;
    int depth = 0;
    bool in_string = false, escaped = false;
    for (; i < b.size(); ++i) {
      const uint8_t c = b[i];
      if (in_string) {
        if (escaped) escaped = false;
        else if (c == '\\') escaped = true;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == '"') in_string = true;
      else if (c == '{' || c == '[') ++depth;
      else if ((c == '}' || c == ']') && --depth == 0) {
        set_length_prefix(b, i + 1 - 8);
        return;
      }
    }
    set_length_prefix(b, b.size() - 8);  // unbalanced: take everything as the header
  }

  void replace_string(Bytes& b) {
    if (b.size() < 9) return;
    size_t i = 8 + below(b.size() - 8);
    while (i < b.size() && b[i] != '"') ++i;
    if (i == b.size()) return;
    size_t j = i + 1;
    while (j < b.size() && b[j] != '"') ++j;
    if (j == b.size()) return;
    static const char* kStrings[] = {"",      "F32",   "F16",          "BF16",        "F8_E4M3",
                                     "I32",   "I64",   "U8",           "F64",         "BOOL",
                                     "dtype", "shape", "data_offsets", "__metadata__", "a",
                                     "w",     "b",     "\u00e9",      "\\",        "\""};
    // Sometimes copy another string of the same input instead (duplicate names, fields).
    std::string r = kStrings[below(sizeof kStrings / sizeof *kStrings)];
    if (below(2) == 0) {
      size_t k = 8 + below(b.size() - 8);
      while (k < b.size() && b[k] != '"') ++k;
      size_t l = k + 1;
      while (l < b.size() && b[l] != '"') ++l;
      if (l < b.size()) {
        r.assign(b.begin() + static_cast<std::ptrdiff_t>(k + 1),
                 b.begin() + static_cast<std::ptrdiff_t>(l));
      }
    }
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(i + 1), b.begin() + static_cast<std::ptrdiff_t>(j));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(i + 1), r.begin(), r.end());
  }

  void replace_number(Bytes& b) {
    if (b.size() < 9) return;
    const size_t start = 8 + below(b.size() - 8);
    size_t i = start;
    while (i < b.size() && !(b[i] >= '0' && b[i] <= '9')) ++i;
    if (i == b.size()) return;
    size_t j = i;
    while (j < b.size() && b[j] >= '0' && b[j] <= '9') ++j;
    std::string digits(b.begin() + static_cast<std::ptrdiff_t>(i),
                       b.begin() + static_cast<std::ptrdiff_t>(j));
    const uint64_t v = digits.size() <= 18 ? std::strtoull(digits.c_str(), nullptr, 10) : 0;
    const std::string options[] = {std::to_string(v + 1),
                                   std::to_string(v ? v - 1 : 0),
                                   std::to_string(v * 2),
                                   std::to_string(v + 64),
                                   std::to_string(v + 4096),
                                   "0",
                                   "1",
                                   "-1",
                                   "-" + digits,
                                   digits + ".0",
                                   digits + "e3",
                                   "4294967296",
                                   "9223372036854775807",
                                   "9223372036854775808",
                                   "18446744073709551615",
                                   "18446744073709551616",
                                   "340282366920938463463374607431768211456"};
    const std::string& r = options[below(sizeof options / sizeof *options)];
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(i), b.begin() + static_cast<std::ptrdiff_t>(j));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(i), r.begin(), r.end());
  }

  std::mt19937_64 rng_;
  const std::vector<Bytes>* seeds_;
  size_t max_len_;
  bool length_set_ = false;
};

bool parse_u64(const char* s, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 10000, seed = 1, max_len = 1 << 20;
  std::vector<std::string> files;
  std::string seed_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--write-seeds") {
      if (i + 1 >= argc) return std::fprintf(stderr, "%s: --write-seeds needs a directory\n", argv[0]), 2;
      seed_dir = argv[++i];
      continue;
    }
    auto value = [&](uint64_t* out) {
      if (i + 1 >= argc || !parse_u64(argv[i + 1], out)) {
        std::fprintf(stderr, "%s: %s needs a non-negative integer\n", argv[0], a.c_str());
        std::exit(2);
      }
      ++i;
    };
    if (a == "--iterations") value(&iterations);
    else if (a == "--seed") value(&seed);
    else if (a == "--max-len") value(&max_len);
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s [--iterations N] [--seed S] [--max-len BYTES] [FILE...]\n", argv[0]);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "%s: unknown option %s\n", argv[0], a.c_str());
      return 2;
    } else {
      files.push_back(a);
    }
  }

  if (!seed_dir.empty()) {
    const std::vector<Bytes> seeds = fuzz_seed_corpus();
    for (size_t k = 0; k < seeds.size(); ++k) {
      const std::string path = seed_dir + "/seed-" + std::to_string(k);
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(seeds[k].data()), static_cast<std::streamsize>(seeds[k].size()));
      if (!out) return std::fprintf(stderr, "%s: cannot write %s\n", argv[0], path.c_str()), 1;
    }
    std::printf("wrote %zu seeds to %s\n", seeds.size(), seed_dir.c_str());
    return 0;
  }

  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], f.c_str());
      return 2;
    }
    run_one(Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  }
  std::vector<Bytes> seeds = fuzz_seed_corpus();
  for (const auto& s : seeds) run_one(s);
  if (seeds.empty()) seeds.emplace_back();

  // Mutate from the seeds and from a rolling pool of earlier mutants (stacked mutations).
  Mutator m(seed, &seeds, static_cast<size_t>(max_len));
  std::vector<Bytes> pool = seeds;
  const size_t pool_cap = seeds.size() + 256;
  uint64_t bytes = 0;
  for (uint64_t it = 0; it < iterations; ++it) {
    // Half the time start again from a seed, so that junk does not take over the pool.
    const Bytes& base = m.below(2) ? seeds[m.below(seeds.size())] : pool[m.below(pool.size())];
    Bytes input = m.mutate(base);
    run_one(input);
    bytes += input.size();
    if (m.below(8) == 0) {
      if (pool.size() < pool_cap) pool.push_back(std::move(input));
      else pool[seeds.size() + m.below(pool_cap - seeds.size())] = std::move(input);
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t total = files.size() + fuzz_seed_corpus().size() + iterations;
  std::printf("%s: ok, %zu files + %zu seeds + %llu mutations (seed %llu, %.1f KiB avg) in %.2f s "
              "= %.0f exec/s\n",
              argv[0], files.size(), fuzz_seed_corpus().size(),
              static_cast<unsigned long long>(iterations), static_cast<unsigned long long>(seed),
              iterations ? static_cast<double>(bytes) / static_cast<double>(iterations) / 1024.0
                         : 0.0,
              secs, secs > 0 ? static_cast<double>(total) / secs : 0.0);
  return 0;
}
