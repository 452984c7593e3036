#include <libnordf/branch/blocks.h>
#include <libnordf/branch/classification.h>
#include <libnordf/branch/grl.h>
#include <libnordf/branch/reconstruction.h>
#include <libnordf/branch/similarity.h>

#include <stdexcept>

namespace nordf {

// ---- gradient reversal ---------------------------------------------------------------------

namespace {

struct GradReverseFunction : public torch::autograd::Function<GradReverseFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double weight) {
    ctx->saved_data["weight"] = weight;
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const double weight = ctx->saved_data["weight"].toDouble();
    return {grad[0] * (-weight), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor grad_reverse(const torch::Tensor& x, double weight) {
  TORCH_CHECK(std::isfinite(weight), "grad_reverse: weight must be finite, got ", weight);
  return GradReverseFunction::apply(x, weight);
}

// ---- blocks --------------------------------------------------------------------------------

Norm parse_norm(const std::string& name) {
  if (name == "batch") return Norm::kBatch;
  if (name == "group") return Norm::kGroup;
  if (name == "layer") return Norm::kLayer;
  if (name == "none") return Norm::kNone;
  throw std::invalid_argument("unknown norm '" + name + "'; known: batch, group, layer, none");
}

std::string norm_name(Norm norm) {
  switch (norm) {
    case Norm::kBatch: return "batch";
    case Norm::kGroup: return "group";
    case Norm::kLayer: return "layer";
    case Norm::kNone: return "none";
  }
  return "?";
}

int64_t group_count(int64_t channels, int64_t spatial) {
  if (channels <= 0 || spatial <= 0)
    throw std::invalid_argument("GroupNorm: channels and H·W must be positive, got " + std::to_string(channels) + " and " +
                                std::to_string(spatial));
  // A group of one value normalises to exactly 0: the block would output its bias whatever the
  // input, and almost no gradient would reach the backbone. A group of two normalises to ±1, a
  // sign; three values give a point on a circle. From four on, the output keeps a continuum.
  for (int64_t least : {4, 2})
    for (int64_t groups = std::min<int64_t>(32, channels); groups >= 1; --groups)
      if (channels % groups == 0 && (channels / groups) * spatial >= least) return groups;
  throw std::invalid_argument("GroupNorm over " + std::to_string(channels) + " channel of a " + std::to_string(spatial) +
                              "-value map normalises a single value per image, so its output would not depend on the "
                              "input; use more channels, a larger image, or norm 'batch' or 'none'");
}

torch::nn::AnyModule make_norm(Norm norm, int64_t channels, int64_t spatial) {
  switch (norm) {
    case Norm::kBatch: return torch::nn::AnyModule(torch::nn::BatchNorm2d(channels));
    case Norm::kGroup: return torch::nn::AnyModule(torch::nn::GroupNorm(group_count(channels, spatial), channels));
    case Norm::kLayer:
      if (channels * spatial < 2) group_count(channels, spatial);  // throws the same explanation
      return torch::nn::AnyModule(torch::nn::GroupNorm(1, channels));
    case Norm::kNone: return torch::nn::AnyModule(torch::nn::Identity());
  }
  throw std::invalid_argument("make_norm: invalid Norm value");
}

ConvBlockImpl::ConvBlockImpl(const ConvBlockOptions& opts) : options(opts) {
  TORCH_CHECK(opts.in_channels() > 0 && opts.out_channels() > 0 && opts.kernel_size() % 2 == 1,
              "ConvBlock: channels must be positive and kernel_size odd, got in=", opts.in_channels(),
              " out=", opts.out_channels(), " k=", opts.kernel_size());
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(opts.in_channels(), opts.out_channels(),
                                                                            opts.kernel_size())
                                                       .padding(opts.kernel_size() / 2)));
  norm = make_norm(opts.norm(), opts.out_channels(), opts.spatial());
  register_module("norm", norm.ptr());
}

torch::Tensor ConvBlockImpl::forward(const torch::Tensor& x) {
  return torch::relu(norm.forward(conv->forward(x)));
}

ChannelAdapterImpl::ChannelAdapterImpl(int64_t in_channels, int64_t out_channels) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 1)));
}

// ---- similarity ----------------------------------------------------------------------------

Similarity parse_similarity(const std::string& name) {
  if (name == "cosine") return Similarity::kCosine;
  if (name == "euclidean") return Similarity::kEuclidean;
  throw std::invalid_argument("unknown similarity '" + name + "'; known: cosine, euclidean");
}

std::string similarity_name(Similarity s) { return s == Similarity::kCosine ? "cosine" : "euclidean"; }

torch::Tensor dissimilarity(const torch::Tensor& u1, const torch::Tensor& u2, Similarity kind, double temperature) {
  TORCH_CHECK(u1.sizes() == u2.sizes(), "dissimilarity: embeddings differ in shape, ", u1.sizes(), " vs ",
              u2.sizes());
  TORCH_CHECK(u1.dim() >= 1, "dissimilarity: expected N×D embeddings");
  auto a = u1.reshape({u1.size(0), -1});
  auto b = u2.reshape({u2.size(0), -1});
  if (kind == Similarity::kCosine) {
    // The prototype's 1 − cos left [0, 1] through rounding and crashed; clamping keeps it valid.
    auto cos = torch::cosine_similarity(a, b, /*dim=*/1, /*eps=*/1e-8);
    return (1.0 - cos).clamp(0.0, 1.0);
  }
  TORCH_CHECK(temperature > 0, "dissimilarity: temperature must be positive, got ", temperature);
  auto sq = (a - b).pow(2).sum(1) / (temperature * static_cast<double>(a.size(1)));
  return 1.0 - torch::exp(-sq);
}

