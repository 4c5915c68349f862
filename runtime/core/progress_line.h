// A percentage on stderr while long start-up work runs ("moetier: loading experts into RAM  40%"):
// redrawn in place on a terminal, a line per step in a log, where \r updates would run together.
// The CLI's own bar (tools/moetier/progress.h) serves the commands; this serves the runtime below it.
#pragma once

#include <string>

namespace mt {

class ProgressLine {
 public:
  ProgressLine();  // whether stderr is a terminal, read once
  // "moetier: <what> NN%", over the previous step on a terminal, on a line of its own in a log.
  void show(const std::string& what, double percent) const;
  // What a line that replaces the last step starts with: "\r" on a terminal, nothing in a log.
  const char* line_start() const { return tty_ ? "\r" : ""; }
  // Ends the terminal's line once the work is done (a log's lines are already ended).
  void end() const;

 private:
  bool tty_ = false;
};

}  // namespace mt
