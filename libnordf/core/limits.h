#pragma once
/// @file
/// Bounds on what a file can make libnordf allocate or recurse into. Checkpoints, datasets and
/// images come from the internet; every reader checks these (and every size a file declares
/// against the file's real size) before it allocates or reads.

#include <cstdint>

namespace nordf {

/// Limits of the file readers. Each breach is a `std::runtime_error` naming the file and the limit.
struct ReadLimits {
  /// Elements of one tensor, storage or IDX array (default 2^32, 16 GiB of float32).
  int64_t max_elements = int64_t(1) << 32;
  /// Containers nested in containers in a pickle, and checkpoint wrappers ({'state_dict': …}).
  int64_t max_depth = 512;
  /// Bytes of one pickle string or bytes object (default 16 MiB; keys are a few dozen).
  int64_t max_string = int64_t(1) << 24;
  /// Bytes of a .safetensors JSON header (the format's own limit: 100 MB).
  int64_t max_header = int64_t(100) << 20;
  /// Width × height of one image (default 2^26, 8192 × 8192).
  int64_t max_pixels = int64_t(1) << 26;
};

}  // namespace nordf