SimilarityBranchImpl::SimilarityBranchImpl(const SimilarityBranchOptions& opts) : options(opts) {
  conv_block = register_module(
      "conv_block", ConvBlock(ConvBlockOptions(opts.channels(), opts.channels()).norm(opts.norm()).spatial(opts.spatial())));
}

torch::Tensor SimilarityBranchImpl::embed(const torch::Tensor& features, double grl_weight) {
  return conv_block->forward(grad_reverse(features, grl_weight));
}

torch::Tensor SimilarityBranchImpl::score(const torch::Tensor& u1, const torch::Tensor& u2) const {
  return dissimilarity(u1, u2, options.similarity(), options.temperature());
}

// ---- classification ------------------------------------------------------------------------

ClassificationBranchImpl::ClassificationBranchImpl(const ClassificationBranchOptions& opts) : options(opts) {
  TORCH_CHECK(opts.num_classes() >= 2, "ClassificationBranch: num_classes must be ≥ 2, got ", opts.num_classes());
  TORCH_CHECK(!opts.hidden().empty(), "ClassificationBranch: at least one hidden layer is required");
  TORCH_CHECK(opts.dropout() >= 0.0 && opts.dropout() < 1.0, "ClassificationBranch: dropout must be in [0, 1)");
  conv_block = register_module(
      "conv_block", ConvBlock(ConvBlockOptions(opts.channels(), opts.channels())
                                  .norm(opts.norm())
                                  .spatial(opts.feature_size() * opts.feature_size())));
  mlp = torch::nn::Sequential();
  int64_t in = opts.channels() * opts.feature_size() * opts.feature_size();
  for (int64_t width : opts.hidden()) {
    mlp->push_back(torch::nn::Linear(in, width));
    mlp->push_back(torch::nn::ReLU());
    mlp->push_back(torch::nn::Dropout(opts.dropout()));
    in = width;
  }
  register_module("mlp", mlp);
  fc = register_module("fc", torch::nn::Linear(in, opts.num_classes()));
}

ClassificationOutput ClassificationBranchImpl::forward(const torch::Tensor& features) {
  TORCH_CHECK(features.dim() == 4 && features.size(1) == options.channels() &&
                  features.size(2) == options.feature_size() && features.size(3) == options.feature_size(),
              "ClassificationBranch: expected N×", options.channels(), "×", options.feature_size(), "×",
              options.feature_size(), " features, got ", features.sizes());
  ClassificationOutput out;
  out.map = conv_block->forward(features);
  out.embedding = mlp->forward(out.map.flatten(1));
  out.logits = fc->forward(out.embedding);
  return out;
}

// ---- reconstruction ------------------------------------------------------------------------

ResidualBlockImpl::ResidualBlockImpl(int64_t channels, Norm norm, int64_t spatial) {
  auto opts = torch::nn::Conv2dOptions(channels, channels, 3).padding(1);
  conv1 = register_module("conv1", torch::nn::Conv2d(opts));
  norm1 = make_norm(norm, channels, spatial);
  register_module("norm1", norm1.ptr());
  conv2 = register_module("conv2", torch::nn::Conv2d(opts));
  norm2 = make_norm(norm, channels, spatial);
  register_module("norm2", norm2.ptr());
}

torch::Tensor ResidualBlockImpl::forward(const torch::Tensor& x) {
  auto y = torch::relu(norm1.forward(conv1->forward(x)));
  y = norm2.forward(conv2->forward(y));
  return torch::relu(y + x);
}

ReconstructionBranchImpl::ReconstructionBranchImpl(const ReconstructionBranchOptions& opts) : options(opts) {
  const int64_t f = opts.feature_size(), s = opts.output_size();
  int64_t n = 0;
  if (f > 0 && s > f && s % f == 0) {
    int64_t ratio = s / f;
    while (ratio % 2 == 0) {
      ratio /= 2;
      ++n;
    }
    if (ratio != 1) n = 0;
  }
  if (n == 0)
    throw std::invalid_argument("ReconstructionBranch: output_size / feature_size must be a power of two ≥ 2, got " +
                                std::to_string(s) + " / " + std::to_string(f));
  stages = torch::nn::ModuleList();
  int64_t in = opts.in_channels();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t width = std::max(opts.min_width(), opts.base_width() >> i);
    const int64_t side = f << (i + 1);
    torch::nn::Sequential stage;
    stage->push_back(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(in, width, 2).stride(2)));
    stage->push_back(make_norm(opts.norm(), width, side * side));
    stage->push_back(torch::nn::ReLU());
    for (int64_t r = 0; r < opts.residual_blocks(); ++r) stage->push_back(ResidualBlock(width, opts.norm(), side * side));
    stages->push_back(stage);
    in = width;
  }
  register_module("stages", stages);
  out_conv = register_module("out_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, 3, 1)));
}

torch::Tensor ReconstructionBranchImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels() && x.size(2) == options.feature_size() &&
                  x.size(3) == options.feature_size(),
              "ReconstructionBranch: expected N×", options.in_channels(), "×", options.feature_size(), "×",
              options.feature_size(), " input, got ", x.sizes());
  torch::Tensor y = x;
  for (auto& stage : *stages) y = stage->as<torch::nn::Sequential>()->forward(y);
  return torch::sigmoid(out_conv->forward(y));
}

}  // namespace nordf
