// RAM read bandwidth of this machine, measured by streaming reads over a buffer much larger than
// the caches. The yardstick for the routed-expert decode kernels (docs/kernels.md), which are
// bound by how fast expert weights stream from RAM.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mt::cpu {

// Allocates buffer_bytes (rounded down to 4 KiB) as a HugeBuffer (huge_buffer.h; kept for the next
// call with the same size), touches every page, then streams reads over it with
// `threads` OpenMP threads, each a contiguous slice read with vector loads, pass after pass
// alternating one stream per thread and two streams in lockstep per thread (its two halves; one
// Zen 3 thread streams ~15% more that way), until min_seconds have passed (at least 4 passes).
// Returns the best pass's bandwidth in GB/s (1e9 bytes/s). threads <= 0: OpenMP default.
double measure_read_bandwidth_gbs(size_t buffer_bytes, int threads, double min_seconds);

// One read pass over an existing buffer (bytes a multiple of 4096, data 64-byte aligned), split
// over `threads` threads, `streams` (1 or 2) streams per thread; returns a value depending on every
// byte, so that the reads stay.
uint64_t stream_read_pass(const uint8_t* data, size_t bytes, int threads);
uint64_t stream_read_pass(const uint8_t* data, size_t bytes, int threads, int streams);

}  // namespace mt::cpu
