#pragma once
/// @file
/// Building blocks shared by the branches: normalisation choice, ConvBlock, channel adapter.

#include <torch/torch.h>

#include <string>

namespace nordf {

/// Normalisation used inside branch blocks.
///  - kBatch: BatchNorm2d (the prototype's; unstable at batch size 2).
///  - kGroup: GroupNorm with G groups, G the largest divisor of C not above 32 whose groups each
///    normalise at least 4 values per image, (C / G)·H·W ≥ 4, or failing that at least 2. A group
///    of one value normalises to 0, so the block would output its bias whatever the input; a group
///    of two normalises to ±1, keeping only a sign. (C = 256 at 1×1 gets 32 groups of 8.)
///  - kLayer: GroupNorm(1, C), i.e. LayerNorm over C×H×W, independent of the batch.
///  - kNone: identity.
enum class Norm { kBatch, kGroup, kLayer, kNone };

/// Parses "batch", "group", "layer" or "none". Throws `std::invalid_argument` listing them.
Norm parse_norm(const std::string& name);
/// Inverse of `parse_norm`.
std::string norm_name(Norm norm);
/// GroupNorm's group count for `channels` channels of `spatial` = H·W values each (see Norm).
/// Throws `std::invalid_argument` when no count works, i.e. one channel of a 1×1 map.
int64_t group_count(int64_t channels, int64_t spatial);
/// Builds the normalisation module for `channels` channels of `spatial` = H·W values per image (an
/// AnyModule; identity for kNone). Throws `std::invalid_argument` when a group or layer norm would
/// normalise a single value per image (its output would not depend on the input).
torch::nn::AnyModule make_norm(Norm norm, int64_t channels, int64_t spatial);

/// Options for `ConvBlock`.
struct ConvBlockOptions {
  ConvBlockOptions(int64_t in_channels, int64_t out_channels) : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(Norm, norm) = Norm::kGroup;
  /// H·W of the maps the block sees, which fixes GroupNorm's group count (see Norm). 1 is the
  /// safe choice when unknown: the groups then suit any map.
  TORCH_ARG(int64_t, spatial) = 1;
};

/// conv(k×k, same padding) → norm → ReLU. N×in×H×W → N×out×H×W, values ≥ 0.
/// Submodules: `conv`, `norm`. Throws `std::invalid_argument` when the norm cannot depend on the
/// input (see `make_norm`).
class ConvBlockImpl : public torch::nn::Module {
 public:
  explicit ConvBlockImpl(const ConvBlockOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  ConvBlockOptions options;

 private:
  torch::nn::Conv2d conv{nullptr};
  torch::nn::AnyModule norm;
};
TORCH_MODULE(ConvBlock);

/// 1×1 convolution mapping backbone channels to the branch width (1024 in the prototype).
/// N×in×h×w → N×out×h×w. Submodule: `conv`.
class ChannelAdapterImpl : public torch::nn::Module {
 public:
  ChannelAdapterImpl(int64_t in_channels, int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& x) { return conv->forward(x); }
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(ChannelAdapter);

}  // namespace nordf
