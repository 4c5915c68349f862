#include "runtime/core/progress_line.h"

#include <unistd.h>

#include <cstdio>

namespace mt {

ProgressLine::ProgressLine() : tty_(isatty(STDERR_FILENO) != 0) {}

void ProgressLine::show(const std::string& what, double percent) const {
  std::fprintf(stderr, "%smoetier: %s %3.0f%%%s", line_start(), what.c_str(), percent, tty_ ? "" : "\n");
}

void ProgressLine::end() const {
  if (tty_) std::fputc('\n', stderr);
}

}  // namespace mt
