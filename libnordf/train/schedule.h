#pragma once
/// @file
/// Schedules for the gradient-reversal weight and the learning rate.

#include <cstdint>
#include <string>

namespace nordf {

/// How the GRL weight w evolves with training progress p ∈ [0, 1] (global step / total steps):
///  - kConstant: w = weight.
///  - kLinear:   w = start + (weight − start)·p.
///  - kDann:     w = weight·(2 / (1 + exp(−gamma·p)) − 1), gamma = 10 (Ganin & Lempitsky, 2015; DFR).
///  - kStep:     the prototype's schedule, kept for reproduction:
///               w = min(weight, initial + ⌊epoch / step_epochs⌋·(weight − initial) / ((weight / initial)·step_epochs)),
///               which stays at `initial` for the first `step_epochs` epochs.
enum class GrlScheduleKind { kConstant, kLinear, kDann, kStep };

/// Parses "constant", "linear", "dann" or "step". Throws `std::invalid_argument` listing them.
GrlScheduleKind parse_grl_schedule(const std::string& name);
std::string grl_schedule_name(GrlScheduleKind kind);

/// A GRL weight schedule.
struct GrlSchedule {
  GrlScheduleKind kind = GrlScheduleKind::kDann;
  double weight = 1.0;        ///< constant value, or final value of linear/dann/step
  double start = 0.0;         ///< linear: value at p = 0
  double gamma = 10.0;        ///< dann: steepness
  double initial = 0.01;      ///< step: first value
  int64_t step_epochs = 10;   ///< step: epochs per increment
  /// Weight at progress `p` (clamped to [0, 1]) during 0-based `epoch`.
  double value(double p, int64_t epoch) const;
};

/// Learning-rate schedule: constant, or cosine decay to zero over training (per step).
enum class LrScheduleKind { kConstant, kCosine };
LrScheduleKind parse_lr_schedule(const std::string& name);
std::string lr_schedule_name(LrScheduleKind kind);
/// lr at progress p: base, or base·½(1 + cos(πp)).
double lr_at(LrScheduleKind kind, double base, double p);

}  // namespace nordf
