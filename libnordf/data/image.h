#pragma once
/// @file
/// Image files ↔ tensors, through stb_image / stb_image_write.

#include <libnordf/core/limits.h>

#include <torch/torch.h>

#include <string>

namespace nordf {

/// Decodes a JPEG, PNG or BMP file to a 3×H×W float tensor in [0, 1] (grayscale is repeated to
/// 3 channels, alpha is dropped). The dimensions in the file's header are checked against
/// `limits.max_pixels` before any pixel is decoded. Throws `std::runtime_error` naming the file
/// and the reason when it is missing, unreadable, corrupt, truncated or too large.
torch::Tensor load_image(const std::string& path, const ReadLimits& limits = {});

/// Same, from the bytes of a file in memory; `source` names it in errors.
torch::Tensor decode_image(const std::string& bytes, const std::string& source, const ReadLimits& limits = {});

/// Encodes a 3×H×W or 1×H×W float tensor in [0, 1] (clamped) as an 8-bit PNG, written
/// atomically. Throws `std::invalid_argument` on a bad shape and `std::runtime_error` naming the
/// path when encoding or writing fails.
void save_png(const std::string& path, const torch::Tensor& image);

}  // namespace nordf
