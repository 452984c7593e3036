#pragma once
/// @file
/// Vision Transformer (Dosovitskiy et al., ICLR 2021) feature extractors with timm's key layout:
/// vit_{tiny,small,base}_patch16 and deit_small_patch16 (Touvron et al., 2021).

#include <libnordf/backbone/backbone.h>

namespace nordf {

/// Width, depth and heads of a ViT.
struct ViTConfig {
  int64_t patch = 16;
  int64_t dim = 192;
  int64_t depth = 12;
  int64_t heads = 3;
  int64_t mlp_ratio = 4;
};

/// Multi-head self-attention with a fused qkv projection (timm's `attn.qkv`, `attn.proj`). On
/// N×T×C tokens. With `record(true)`, the last forward's attention probabilities (N×heads×T×T)
/// are kept for attention rollout.
class ViTAttentionImpl : public torch::nn::Module {
 public:
  ViTAttentionImpl(int64_t dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);
  void record(bool on) { record_ = on; }
  /// The attention probabilities of the last recorded forward (undefined before one).
  const torch::Tensor& attention() const { return attention_; }

 private:
  int64_t heads_;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  bool record_ = false;
  torch::Tensor attention_;
};
TORCH_MODULE(ViTAttention);

/// Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)) (GELU). Keys `norm1`,
/// `attn.*`, `norm2`, `mlp.fc1`, `mlp.fc2`, as timm.
class ViTBlockImpl : public torch::nn::Module {
 public:
  ViTBlockImpl(int64_t dim, int64_t heads, int64_t mlp_ratio, double drop_path);
  torch::Tensor forward(const torch::Tensor& x);
  ViTAttention attn{nullptr};

 private:
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Sequential mlp{nullptr};
  double drop_path_;
};
TORCH_MODULE(ViTBlock);

/// ViT features. The backbone contract holds: N×3×H×W images in (H, W multiples of the patch
/// size, 16: `reduction()` is 16, not 32, so 32 px gives a 2×2 map) and an N×dim×H/16×W/16 map
/// out: the patch tokens after the final norm, reshaped into their grid. The flat layer sequence
/// is depth + 2 layers: 0 = patch embedding with the class token and position embeddings, 1 ..
/// depth = the blocks, depth + 1 = the final norm (with the reshape to the map). Layers 0 .. depth
/// output N×(1 + h·w)×dim tokens; `layer_map` turns them into maps for Grad-CAM.
///
/// Position embeddings are held for the grid of `BackboneOptions::image_size` (224 by default:
/// 1 + 14×14 tokens); an input of another size or shape resamples the patches' embeddings
/// bicubically on the fly (as timm's dynamic image size), and `load_weights` resamples a
/// checkpoint's to the model's grid (as timm's resample_abs_pos_embed).
/// Keys: `patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm`, as timm.
class VisionTransformer : public Backbone {
 public:
  VisionTransformer(std::string name, const ViTConfig& config, const BackboneOptions& options);
  int64_t out_channels() const override { return config_.dim; }
  int64_t reduction() const override { return config_.patch; }
  torch::Tensor layer_map(const torch::Tensor& output, int64_t layer) const override;

  /// The class token after the final norm, N×dim (the representation timm's head reads).
  torch::Tensor class_token(const torch::Tensor& images);

  /// Attention rollout (Abnar & Zuidema, 2020): R = Π_l (½·Ā_l + ½·I) with Ā_l the head-averaged
  /// attention of block l, rows renormalised, the last block's factor on the left. N×T×T, every
  /// row summing to 1; row 0 (the class token) over the patches is the rollout map.
  torch::Tensor attention_rollout(const torch::Tensor& images);

  const ViTConfig& config() const { return config_; }
  /// Side of the position-embedding grid (image_size / patch).
  int64_t grid() const { return grid_; }

  torch::nn::Conv2d patch_proj{nullptr};
  torch::Tensor cls_token, pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 private:
  torch::Tensor embed(const torch::Tensor& images);
  torch::Tensor to_map(const torch::Tensor& tokens) const;
  ViTConfig config_;
  int64_t grid_;
  // The input grid of the last embedding, for reshaping tokens back into maps.
  mutable std::pair<int64_t, int64_t> last_grid_{0, 0};
};

/// Named configurations: "tiny" (192, 12, 3), "small" (384, 12, 6), "base" (768, 12, 12).
ViTConfig vit_config(const std::string& size);

/// Resamples position embeddings 1×(1 + g·g)×C (class token first) to 1×(1 + h·w)×C, bicubically
/// with antialiasing, as timm's resample_abs_pos_embed. Throws `std::invalid_argument` naming
/// `key` and the shapes when the token count is not 1 plus a square.
torch::Tensor resample_pos_embed(const torch::Tensor& pos, int64_t h, int64_t w, const std::string& key);

}  // namespace nordf
