#include <libnordf/backbone/convnext.h>
#include <libnordf/backbone/vit.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace nordf {

namespace F = torch::nn::functional;

ViTConfig vit_config(const std::string& size) {
  if (size == "tiny") return {16, 192, 12, 3, 4};
  if (size == "small") return {16, 384, 12, 6, 4};
  if (size == "base") return {16, 768, 12, 12, 4};
  throw std::invalid_argument("unknown ViT size '" + size + "'; known: tiny, small, base");
}

ViTAttentionImpl::ViTAttentionImpl(int64_t dim, int64_t heads) : heads_(heads) {
  TORCH_CHECK(dim % heads == 0, "ViTAttention: width ", dim, " is not divisible by ", heads, " heads");
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor ViTAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), t = x.size(1), c = x.size(2), d = c / heads_;
  auto qkv_ = qkv->forward(x).reshape({n, t, 3, heads_, d}).permute({2, 0, 3, 1, 4});
  auto q = qkv_[0], k = qkv_[1], v = qkv_[2];
  auto attn = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(d))), -1);
  if (record_) attention_ = attn;
  auto y = torch::matmul(attn, v).transpose(1, 2).reshape({n, t, c});
  return proj->forward(y);
}

ViTBlockImpl::ViTBlockImpl(int64_t dim, int64_t heads, int64_t mlp_ratio, double drop_path)
    : drop_path_(drop_path) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  attn = register_module("attn", ViTAttention(dim, heads));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  // timm's Mlp: fc1 → GELU → fc2, registered under mlp.fc1 / mlp.fc2.
  mlp = torch::nn::Sequential();
  mlp->push_back("fc1", torch::nn::Linear(dim, mlp_ratio * dim));
  mlp->push_back("act", torch::nn::GELU());
  mlp->push_back("fc2", torch::nn::Linear(mlp_ratio * dim, dim));
  register_module("mlp", mlp);
}

torch::Tensor ViTBlockImpl::forward(const torch::Tensor& x) {
  auto y = x + drop_path(attn->forward(norm1->forward(x)), drop_path_, is_training());
  return y + drop_path(mlp->forward(norm2->forward(y)), drop_path_, is_training());
}

torch::Tensor resample_pos_embed(const torch::Tensor& pos, int64_t h, int64_t w, const std::string& key) {
  const int64_t tokens = pos.dim() == 3 ? pos.size(1) - 1 : -1;
  const auto g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(tokens, 0)))));
  if (pos.dim() != 3 || pos.size(0) != 1 || tokens < 1 || g * g != tokens) {
    std::ostringstream shape;
    shape << pos.sizes();
    throw std::invalid_argument(key + " of shape " + shape.str() +
                                " cannot be resampled: it must be 1×(1 + g²)×C, a class token then a square grid");
  }
  if (g == h && g == w) return pos;
  // timm's resample_abs_pos_embed: the class token's embedding kept, the grid interpolated
  // bicubically with antialiasing (align_corners = false) in float32.
  const int64_t c = pos.size(2);
  auto grid = pos.narrow(1, 1, tokens).reshape({1, g, g, c}).permute({0, 3, 1, 2}).to(torch::kFloat);
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{h, w})
                                  .mode(torch::kBicubic)
                                  .align_corners(false)
                                  .antialias(true));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, h * w, c}).to(pos.scalar_type());
  return torch::cat({pos.narrow(1, 0, 1), grid}, 1);
}

