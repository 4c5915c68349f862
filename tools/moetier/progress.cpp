#include "tools/moetier/progress.h"

#include <unistd.h>

#include <cstdio>

namespace mt::cli {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string format_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total_bytes)
    : label_(std::move(label)), total_(total_bytes), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit) : ProgressBar(std::move(label), total) {
  unit_ = std::move(unit);
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::advance(int64_t bytes) {
  done_ += bytes;
  auto now = std::chrono::steady_clock::now();
  if (tty_ && now - last_draw_ > std::chrono::milliseconds(100)) {
    last_draw_ = now;
    draw(false);
  } else if (!tty_ && total_ > 0) {
    const int decile = static_cast<int>(10 * done_ / total_);
    if (decile > last_decile_ && decile < 10) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressBar::draw(bool final_line) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const double rate = secs > 0 ? static_cast<double>(done_) / secs : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0.0;
  constexpr int kWidth = 30;
  std::string bar(kWidth, ' ');
  for (int i = 0; i < static_cast<int>(frac * kWidth) && i < kWidth; ++i) bar[i] = '#';
  auto amount = [&](double v) {
    if (unit_.empty()) return format_bytes(v);
    char buf[48];
    std::snprintf(buf, sizeof buf, v < 100 && v != static_cast<int64_t>(v) ? "%.1f %s" : "%.0f %s", v, unit_.c_str());
    return std::string(buf);
  };
  std::fprintf(stderr, "%s%s [%s] %5.1f%%  %s / %s  %s/s  %s %.0fs%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(),
               100.0 * frac, amount(static_cast<double>(done_)).c_str(),
               amount(static_cast<double>(total_)).c_str(), amount(rate).c_str(),
               final_line ? "took" : "ETA", final_line ? secs : eta, (final_line || !tty_) ? "\n" : "   ");
  std::fflush(stderr);
}

}  // namespace mt::cli
