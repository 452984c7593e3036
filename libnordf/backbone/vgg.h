#pragma once
/// @file
/// VGG-16 convolutional features (Simonyan & Zisserman, 2015), torchvision's `vgg16().features`.

#include <libnordf/backbone/backbone.h>

namespace nordf {

/// VGG-16 configuration "D" without batch norm: 31 layers named `features.0` … `features.30`
/// exactly as torchvision (conv at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; ReLU after
/// each; max-pool at 4, 9, 16, 23, 30). Output: 512 channels at H/32.
class VGG16 : public Backbone {
 public:
  explicit VGG16(const BackboneOptions& options = {});
  int64_t out_channels() const override { return 512; }

 private:
  torch::nn::Sequential features{nullptr};
};

}  // namespace nordf
