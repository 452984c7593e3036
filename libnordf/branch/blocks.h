#pragma once
/// @file
/// Building blocks shared by the branches: normalisation choice, ConvBlock, channel adapter.

#include <torch/torch.h>

#include <string>

namespace nordf {

/// Normalisation used inside branch blocks.
///  - kBatch: BatchNorm2d (the prototype's; unstable at batch size 2).
///  - kGroup: GroupNorm with up to 32 groups (largest divisor of C not above 32).
///  - kLayer: GroupNorm(1, C), i.e. LayerNorm over C×H×W, independent of the batch.
///  - kNone: identity.
enum class Norm { kBatch, kGroup, kLayer, kNone };

/// Parses "batch", "group", "layer" or "none". Throws `std::invalid_argument` listing them.
Norm parse_norm(const std::string& name);
/// Inverse of `parse_norm`.
std::string norm_name(Norm norm);
/// Builds the normalisation module for `channels` channels (an AnyModule; identity for kNone).
torch::nn::AnyModule make_norm(Norm norm, int64_t channels);

/// Options for `ConvBlock`.
struct ConvBlockOptions {
  ConvBlockOptions(int64_t in_channels, int64_t out_channels) : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(Norm, norm) = Norm::kGroup;
};

/// conv(k×k, same padding) → norm → ReLU. N×in×H×W → N×out×H×W, values ≥ 0.
/// Submodules: `conv`, `norm`.
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
