#pragma once
/// @file
/// Pair sampling and multi-threaded, deterministic batch loading.

#include <libnordf/data/dataset.h>
#include <libnordf/data/transforms.h>

#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace nordf {

/// One pair: indices of both images and the pair label (1 = different classes, as the prototype).
struct PairIndex {
  int64_t first;
  int64_t second;
  int64_t different;
};

/// Draws a new partner for every image in every epoch. With probability `same_class_rate` the
/// partner is another image of the same class, otherwise an image of another class. The order and
/// the partners depend only on (seed, epoch), so runs and resumed runs see the same pairs.
class PairSampler {
 public:
  /// Throws `std::invalid_argument` if labels are empty or the rate is outside [0, 1].
  PairSampler(std::vector<int64_t> labels, double same_class_rate, uint64_t seed);
  /// All pairs of `epoch`, one per image, in shuffled order.
  std::vector<PairIndex> epoch_pairs(int64_t epoch) const;
  double same_class_rate() const { return rate_; }

 private:
  std::vector<int64_t> labels_;
  std::vector<std::vector<int64_t>> by_class_;
  std::vector<int64_t> classes_;
  double rate_;
  uint64_t seed_;
};

/// Runs `produce(b)` for b in [first, count) on worker threads with bounded prefetch and hands
/// the results out in order. An exception thrown by `produce` is rethrown by `next()`.
template <typename T>
class OrderedPipeline {
 public:
  OrderedPipeline(std::function<T(int64_t)> produce, int64_t first, int64_t count, int64_t workers, int64_t prefetch);
  ~OrderedPipeline();
  OrderedPipeline(const OrderedPipeline&) = delete;
  OrderedPipeline& operator=(const OrderedPipeline&) = delete;
  /// The next result in index order, or nullopt after the last.
  std::optional<T> next();

 private:
  void work();
  std::function<T(int64_t)> produce_;
  int64_t next_to_start_, next_to_hand_out_, count_, prefetch_;
  bool stop_ = false;
  std::map<int64_t, T> ready_;
  std::map<int64_t, std::exception_ptr> errors_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};

/// A batch of N pairs.
struct PairBatch {
  torch::Tensor x1, x2;            ///< N×3×S×S normalised inputs
  torch::Tensor target1, target2;  ///< N×3×R×R [0, 1] reconstruction targets
  torch::Tensor labels1, labels2;  ///< N int64
  torch::Tensor different;         ///< N float, 1 = different classes
};

/// A batch of N single images.
struct ImageBatch {
  torch::Tensor images;   ///< N×3×S×S normalised
  torch::Tensor targets;  ///< N×3×R×R [0, 1] (if recon_size > 0)
  torch::Tensor labels;   ///< N int64
  torch::Tensor indices;  ///< N int64 dataset indices
};

/// Options for the loaders.
struct LoaderOptions {
  int64_t batch_size = 32;
  /// Worker threads decoding and transforming images (≥ 1).
  int64_t workers = 2;
  /// Batches prepared ahead of the consumer.
  int64_t prefetch = 4;
  uint64_t seed = 0;
  TransformOptions transform;
  /// Random augmentation (training).
  bool augment = false;
  /// Drop the last incomplete batch.
  bool drop_last = false;
  /// Data-parallel sharding of pair batches: step b of rank r loads pairs
  /// [(b·shards + r)·batch_size, +batch_size) of the epoch's list, so the shards of a step are
  /// disjoint and together form one global batch of batch_size·shards pairs. 0 / 1 = no sharding.
  int64_t shard = 0, shards = 1;
};

/// Loads pair batches of an epoch: `PairSampler` pairs, transformed with per-image seeds
/// derived from (seed, epoch, pair, side) so the content is independent of thread timing.
class PairLoader {
 public:
  /// Throws `std::invalid_argument` when the (global) batch size is larger than the dataset (with
  /// drop_last) or not positive, or the shard is out of range.
  PairLoader(std::shared_ptr<const ImageDataset> data, double same_class_rate, const LoaderOptions& options);
  int64_t num_batches() const;
  /// Pairs per step over all shards: batch_size × shards.
  int64_t global_batch() const { return options_.batch_size * options_.shards; }
  /// Iterates the batches of `epoch` starting at batch `first_batch` (for resuming). The epoch
  /// owns what its workers read, so it may outlive the loader.
  class Epoch {
   public:
    std::optional<PairBatch> next() { return pipeline_->next(); }

   private:
    friend class PairLoader;
    std::unique_ptr<OrderedPipeline<PairBatch>> pipeline_;
  };
  Epoch epoch(int64_t epoch, int64_t first_batch = 0) const;
  PairBatch load_batch(const std::vector<PairIndex>& pairs, int64_t epoch, int64_t batch) const;
  const ImageDataset& dataset() const { return *data_; }

 private:
  std::shared_ptr<const ImageDataset> data_;
  PairSampler sampler_;
  LoaderOptions options_;
};

/// Loads a dataset in order, as single-image batches (evaluation; no augmentation).
class ImageLoader {
 public:
  ImageLoader(std::shared_ptr<const ImageDataset> data, const LoaderOptions& options);
  int64_t num_batches() const;
  /// Iterates all batches in order. The pass owns what its workers read, so
  /// `ImageLoader(data, options).pass()` on a temporary is safe.
  class Pass {
   public:
    std::optional<ImageBatch> next() { return pipeline_->next(); }

   private:
    friend class ImageLoader;
    std::unique_ptr<OrderedPipeline<ImageBatch>> pipeline_;
  };
  Pass pass() const;

 private:
  std::shared_ptr<const ImageDataset> data_;
  LoaderOptions options_;
};

}  // namespace nordf
