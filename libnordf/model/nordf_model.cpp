#include <libnordf/model/nordf_model.h>

#include <stdexcept>

namespace nordf {

namespace {

/// The backbone options with the model's input side (ViTs size their position embeddings by it).
BackboneOptions sized(const NordFOptions& o) {
  auto b = o.backbone_options();
  if (b.image_size() == 0) b.image_size(o.image_size());
  return b;
}

}  // namespace

NordFImpl::NordFImpl(const NordFOptions& opts) : NordFImpl(make_backbone(opts.backbone(), sized(opts)), opts) {}

NordFImpl::NordFImpl(std::shared_ptr<Backbone> bb, const NordFOptions& opts) : options(opts), backbone(std::move(bb)) {
  if (!backbone) throw std::invalid_argument("NordF: backbone is null");
  build();
}

void NordFImpl::build() {
  const int64_t s = options.image_size(), r = backbone->reduction();
  if (s <= 0 || s % r != 0)
    throw std::invalid_argument("NordF: image_size must be a positive multiple of " + std::to_string(r) + " (" +
                                backbone->backbone_name() + "'s reduction), got " + std::to_string(s));
  feature_size_ = s / r;
  if (options.channels() <= 0)
    throw std::invalid_argument("NordF: channels must be positive, got " + std::to_string(options.channels()));
  recon_size_ = options.recon_size() > 0 ? options.recon_size() : s / 2;
  const int64_t f = feature_size();
  if (options.use_reconstruction()) {
    int64_t ratio = recon_size_ % f == 0 ? recon_size_ / f : 0;
    if (ratio < 2 || (ratio & (ratio - 1)) != 0)
      throw std::invalid_argument("NordF: recon_size " + std::to_string(recon_size_) +
                                  " must be the feature side times a power of two ≥ 2; the feature side is image_size " +
                                  std::to_string(s) + " / " + std::to_string(r) + " = " + std::to_string(f) +
                                  ", so recon_size may be " + std::to_string(2 * f) + ", " + std::to_string(4 * f) +
                                  ", " + std::to_string(8 * f) + ", … (0 = image_size / 2 = " + std::to_string(s / 2) + ")");
  }
  const int64_t c = options.channels();

  register_module("backbone", backbone);
  adapter = register_module("adapter", ChannelAdapter(backbone->out_channels(), c));
  if (options.use_similarity()) {
    similarity = register_module("similarity", SimilarityBranch(SimilarityBranchOptions(c)
                                                                    .norm(options.norm())
                                                                    .similarity(options.similarity())
                                                                    .temperature(options.similarity_temperature())
                                                                    .spatial(f * f)));
  }
  classifier = register_module("classifier", ClassificationBranch(ClassificationBranchOptions(c, f, options.num_classes())
                                                                      .hidden(options.classifier_hidden())
                                                                      .dropout(options.dropout())
                                                                      .norm(options.norm())));
  if (!options.use_reconstruction()) return;
  const int64_t decoder_in = options.use_similarity() ? 2 * c : c;
  decoder = register_module("decoder", ReconstructionBranch(ReconstructionBranchOptions(decoder_in, f, recon_size_)
                                                                .base_width(options.decoder_width())
                                                                .min_width(std::min<int64_t>(64, options.decoder_width()))
                                                                .residual_blocks(options.decoder_blocks())
                                                                .norm(options.norm())));
}

void NordFImpl::check_images(const torch::Tensor& x, const char* what) const {
  const int64_t s = options.image_size();
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3 && x.size(2) == s && x.size(3) == s, "NordF: expected ", what,
              " of shape N×3×", s, "×", s, ", got ", x.sizes());
}

ImageOutput NordFImpl::encode(const torch::Tensor& images, bool with_reconstruction, double grl_weight) {
  check_images(images, "images");
  ImageOutput out;
  out.features = adapter->forward(backbone->forward(images));
  if (has_similarity()) out.agnostic = similarity->embed(out.features, grl_weight);
  auto cls = classifier->forward(out.features);
  out.class_map = cls.map;
  out.embedding = cls.embedding;
  out.logits = cls.logits;
  if (with_reconstruction && has_reconstruction()) {
    auto z = has_similarity() ? torch::cat({out.agnostic, out.class_map}, 1) : out.class_map;
    out.reconstruction = decoder->forward(z);
  }
  return out;
}

torch::Tensor NordFImpl::logits(const torch::Tensor& images) {
  check_images(images, "images");
  return classifier->forward(adapter->forward(backbone->forward(images))).logits;
}

PairOutput NordFImpl::forward(const torch::Tensor& x1, const torch::Tensor& x2, double grl_weight) {
  check_images(x1, "x1");
  check_images(x2, "x2");
  TORCH_CHECK(x1.size(0) == x2.size(0), "NordF: pair halves differ in batch size, ", x1.size(0), " vs ", x2.size(0));
  const int64_t n = x1.size(0);
  PairOutput out;
  // One backbone call for both images of every pair.
  out.all = encode(torch::cat({x1, x2}, 0), /*with_reconstruction=*/true, grl_weight);
  if (has_similarity())
    out.dissimilarity = similarity->score(out.all.agnostic.narrow(0, 0, n), out.all.agnostic.narrow(0, n, n));
  out.logits1 = out.all.logits.narrow(0, 0, n);
  out.logits2 = out.all.logits.narrow(0, n, n);
  if (out.all.reconstruction.defined()) {
    out.recon1 = out.all.reconstruction.narrow(0, 0, n);
    out.recon2 = out.all.reconstruction.narrow(0, n, n);
  }
  return out;
}

}  // namespace nordf
