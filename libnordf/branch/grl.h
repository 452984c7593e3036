#pragma once
/// @file
/// Gradient reversal (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", 2015).

#include <torch/torch.h>

namespace nordf {

/// Gradient reversal layer as an autograd function: forward y = x (a view, no copy);
/// backward ∂L/∂x = −weight · ∂L/∂y. `weight` may be any finite value (0 blocks the gradient).
torch::Tensor grad_reverse(const torch::Tensor& x, double weight);

/// Module form of `grad_reverse`, holding the weight (set each step by a GRL schedule).
class GradientReversalImpl : public torch::nn::Module {
 public:
  explicit GradientReversalImpl(double weight = 1.0) : weight_(weight) {}
  torch::Tensor forward(const torch::Tensor& x) { return grad_reverse(x, weight_); }
  void set_weight(double weight) { weight_ = weight; }
  double weight() const { return weight_; }

 private:
  double weight_;
};
TORCH_MODULE(GradientReversal);

}  // namespace nordf
