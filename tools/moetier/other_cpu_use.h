// How much CPU time other processes take while we measure: the machine's busy time from
// /proc/stat minus this process's own (getrusage), over the CPUs' total. The probe uses it to
// tell a profile taken beside another workload (its figures low) from a quiet one; the load
// average alone moves too slowly to see a job that starts with the probe.
#pragma once

#include <cstdint>

namespace mt::cli {

class OtherCpuUse {
 public:
  OtherCpuUse();  // starts counting
  // Share of all CPUs' time since construction used by other processes, in [0, 1]; -1 when
  // /proc/stat cannot be read.
  double share() const;
  // CPU seconds, summed over CPUs, that anything (this process, the kernel's I/O work, others)
  // used since construction; -1 when /proc/stat cannot be read.
  double busy_seconds() const;

 private:
  struct Sample {
    bool ok = false;
    double busy_s = 0, total_s = 0, self_s = 0;
  };
  static Sample now();
  Sample start_;
};

}  // namespace mt::cli
