#pragma once
/// @file
/// ConvNeXt V1 (Liu et al., CVPR 2022) and ConvNeXt V2 (Woo et al., CVPR 2023) feature extractors.

#include <libnordf/backbone/backbone.h>

#include <array>

namespace nordf {

/// Stage depths and widths of a ConvNeXt.
struct ConvNeXtConfig {
  std::array<int64_t, 4> depths;
  std::array<int64_t, 4> dims;
};

/// Channels-first LayerNorm over C of an N×C×H×W tensor (torchvision's LayerNorm2d and the
/// official ConvNeXt "channels_first" LayerNorm). Parameters: `weight`, `bias` of shape [C].
class LayerNorm2dImpl : public torch::nn::Module {
 public:
  explicit LayerNorm2dImpl(int64_t channels, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  int64_t channels_;
  double eps_;
};
TORCH_MODULE(LayerNorm2d);

/// Global Response Normalization (ConvNeXt V2, eq. 1–3) on an N×H×W×C tensor:
///   G = ‖x‖₂ over H, W;  N = G / (mean_C(G) + 1e-6);  y = γ·(x·N) + β + x.
/// Parameters `gamma`, `beta` have the official shape 1×1×1×C and start at zero.
class GRNImpl : public torch::nn::Module {
 public:
  explicit GRNImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor gamma, beta;
};
TORCH_MODULE(GRN);

/// Per-sample stochastic depth ("row" mode): during training, zeroes a sample's residual branch
/// with probability p and rescales survivors by 1/(1−p). Identity in eval mode or when p = 0.
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

/// ConvNeXt V1 block as torchvision's CNBlock: keys `block.{0,2,3,5}.*` and `layer_scale` [C,1,1].
class ConvNeXtBlockImpl : public torch::nn::Module {
 public:
  ConvNeXtBlockImpl(int64_t dim, double layer_scale_init, double drop_path, bool direct_depthwise_grad = false);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Sequential block{nullptr};
  torch::nn::Conv2d dwconv{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear pwconv1{nullptr}, pwconv2{nullptr};
  torch::Tensor layer_scale;
  double drop_path_;
  bool direct_dw_;
};
TORCH_MODULE(ConvNeXtBlock);

/// ConvNeXt V2 block as the official code: keys `dwconv`, `norm`, `pwconv1`, `grn.{gamma,beta}`,
/// `pwconv2`; no layer scale.
class ConvNeXtV2BlockImpl : public torch::nn::Module {
 public:
  ConvNeXtV2BlockImpl(int64_t dim, double drop_path, bool direct_depthwise_grad = false);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Conv2d dwconv{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear pwconv1{nullptr}, pwconv2{nullptr};
  GRN grn{nullptr};
  double drop_path_;
  bool direct_dw_;
};
TORCH_MODULE(ConvNeXtV2Block);

/// ConvNeXt V1 features, with torchvision's key layout (`features.0` … `features.7`);
/// 8 layers: stem, stage 1, downsample, stage 2, downsample, stage 3, downsample, stage 4.
class ConvNeXt : public Backbone {
 public:
  ConvNeXt(std::string name, const ConvNeXtConfig& config, const BackboneOptions& options);
  int64_t out_channels() const override { return config_.dims[3]; }

 private:
  ConvNeXtConfig config_;
  torch::nn::ModuleList features{nullptr};
};

/// ConvNeXt V2 features, with the official key layout (`downsample_layers.i`, `stages.i`);
/// 8 layers: downsample_layers[0], stages[0], downsample_layers[1], stages[1], …
class ConvNeXtV2 : public Backbone {
 public:
  ConvNeXtV2(std::string name, const ConvNeXtConfig& config, const BackboneOptions& options);
  int64_t out_channels() const override { return config_.dims[3]; }

 private:
  ConvNeXtConfig config_;
  torch::nn::ModuleList downsample_layers{nullptr}, stages{nullptr};
};

/// Named configurations: "tiny", "small", "base" for V1; "atto" … "base" for V2.
ConvNeXtConfig convnext_config(const std::string& size);
ConvNeXtConfig convnextv2_config(const std::string& size);

}  // namespace nordf
