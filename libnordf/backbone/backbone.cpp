#include <libnordf/backbone/backbone.h>
#include <libnordf/backbone/convnext.h>
#include <libnordf/backbone/vgg.h>
#include <libnordf/backbone/vit.h>
#include <libnordf/core/registry.h>

namespace nordf {

void Backbone::check_input(const torch::Tensor& images, bool whole) const {
  TORCH_CHECK(images.dim() == 4, backbone_name_, ": expected N×3×H×W input, got ", images.dim(), "-D ",
              images.sizes());
  TORCH_CHECK(images.size(1) == 3, backbone_name_, ": expected 3 input channels, got ", images.size(1));
  if (whole) {
    const int64_t r = reduction();
    TORCH_CHECK(images.size(2) % r == 0 && images.size(3) % r == 0 && images.size(2) > 0 && images.size(3) > 0,
                backbone_name_, ": height and width must be positive multiples of ", r, ", got ", images.size(2), "×",
                images.size(3));
  } else {
    const int64_t r = reduction();
    TORCH_CHECK(images.size(2) >= r && images.size(3) >= r, backbone_name_, ": height and width must be at least ", r,
                ", got ", images.size(2), "×", images.size(3));
  }
  TORCH_CHECK(images.is_floating_point(), backbone_name_, ": expected floating-point images, got ",
              images.scalar_type());
}

torch::Tensor Backbone::forward(const torch::Tensor& images) {
  check_input(images, /*whole=*/true);
  torch::Tensor x = images;
  for (auto& layer : layers_) x = layer(x);
  return x;
}

std::vector<torch::Tensor> Backbone::forward_layers(const torch::Tensor& images, const std::vector<int64_t>& layers) {
  int64_t last = -1;
  for (int64_t idx : layers) {
    if (idx < 0 || idx >= num_layers())
      throw std::invalid_argument(backbone_name_ + ": layer index " + std::to_string(idx) + " does not exist (it has " +
                                  std::to_string(num_layers()) + " layers, 0.." + std::to_string(num_layers() - 1) + ")");
    last = std::max(last, idx);
  }
  check_input(images, /*whole=*/false);
  std::vector<torch::Tensor> outputs(static_cast<size_t>(last + 1));
  torch::Tensor x = images;
  for (int64_t i = 0; i <= last; ++i) {
    x = layers_[static_cast<size_t>(i)](x);
    outputs[static_cast<size_t>(i)] = x;
  }
  std::vector<torch::Tensor> result;
  result.reserve(layers.size());
  for (int64_t idx : layers) result.push_back(outputs[static_cast<size_t>(idx)]);
  return result;
}

torch::Tensor Backbone::forward_from(const torch::Tensor& x, int64_t first) {
  if (first < 0 || first > num_layers())
    throw std::invalid_argument(backbone_name_ + ": cannot continue from layer " + std::to_string(first) +
                                " (it has " + std::to_string(num_layers()) + " layers; valid: 0.." +
                                std::to_string(num_layers()) + ")");
  if (first == 0) check_input(x, /*whole=*/false);
  torch::Tensor y = x;
  for (int64_t i = first; i < num_layers(); ++i) y = layers_[static_cast<size_t>(i)](y);
  return y;
}

namespace {

using BackboneRegistry = Registry<std::shared_ptr<Backbone>, const BackboneOptions&>;

// Built-ins are added explicitly here, once, on first use.
BackboneRegistry& registry() {
  static BackboneRegistry r("backbone");
  static const bool filled = [] {
    for (const char* size : {"tiny", "small", "base"}) {
      const std::string name = std::string("convnext_") + size;
      r.add(name, [name, size](const BackboneOptions& o) {
        return std::make_shared<ConvNeXt>(name, convnext_config(size), o);
      });
    }
    for (const char* size : {"atto", "femto", "pico", "nano", "tiny", "base"}) {
      const std::string name = std::string("convnextv2_") + size;
      r.add(name, [name, size](const BackboneOptions& o) {
        return std::make_shared<ConvNeXtV2>(name, convnextv2_config(size), o);
      });
    }
    r.add("vgg16", [](const BackboneOptions& o) { return std::make_shared<VGG16>(o); });
    for (const char* size : {"tiny", "small", "base"}) {
      const std::string name = std::string("vit_") + size + "_patch16";
      r.add(name, [name, size](const BackboneOptions& o) {
        return std::make_shared<VisionTransformer>(name, vit_config(size), o);
      });
    }
    // DeiT-S is ViT-S/16 (trained differently); its timm checkpoints share the layout.
    r.add("deit_small_patch16", [](const BackboneOptions& o) {
      return std::make_shared<VisionTransformer>("deit_small_patch16", vit_config("small"), o);
    });
    return true;
  }();
  (void)filled;
  return r;
}

}  // namespace

std::shared_ptr<Backbone> make_backbone(const std::string& name, const BackboneOptions& options) {
  if (!(options.drop_path_rate() >= 0.0 && options.drop_path_rate() < 1.0))
    throw std::invalid_argument("backbone '" + name + "': drop_path_rate must be in [0, 1), got " +
                                std::to_string(options.drop_path_rate()));
  return registry().make(name, options);
}

std::vector<std::string> backbone_names() { return registry().names(); }

void register_backbone(const std::string& name, BackboneFactory factory) { registry().add(name, std::move(factory)); }

}  // namespace nordf
