#include <libnordf/data/loader.h>
#include <libnordf/data/transforms.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <stdexcept>

namespace nordf {

// ---- pair sampling -------------------------------------------------------------------------

PairSampler::PairSampler(std::vector<int64_t> labels, double same_class_rate, uint64_t seed)
    : labels_(std::move(labels)), rate_(same_class_rate), seed_(seed) {
  if (labels_.empty()) throw std::invalid_argument("PairSampler: no images");
  if (!(rate_ >= 0.0 && rate_ <= 1.0))
    throw std::invalid_argument("PairSampler: same_class_rate must be in [0, 1], got " + std::to_string(rate_));
  std::map<int64_t, std::vector<int64_t>> groups;
  for (size_t i = 0; i < labels_.size(); ++i) groups[labels_[i]].push_back(static_cast<int64_t>(i));
  for (auto& kv : groups) {
    classes_.push_back(kv.first);
    by_class_.push_back(std::move(kv.second));
  }
}

std::vector<PairIndex> PairSampler::epoch_pairs(int64_t epoch) const {
  std::mt19937_64 rng(mix_seed(seed_, 0x5041495253ULL, static_cast<uint64_t>(epoch)));
  const int64_t n = static_cast<int64_t>(labels_.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::map<int64_t, size_t> class_pos;
  for (size_t c = 0; c < classes_.size(); ++c) class_pos[classes_[c]] = c;
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<PairIndex> pairs;
  pairs.reserve(order.size());
  for (int64_t a : order) {
    const size_t ca = class_pos[labels_[static_cast<size_t>(a)]];
    const bool same = classes_.size() == 1 || coin(rng) < rate_;
    int64_t b;
    if (same) {
      const auto& members = by_class_[ca];
      if (members.size() == 1) {
        b = a;
      } else {  // another member of the class, uniformly
        auto k = std::uniform_int_distribution<size_t>(0, members.size() - 2)(rng);
        b = members[k];
        if (b == a) b = members.back();
      }
    } else {  // uniform over images of the other classes
      const size_t others = labels_.size() - by_class_[ca].size();
      size_t k = std::uniform_int_distribution<size_t>(0, others - 1)(rng);
      size_t c = 0;
      for (;; ++c) {
        if (c == ca) continue;
        if (k < by_class_[c].size()) break;
        k -= by_class_[c].size();
      }
      b = by_class_[c][k];
    }
    pairs.push_back({a, b, labels_[static_cast<size_t>(a)] != labels_[static_cast<size_t>(b)] ? 1 : 0});
  }
  return pairs;
}

// ---- ordered pipeline ----------------------------------------------------------------------

template <typename T>
OrderedPipeline<T>::OrderedPipeline(std::function<T(int64_t)> produce, int64_t first, int64_t count, int64_t workers,
                                    int64_t prefetch)
    : produce_(std::move(produce)),
      next_to_start_(first),
      next_to_hand_out_(first),
      count_(count),
      prefetch_(std::max<int64_t>(1, prefetch)) {
  for (int64_t w = 0; w < std::max<int64_t>(1, workers); ++w) threads_.emplace_back([this] { work(); });
}

template <typename T>
OrderedPipeline<T>::~OrderedPipeline() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

template <typename T>
void OrderedPipeline<T>::work() {
  for (;;) {
    int64_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || next_to_start_ >= count_ || next_to_start_ < next_to_hand_out_ + prefetch_; });
      if (stop_ || next_to_start_ >= count_) return;
      index = next_to_start_++;
    }
    try {
      T value = produce_(index);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(index, std::move(value));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      errors_.emplace(index, std::current_exception());
    }
    cv_.notify_all();
  }
}

template <typename T>
std::optional<T> OrderedPipeline<T>::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (next_to_hand_out_ >= count_) return std::nullopt;
  const int64_t index = next_to_hand_out_;
  cv_.wait(lock, [&] { return ready_.count(index) || errors_.count(index); });
  auto err = errors_.find(index);
  if (err != errors_.end()) {
    auto e = err->second;
    errors_.erase(err);
    ++next_to_hand_out_;
    lock.unlock();
    cv_.notify_all();
    std::rethrow_exception(e);
  }
  auto it = ready_.find(index);
  T value = std::move(it->second);
  ready_.erase(it);
  ++next_to_hand_out_;
  lock.unlock();
  cv_.notify_all();
  return value;
}

template class OrderedPipeline<PairBatch>;
template class OrderedPipeline<ImageBatch>;

// ---- loaders -------------------------------------------------------------------------------

namespace {

void check_loader(const ImageDataset& data, const LoaderOptions& o, const char* what) {
  if (o.batch_size <= 0) throw std::invalid_argument(std::string(what) + ": batch size must be positive");
  if (data.size() == 0) throw std::invalid_argument(std::string(what) + ": the dataset is empty");
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards)
    throw std::invalid_argument(std::string(what) + ": shard " + std::to_string(o.shard) + " of " +
                                std::to_string(o.shards) + " does not exist");
  if (o.drop_last && o.batch_size * o.shards > data.size())
    throw std::invalid_argument(std::string(what) + ": batch size " + std::to_string(o.batch_size) +
                                (o.shards > 1 ? " × " + std::to_string(o.shards) + " ranks" : std::string()) +
                                " is larger than the dataset (" + std::to_string(data.size()) + " images)");
}

