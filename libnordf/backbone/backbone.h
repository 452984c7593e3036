#pragma once
/// @file
/// The backbone interface and its name → factory registry.

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nordf {

/// Options every built-in backbone accepts.
struct BackboneOptions {
  /// Maximum stochastic-depth (drop-path) rate. Block i of n drops its residual branch with
  /// probability `drop_path_rate * i / (n - 1)` during training (the linear rule of
  /// torchvision's and the official ConvNeXt code). Must be in [0, 1). Must be 0 for
  /// backbones without residual blocks (vgg16).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// Initial value of ConvNeXt V1's per-channel layer scale (torchvision: 1e-6).
  TORCH_ARG(double, layer_scale_init) = 1e-6;
  /// Input side the backbone is built for; only ViTs use it, to size their position embeddings
  /// (0 = 224). Convolutional backbones take any side.
  TORCH_ARG(int64_t, image_size) = 0;
  /// ConvNeXt blocks compute their 7×7 depthwise convolutions' weight and bias gradients with
  /// libnordf's direct CPU kernel (`depthwise_conv7x7`) instead of oneDNN's. The forward pass and
  /// the input gradients are unchanged; the weight gradients differ in rounding only, so trained
  /// weights differ slightly from a run without it. Off by default. Other backbones ignore it.
  TORCH_ARG(bool, direct_depthwise_grad) = false;
};

/// A feature extractor: N×3×H×W float images (H, W multiples of `reduction()`: 32 for the
/// convolutional backbones, 16 for the ViTs) in, the final feature map N×C×H/r×W/r out.
///
/// A backbone is a flat sequence of `num_layers()` layers (torchvision's `features` children for
/// vgg16 and ConvNeXt V1; downsample/stage pairs for ConvNeXt V2), so that perceptual losses and
/// saliency can address intermediate outputs by index. Submodules are named after the reference
/// implementations' state-dict keys. The backbone follows the device and dtype of its parameters
/// and never chooses one itself.
class Backbone : public torch::nn::Module {
 public:
  /// Runs every layer. Input: N×3×H×W float; output N×out_channels()×H/r×W/r, r = reduction().
  /// Throws c10::Error on a non-4-D or non-floating-point input, a channel count other than 3, or
  /// H, W not multiples of r.
  torch::Tensor forward(const torch::Tensor& images);

  /// Runs layers up to the largest index in `layers` and returns the output of each requested
  /// layer, in the order asked (any H, W ≥ 32; spatial sizes floor at each downsampling, so
  /// perceptual losses can run at, for example, 112 px). Throws `std::invalid_argument` naming the
  /// index if one is out of range [0, num_layers()), c10::Error on a bad input shape.
  std::vector<torch::Tensor> forward_layers(const torch::Tensor& images, const std::vector<int64_t>& layers);

  /// Runs layers `first` .. num_layers() − 1 on `x`, the output of layer `first` − 1 (the images
  /// when `first` is 0), and returns the last output; with `first` = num_layers() it returns `x`.
  /// `forward_from(forward_layers(images, {k})[0], k + 1)` equals `forward(images)`, which lets
  /// saliency explain any layer. Throws `std::invalid_argument` naming `first` if it is outside
  /// [0, num_layers()].
  torch::Tensor forward_from(const torch::Tensor& x, int64_t first);

  /// Channels of the final feature map.
  virtual int64_t out_channels() const = 0;
  /// Number of addressable layers.
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  /// Spatial reduction of the final map: 32 for the convolutional backbones, the patch size (16)
  /// for the ViTs. NordF's branches read an image_size / reduction() square map.
  virtual int64_t reduction() const { return 32; }
  /// Layer `layer`'s output as an N×C×h×w map (Grad-CAM explains maps): the output itself for the
  /// convolutional backbones; a ViT's token layers drop the class token and reshape the patches
  /// into their grid (of the last input).
  virtual torch::Tensor layer_map(const torch::Tensor& output, int64_t layer) const { return output; }
  /// The registry name this backbone was built as (for example "convnextv2_atto").
  const std::string& backbone_name() const { return backbone_name_; }

 protected:
  explicit Backbone(std::string name) : backbone_name_(std::move(name)) {}
  /// Appends a layer to the flat sequence. The module must also be registered by the subclass
  /// (under its reference name); the sequence only fixes the order.
  template <typename ModuleHolder>
  void add_layer(ModuleHolder module) {
    layers_.push_back([module](const torch::Tensor& x) mutable { return module->forward(x); });
  }
  /// Appends a layer given as a function (for layers that are not one module's forward).
  void add_layer_fn(std::function<torch::Tensor(const torch::Tensor&)> fn) { layers_.push_back(std::move(fn)); }

 private:
  void check_input(const torch::Tensor& images, bool whole) const;
  std::string backbone_name_;
  std::vector<std::function<torch::Tensor(const torch::Tensor&)>> layers_;
};

/// Factory signature for the backbone registry.
using BackboneFactory = std::function<std::shared_ptr<Backbone>(const BackboneOptions&)>;

/// Builds the backbone registered as `name`, with random initialisation.
/// Throws `std::invalid_argument` listing the known names when `name` is unknown, or when the
/// options do not suit the backbone.
std::shared_ptr<Backbone> make_backbone(const std::string& name, const BackboneOptions& options = {});

/// Registered backbone names, sorted. Built-ins: convnext_{tiny,small,base},
/// convnextv2_{atto,femto,pico,nano,tiny,base}, vgg16, vit_{tiny,small,base}_patch16 and
/// deit_small_patch16.
std::vector<std::string> backbone_names();

/// Adds (or replaces) a backbone under `name`.
void register_backbone(const std::string& name, BackboneFactory factory);

}  // namespace nordf
