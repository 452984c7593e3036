#pragma once
/// @file
/// Image files ↔ tensors, through stb_image / stb_image_write.

#include <torch/torch.h>

#include <string>

namespace nordf {

/// Decodes a JPEG, PNG or BMP file to a 3×H×W float tensor in [0, 1] (grayscale is repeated to
/// 3 channels, alpha is dropped). Throws `std::runtime_error` naming the file and stb's reason
/// when it is missing, unreadable, corrupt or truncated.
torch::Tensor load_image(const std::string& path);

/// Encodes a 3×H×W or 1×H×W float tensor in [0, 1] (clamped) as an 8-bit PNG, written
/// atomically. Throws `std::invalid_argument` on a bad shape and `std::runtime_error` naming the
/// path when encoding or writing fails.
void save_png(const std::string& path, const torch::Tensor& image);

}  // namespace nordf
