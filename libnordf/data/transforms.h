#pragma once
/// @file
/// Per-image tensor transforms (C×H×W float in [0, 1]) with explicit randomness.

#include <torch/torch.h>

#include <cstdint>
#include <random>

namespace nordf {

/// ImageNet channel statistics (torchvision).
inline constexpr double kImageNetMean[3] = {0.485, 0.456, 0.406};
inline constexpr double kImageNetStd[3] = {0.229, 0.224, 0.225};

/// Bilinear resize to size×size (antialiased when shrinking, as torchvision's Resize on tensors).
torch::Tensor resize(const torch::Tensor& image, int64_t size);
/// torchvision's RandomResizedCrop: area fraction in [scale_min, 1], aspect ratio in [3/4, 4/3]
/// (log-uniform), 10 tries then a centre crop; resized to size×size.
torch::Tensor random_resized_crop(const torch::Tensor& image, int64_t size, double scale_min, std::mt19937_64& rng);
/// Area (box-average) resize to size×size, as LibTorch's interpolate in "area" mode.
torch::Tensor area_resize(const torch::Tensor& image, int64_t size);
/// Mirror left–right.
torch::Tensor hflip(const torch::Tensor& image);
/// Rotation by `degrees` about the centre, bilinear, zero fill.
torch::Tensor rotate(const torch::Tensor& image, double degrees);
/// Whether image decoding (bytes to floats), resize, area_resize, rotate and apply_transforms'
/// normalisation run their AVX2 loops: on x86-64 CPUs with AVX2, unless turned off. The AVX2 and portable loops give the same values,
/// bit for bit.
bool simd_transforms();
/// Turns the AVX2 loops off (false) or back on where the CPU has AVX2 (true), for all threads.
void set_simd_transforms(bool enabled);
/// (x − mean) / std per channel, ImageNet statistics. Works on C×H×W or N×C×H×W.
torch::Tensor imagenet_normalize(const torch::Tensor& image);
/// Inverse of `imagenet_normalize`.
torch::Tensor imagenet_denormalize(const torch::Tensor& image);

/// The training/evaluation pipeline.
struct TransformOptions {
  int64_t image_size = 224;
  /// Size of the reconstruction target (0: no target).
  int64_t recon_size = 112;
  /// Augmentation (training only): random-resized-crop lower area bound (≥ 1 disables it),
  /// horizontal flip probability and maximum rotation in degrees.
  double crop_scale_min = 1.0;
  double hflip_prob = 0.0;
  double rotation_degrees = 0.0;
};

/// One transformed image: the normalised network input and its un-normalised [0, 1] target.
struct TransformedImage {
  torch::Tensor input;   ///< 3×S×S, ImageNet-normalised
  torch::Tensor target;  ///< 3×R×R in [0, 1] (the same augmented view), undefined if recon_size = 0
};

/// Applies the pipeline: [random-resized-crop | resize] → [flip] → [rotation] → target (area
/// resize to recon_size) and normalised input. `augment` = false only resizes.
TransformedImage apply_transforms(const torch::Tensor& image, const TransformOptions& options, bool augment,
                                  std::mt19937_64& rng);
/// As above, writing the normalised input into `input` (a contiguous 3×S×S CPU float tensor, such
/// as one image of a batch) and returning it as `.input`; the loaders use this to skip a copy.
TransformedImage apply_transforms(const torch::Tensor& image, const TransformOptions& options, bool augment,
                                  std::mt19937_64& rng, const torch::Tensor& input);

/// A 64-bit seed mixing several values (SplitMix64), for per-sample reproducible randomness.
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0);

}  // namespace nordf