// torch::stack of same-shape CPU images, each copied whole with memcpy: LibTorch 1.13's cat took
// 6% of the training loader's time on these shapes, and runs intra-op threads from loader threads.
torch::Tensor stack_images(const std::vector<torch::Tensor>& xs) {
  const auto& first = xs.front();
  for (const auto& x : xs)
    if (!x.is_cpu() || x.sizes() != first.sizes() || x.scalar_type() != first.scalar_type()) return torch::stack(xs);
  std::vector<int64_t> sizes{static_cast<int64_t>(xs.size())};
  sizes.insert(sizes.end(), first.sizes().begin(), first.sizes().end());
  auto out = torch::empty(sizes, first.options().memory_format(torch::MemoryFormat::Contiguous));
  const size_t bytes = static_cast<size_t>(first.numel()) * first.element_size();
  auto* dst = static_cast<char*>(out.data_ptr());
  for (size_t i = 0; i < xs.size(); ++i) {
    const auto x = xs[i].contiguous();
    std::memcpy(dst + i * bytes, x.data_ptr(), bytes);
  }
  return out;
}

}  // namespace

PairLoader::PairLoader(std::shared_ptr<const ImageDataset> data, double same_class_rate, const LoaderOptions& options)
    : data_(std::move(data)), sampler_(data_->labels(), same_class_rate, options.seed), options_(options) {
  check_loader(*data_, options_, "PairLoader");
}

int64_t PairLoader::num_batches() const {
  const int64_t n = data_->size(), b = options_.batch_size * options_.shards;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

PairBatch PairLoader::load_batch(const std::vector<PairIndex>& pairs, int64_t epoch, int64_t batch) const {
  const int64_t begin = (batch * options_.shards + options_.shard) * options_.batch_size;
  const int64_t end = std::min<int64_t>(begin + options_.batch_size, static_cast<int64_t>(pairs.size()));
  // The normalised inputs are written straight into the batch.
  const int64_t n = end - begin, size = options_.transform.image_size;
  PairBatch b;
  b.x1 = torch::empty({n, 3, size, size});
  b.x2 = torch::empty({n, 3, size, size});
  std::vector<torch::Tensor> t1, t2;
  std::vector<int64_t> l1, l2;
  std::vector<float> diff;
  for (int64_t p = begin; p < end; ++p) {
    const auto& pair = pairs[static_cast<size_t>(p)];
    for (int side = 0; side < 2; ++side) {
      const int64_t idx = side == 0 ? pair.first : pair.second;
      std::mt19937_64 rng(mix_seed(options_.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(p),
                                   static_cast<uint64_t>(side)));
      auto t = apply_transforms(data_->image(idx), options_.transform, options_.augment, rng,
                                (side == 0 ? b.x1 : b.x2)[p - begin]);
      if (t.target.defined()) (side == 0 ? t1 : t2).push_back(t.target);
      (side == 0 ? l1 : l2).push_back(data_->label(idx));
    }
    diff.push_back(static_cast<float>(pair.different));
  }
  if (!t1.empty()) {
    b.target1 = stack_images(t1);
    b.target2 = stack_images(t2);
  }
  b.labels1 = torch::tensor(l1, torch::kInt64);
  b.labels2 = torch::tensor(l2, torch::kInt64);
  b.different = torch::tensor(diff, torch::kFloat);
  return b;
}

PairLoader::Epoch PairLoader::epoch(int64_t epoch, int64_t first_batch) const {
  auto pairs = std::make_shared<std::vector<PairIndex>>(sampler_.epoch_pairs(epoch));
  // The workers own a copy of the loader, so the epoch may outlive this object.
  auto self = std::make_shared<const PairLoader>(*this);
  Epoch e;
  e.pipeline_ = std::make_unique<OrderedPipeline<PairBatch>>(
      [self, pairs, epoch](int64_t b) { return self->load_batch(*pairs, epoch, b); }, first_batch, num_batches(),
      options_.workers, options_.prefetch);
  return e;
}

ImageLoader::ImageLoader(std::shared_ptr<const ImageDataset> data, const LoaderOptions& options)
    : data_(std::move(data)), options_(options) {
  check_loader(*data_, options_, "ImageLoader");
}

int64_t ImageLoader::num_batches() const { return (data_->size() + options_.batch_size - 1) / options_.batch_size; }

ImageLoader::Pass ImageLoader::pass() const {
  Pass p;
  p.pipeline_ = std::make_unique<OrderedPipeline<ImageBatch>>(
      [data = data_, options = options_](int64_t b) {  // owned: the pass may outlive the loader
        const int64_t begin = b * options.batch_size;
        const int64_t end = std::min(begin + options.batch_size, data->size());
        const int64_t size = options.transform.image_size;
        ImageBatch batch;
        batch.images = torch::empty({end - begin, 3, size, size});  // written in place
        std::vector<torch::Tensor> ts;
        std::vector<int64_t> labels, idx;
        for (int64_t i = begin; i < end; ++i) {
          std::mt19937_64 rng(mix_seed(options.seed, static_cast<uint64_t>(i)));
          auto t = apply_transforms(data->image(i), options.transform, /*augment=*/false, rng, batch.images[i - begin]);
          if (t.target.defined()) ts.push_back(t.target);
          labels.push_back(data->label(i));
          idx.push_back(i);
        }
        if (!ts.empty()) batch.targets = stack_images(ts);
        batch.labels = torch::tensor(labels, torch::kInt64);
        batch.indices = torch::tensor(idx, torch::kInt64);
        return batch;
      },
      0, num_batches(), options_.workers, options_.prefetch);
  return p;
}

}  // namespace nordf
