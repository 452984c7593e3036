#pragma once
/// @file
/// Image datasets and the open-set protocol (ID train/val/test, near-OOD, far-OOD).

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace nordf {

/// Indexed, labelled images. Thread-safe for concurrent reads.
class ImageDataset {
 public:
  virtual ~ImageDataset() = default;
  virtual int64_t size() const = 0;
  /// Class index of item i (ID: 0..K−1; OOD sets: their own labels, unused by training).
  virtual int64_t label(int64_t i) const = 0;
  /// Item i as a 3×H×W float tensor in [0, 1]. Throws `std::runtime_error` naming the source.
  virtual torch::Tensor image(int64_t i) const = 0;
  /// Where item i comes from (a file path, or "fashion-mnist/train[123]").
  virtual std::string source(int64_t i) const = 0;
  /// All labels.
  std::vector<int64_t> labels() const;
};

/// In-memory uint8 images N×C×H×W (C = 1 or 3, 0..255) with labels.
class TensorImageDataset : public ImageDataset {
 public:
  /// `scale` maps stored values to [0, 1] (1/255 for bytes). Throws `std::invalid_argument` on
  /// mismatched sizes or an unsupported shape.
  TensorImageDataset(std::string name, torch::Tensor images, std::vector<int64_t> labels, double scale = 1.0 / 255.0);
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t label(int64_t i) const override { return labels_.at(static_cast<size_t>(i)); }
  torch::Tensor image(int64_t i) const override;
  std::string source(int64_t i) const override;

 private:
  std::string name_;
  torch::Tensor images_;
  std::vector<int64_t> labels_;
  double scale_;
};

/// Image files with labels, decoded on demand with `load_image`.
class FileImageDataset : public ImageDataset {
 public:
  FileImageDataset(std::vector<std::string> paths, std::vector<int64_t> labels);
  int64_t size() const override { return static_cast<int64_t>(paths_.size()); }
  int64_t label(int64_t i) const override { return labels_.at(static_cast<size_t>(i)); }
  torch::Tensor image(int64_t i) const override;
  std::string source(int64_t i) const override { return paths_.at(static_cast<size_t>(i)); }
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  std::vector<std::string> paths_;
  std::vector<int64_t> labels_;
};

/// A view of `base` restricted to `indices`, with new labels (one per index).
class SubsetDataset : public ImageDataset {
 public:
  SubsetDataset(std::shared_ptr<const ImageDataset> base, std::vector<int64_t> indices, std::vector<int64_t> labels);
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  int64_t label(int64_t i) const override { return labels_.at(static_cast<size_t>(i)); }
  torch::Tensor image(int64_t i) const override { return base_->image(indices_.at(static_cast<size_t>(i))); }
  std::string source(int64_t i) const override { return base_->source(indices_.at(static_cast<size_t>(i))); }
  const std::vector<int64_t>& indices() const { return indices_; }

 private:
  std::shared_ptr<const ImageDataset> base_;
  std::vector<int64_t> indices_, labels_;
};

/// The open-set protocol every dataset layout produces.
struct OpenSetSplit {
  std::string name;                        ///< e.g. "fashion-mnist"
  std::vector<std::string> class_names;    ///< ID classes, index = label
  std::shared_ptr<ImageDataset> train, val, test;  ///< ID splits, labels 0..K−1
  /// OOD sets by name; `near` sets hold unseen classes of the same domain.
  struct OodSet {
    std::string name;
    bool near = true;
    std::shared_ptr<ImageDataset> data;
  };
  std::vector<OodSet> ood;
  /// Human-readable notes on the protocol (what was skipped, why a set is absent).
  std::vector<std::string> notes;
  /// Files dropped as corrupt (only with skip_corrupt), by path.
  std::vector<std::string> skipped_files;
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
};

/// Stratified split of item indices by label into fractions (for example 0.8/0.1/0.1), shuffled
/// with `seed`; every class contributes round(fraction × count) to each part but the last, which
/// takes the rest.
std::vector<std::vector<int64_t>> stratified_split(const std::vector<int64_t>& labels,
                                                   const std::vector<double>& fractions, uint64_t seed);

/// Keeps at most `per_class` items of each label (the first ones in `indices` order); 0 keeps all.
std::vector<int64_t> limit_per_class(const std::vector<int64_t>& indices, const std::vector<int64_t>& labels,
                                     int64_t per_class);

/// Options shared by the dataset layouts.
struct SplitOptions {
  /// Stratified ID split fractions train/val/test (layouts that have no official test split).
  std::vector<double> fractions{0.8, 0.1, 0.1};
  uint64_t seed = 14;
  /// Cap on ID training images per class (0 = all).
  int64_t train_per_class = 0;
  /// Cap on ID validation images per class (0 = all).
  int64_t val_per_class = 0;
  /// Cap on ID test images per class (0 = all).
  int64_t test_per_class = 0;
  /// Cap on each OOD set's size (0 = all), drawn with `seed`.
  int64_t ood_limit = 0;
  /// Drop files that fail to decode (counted in `skipped_files`) instead of failing.
  bool skip_corrupt = false;
  /// The in-distribution classes, each a class index (as the layout numbers its classes) or a
  /// class name; the others become the near-OOD set. Empty = the layout's default. Label k is the
  /// k-th class listed. See each layout for indices and names.
  std::vector<std::string> id_classes;
};

}  // namespace nordf
