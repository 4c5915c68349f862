// A terminal progress bar for long work (bytes done, rate, ETA) on stderr. Redraws at most
// ten times a second on a terminal; otherwise (a log file) prints a line every 10%.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mt::cli {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total_bytes);
  // Counts things other than bytes: shown as plain numbers followed by `unit` ("tokens").
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar();
  void advance(int64_t bytes);
  void finish();

 private:
  void draw(bool final_line);
  std::string label_;
  std::string unit_;  // empty: bytes
  int64_t total_ = 0, done_ = 0;
  bool tty_ = false, finished_ = false;
  int last_decile_ = 0;  // for non-terminal output
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_bytes(double bytes);

// Seconds elapsed since `t` on the steady clock (every timing the CLI prints).
double seconds_since(std::chrono::steady_clock::time_point t);

}  // namespace mt::cli
