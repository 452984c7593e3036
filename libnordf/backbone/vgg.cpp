#include <libnordf/backbone/vgg.h>

#include <stdexcept>

namespace nordf {

VGG16::VGG16(const BackboneOptions& options) : Backbone("vgg16") {
  if (options.drop_path_rate() != 0.0)
    throw std::invalid_argument("vgg16 has no residual blocks: drop_path_rate must be 0, got " +
                                std::to_string(options.drop_path_rate()));
  // torchvision cfg "D"; -1 marks a max-pool.
  const int64_t cfg[] = {64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512, -1};
  features = torch::nn::Sequential();
  int64_t in = 3;
  for (int64_t v : cfg) {
    if (v < 0) {
      auto pool = torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2));
      features->push_back(pool);
      add_layer(pool);
      continue;
    }
    auto c = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, v, 3).padding(1));
    {
      // torchvision's VGG init: kaiming_normal_(fan_out, relu), zero bias.
      torch::NoGradGuard no_grad;
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
      c->bias.zero_();
    }
    auto relu = torch::nn::ReLU();
    features->push_back(c);
    features->push_back(relu);
    add_layer(c);
    add_layer(relu);
    in = v;
  }
  register_module("features", features);
}

}  // namespace nordf
