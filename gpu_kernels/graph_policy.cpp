#include "gpu_kernels/graph_policy.h"

#include <algorithm>

namespace mt::gpu {

RegionAction GraphPolicy::begin(const RegionKey& k, bool decode) {
  current_ = nullptr;
  current_action_ = RegionAction::Eager;
  if (!enabled_ || !decode) {
    ++stats_.eager;
    return current_action_;
  }
  KeyState& s = keys_[k];
  current_ = &s;
  if (s.broken || !s.seen_clean) {
    ++stats_.eager;
    return current_action_;
  }
  if (s.backoff_left > 0) {
    --s.backoff_left;
    ++stats_.eager;
    return current_action_;
  }
  current_action_ = RegionAction::Capture;
  ++stats_.captured;
  return current_action_;
}

void GraphPolicy::end_eager(bool needed_host) {
  if (!current_ || current_action_ != RegionAction::Eager) return;
  KeyState& s = *current_;
  current_ = nullptr;
  if (s.backoff_left > 0 || s.broken) return;  // eager by decision, not to learn
  s.seen_clean = !needed_host;
}

void GraphPolicy::end_capture(CaptureOutcome o) {
  if (!current_ || current_action_ != RegionAction::Capture) return;
  KeyState& s = *current_;
  current_ = nullptr;
  switch (o) {
    case CaptureOutcome::Failed:
      ++stats_.failed;
      s.broken = true;
      return;
    case CaptureOutcome::Updated: ++stats_.updated; break;
    case CaptureOutcome::Instantiated:
      ++stats_.instantiated;
      s.reinstantiated += s.has_exec;  // the key's first graph must be instantiated: not held against it
      break;
  }
  s.has_exec = true;
  if (++s.window < kWindow) return;
  if (2 * s.reinstantiated > kWindow) {
    s.backoff_left = s.backoff;
    s.backoff = std::min(s.backoff * 2, kBackoffMax);
    ++stats_.backoffs;
  } else {
    s.backoff = kBackoff0;
  }
  s.window = 0;
  s.reinstantiated = 0;
}

}  // namespace mt::gpu