VisionTransformer::VisionTransformer(std::string name, const ViTConfig& c, const BackboneOptions& o)
    : Backbone(std::move(name)), config_(c) {
  const int64_t side = o.image_size() > 0 ? o.image_size() : 224;
  if (side % c.patch != 0)
    throw std::invalid_argument(backbone_name() + ": image size " + std::to_string(side) +
                                " is not a multiple of the patch size " + std::to_string(c.patch));
  grid_ = side / c.patch;
  patch_proj = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, c.dim, c.patch).stride(c.patch));
  auto patch_embed = std::make_shared<torch::nn::Module>();
  patch_embed->register_module("proj", patch_proj);
  register_module("patch_embed", patch_embed);
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, c.dim}));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, 1 + grid_ * grid_, c.dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) {
    // Stochastic depth grows linearly over the blocks, as timm.
    const double rate = c.depth > 1 ? o.drop_path_rate() * static_cast<double>(i) / static_cast<double>(c.depth - 1) : 0.0;
    blocks->push_back(ViTBlock(c.dim, c.heads, c.mlp_ratio, rate));
  }
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim}).eps(1e-6)));
  {
    // timm's default init: trunc_normal_(std=0.02) for position embeddings and Linear weights,
    // whose bounds (±2, absolute) lie 100 sd out, so a plain normal draw is the same
    // distribution; normal(1e-6) for the class token; zero biases; the patch projection keeps
    // the Conv2d default, as timm's does.
    torch::NoGradGuard g;
    pos_embed.normal_(0.0, 0.02);
    cls_token.normal_(0.0, 1e-6);
    for (auto& m : modules(/*include_self=*/false))
      if (auto* lin = m->as<torch::nn::Linear>()) {
        lin->weight.normal_(0.0, 0.02);
        lin->bias.zero_();
      }
  }
  add_layer_fn([this](const torch::Tensor& x) { return embed(x); });
  for (size_t i = 0; i < blocks->size(); ++i) {
    auto block = blocks->ptr<ViTBlockImpl>(i);
    add_layer_fn([block](const torch::Tensor& x) { return block->forward(x); });
  }
  add_layer_fn([this](const torch::Tensor& x) { return to_map(norm->forward(x)); });
}

torch::Tensor VisionTransformer::embed(const torch::Tensor& images) {
  TORCH_CHECK(images.size(2) % config_.patch == 0 && images.size(3) % config_.patch == 0, backbone_name(),
              ": height and width must be multiples of the patch size ", config_.patch, ", got ", images.size(2), "×",
              images.size(3));
  const int64_t h = images.size(2) / config_.patch, w = images.size(3) / config_.patch;
  last_grid_ = {h, w};
  auto x = patch_proj->forward(images).flatten(2).transpose(1, 2);  // N×hw×C, row-major over the grid
  auto pos = resample_pos_embed(pos_embed, h, w, backbone_name() + ": 'pos_embed'");
  x = torch::cat({cls_token.expand({x.size(0), 1, config_.dim}), x}, 1);
  return x + pos;
}

torch::Tensor VisionTransformer::to_map(const torch::Tensor& tokens) const {
  const auto [h, w] = last_grid_;
  TORCH_CHECK(tokens.dim() == 3 && tokens.size(1) == 1 + h * w, backbone_name(), ": expected N×", 1 + h * w,
              "×C tokens, got ", tokens.sizes());
  return tokens.narrow(1, 1, h * w).transpose(1, 2).reshape({tokens.size(0), tokens.size(2), h, w});
}

torch::Tensor VisionTransformer::layer_map(const torch::Tensor& output, int64_t layer) const {
  return layer == num_layers() - 1 ? output : to_map(output);
}

torch::Tensor VisionTransformer::class_token(const torch::Tensor& images) {
  auto tokens = forward_layers(images, {num_layers() - 2})[0];
  return norm->forward(tokens).select(1, 0);
}

torch::Tensor VisionTransformer::attention_rollout(const torch::Tensor& images) {
  for (size_t i = 0; i < blocks->size(); ++i) blocks->ptr<ViTBlockImpl>(i)->attn->record(true);
  torch::Tensor rollout;
  try {
    forward_layers(images, {num_layers() - 2});
    for (size_t i = 0; i < blocks->size(); ++i) {
      auto a = blocks->ptr<ViTBlockImpl>(i)->attn->attention().mean(1);  // N×T×T, averaged over heads
      a = 0.5 * a + 0.5 * torch::eye(a.size(1), a.options()).unsqueeze(0);
      a = a / a.sum(-1, true);
      rollout = rollout.defined() ? torch::matmul(a, rollout) : a;
    }
  } catch (...) {
    for (size_t i = 0; i < blocks->size(); ++i) blocks->ptr<ViTBlockImpl>(i)->attn->record(false);
    throw;
  }
  for (size_t i = 0; i < blocks->size(); ++i) blocks->ptr<ViTBlockImpl>(i)->attn->record(false);
  return rollout;
}

}  // namespace nordf
