#include <libnordf/core/io.h>
#include <libnordf/data/dataset.h>
#include <libnordf/data/image.h>
#include <libnordf/data/mat.h>
#include <libnordf/data/sources.h>

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nordf {

namespace fs = std::filesystem;

// ---- dataset classes -----------------------------------------------------------------------

std::vector<int64_t> ImageDataset::labels() const {
  std::vector<int64_t> out(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) out[static_cast<size_t>(i)] = label(i);
  return out;
}

TensorImageDataset::TensorImageDataset(std::string name, torch::Tensor images, std::vector<int64_t> labels, double scale)
    : name_(std::move(name)), images_(std::move(images)), labels_(std::move(labels)), scale_(scale) {
  if (images_.dim() != 4 || (images_.size(1) != 1 && images_.size(1) != 3))
    throw std::invalid_argument(name_ + ": expected N×1×H×W or N×3×H×W images");
  if (images_.size(0) != static_cast<int64_t>(labels_.size()))
    throw std::invalid_argument(name_ + ": " + std::to_string(images_.size(0)) + " images but " +
                                std::to_string(labels_.size()) + " labels");
}

torch::Tensor TensorImageDataset::image(int64_t i) const {
  auto img = images_[i].to(torch::kFloat).mul_(scale_);
  return img.size(0) == 1 ? img.expand({3, img.size(1), img.size(2)}).contiguous() : img;
}

std::string TensorImageDataset::source(int64_t i) const { return name_ + "[" + std::to_string(i) + "]"; }

FileImageDataset::FileImageDataset(std::vector<std::string> paths, std::vector<int64_t> labels)
    : paths_(std::move(paths)), labels_(std::move(labels)) {
  if (paths_.size() != labels_.size()) throw std::invalid_argument("FileImageDataset: paths and labels differ in count");
}

torch::Tensor FileImageDataset::image(int64_t i) const { return load_image(paths_.at(static_cast<size_t>(i))); }

SubsetDataset::SubsetDataset(std::shared_ptr<const ImageDataset> base, std::vector<int64_t> indices,
                             std::vector<int64_t> labels)
    : base_(std::move(base)), indices_(std::move(indices)), labels_(std::move(labels)) {
  if (indices_.size() != labels_.size()) throw std::invalid_argument("SubsetDataset: indices and labels differ in count");
  for (auto i : indices_)
    if (i < 0 || i >= base_->size()) throw std::invalid_argument("SubsetDataset: index out of range");
}

// ---- splitting -----------------------------------------------------------------------------

std::vector<std::vector<int64_t>> stratified_split(const std::vector<int64_t>& labels,
                                                   const std::vector<double>& fractions, uint64_t seed) {
  if (fractions.empty()) throw std::invalid_argument("stratified_split: no fractions");
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(static_cast<int64_t>(i));
  std::vector<std::vector<int64_t>> parts(fractions.size());
  std::mt19937_64 rng(seed);
  for (auto& kv : by_class) {
    auto& items = kv.second;
    std::shuffle(items.begin(), items.end(), rng);
    size_t start = 0;
    for (size_t p = 0; p < fractions.size(); ++p) {
      size_t n = p + 1 == fractions.size() ? items.size() - start
                                           : std::min(items.size() - start,
                                                      static_cast<size_t>(std::llround(fractions[p] * items.size())));
      parts[p].insert(parts[p].end(), items.begin() + static_cast<long>(start),
                      items.begin() + static_cast<long>(start + n));
      start += n;
    }
  }
  for (auto& part : parts) std::shuffle(part.begin(), part.end(), rng);
  return parts;
}

std::vector<int64_t> limit_per_class(const std::vector<int64_t>& indices, const std::vector<int64_t>& labels,
                                     int64_t per_class) {
  if (per_class <= 0) return indices;
  std::map<int64_t, int64_t> count;
  std::vector<int64_t> out;
  for (auto i : indices)
    if (count[labels[static_cast<size_t>(i)]]++ < per_class) out.push_back(i);
  return out;
}

namespace {

std::shared_ptr<ImageDataset> subset(std::shared_ptr<const ImageDataset> base, const std::vector<int64_t>& idx,
                                     const std::vector<int64_t>& base_labels, const std::map<int64_t, int64_t>& remap) {
  std::vector<int64_t> labels;
  labels.reserve(idx.size());
  for (auto i : idx) {
    const int64_t l = base_labels[static_cast<size_t>(i)];
    auto it = remap.find(l);
    labels.push_back(it == remap.end() ? l : it->second);
  }
  return std::make_shared<SubsetDataset>(std::move(base), idx, std::move(labels));
}

std::vector<int64_t> random_limit(std::vector<int64_t> idx, int64_t limit, uint64_t seed) {
  if (limit <= 0 || static_cast<int64_t>(idx.size()) <= limit) return idx;
  std::mt19937_64 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(static_cast<size_t>(limit));
  return idx;
}

std::shared_ptr<ImageDataset> limit_dataset(std::shared_ptr<ImageDataset> data, int64_t limit, uint64_t seed) {
  if (limit <= 0 || data->size() <= limit) return data;
  std::vector<int64_t> all(static_cast<size_t>(data->size()));
  std::iota(all.begin(), all.end(), 0);
  auto idx = random_limit(all, limit, seed);
  std::sort(idx.begin(), idx.end());
  auto labels = data->labels();
  return subset(data, idx, labels, {});
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

/// Resolves class selectors against `count` classes: a class's name (through `by_name`, −1 when
/// unknown) first, so that class folders named 1, 2, 10 are chosen by name; otherwise all digits
/// = an index (`base`-based). Throws `std::invalid_argument` naming the selector, with examples
/// of valid ones. Selecting every class is refused unless `all_allowed` (a near-OOD set comes
/// from elsewhere).
std::vector<int64_t> resolve_classes(const std::vector<std::string>& selectors, int64_t count, int64_t base,
                                     const std::function<int64_t(const std::string&)>& by_name,
                                     const std::string& layout, const std::string& example_names,
                                     bool all_allowed = false) {
  std::vector<int64_t> out;
  for (const auto& sel : selectors) {
    int64_t c = by_name(sel);
    if (c < 0 && all_digits(sel)) {
      const int64_t i = std::stoll(sel) - base;
      if (i >= 0 && i < count) c = i;
    }
    if (c < 0)
      throw std::invalid_argument(layout + ": unknown class '" + sel + "'; use an index " + std::to_string(base) + ".." +
                                  std::to_string(base + count - 1) + " or a name such as " + example_names);
    if (std::find(out.begin(), out.end(), c) != out.end())
      throw std::invalid_argument(layout + ": class '" + sel + "' is selected twice");
    out.push_back(c);
  }
  if (out.size() == 1) throw std::invalid_argument(layout + ": at least 2 ID classes are needed");
  if (static_cast<int64_t>(out.size()) >= count && !all_allowed)
    throw std::invalid_argument(layout + ": every class is ID, which leaves no near-OOD class");
  return out;
}

/// "5-9", "0+2+4", "0-2+7": sorted indices with runs of 3 or more written as ranges.
std::string index_ranges(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += "+";
    if (j - i >= 2) {
      out += std::to_string(v[i]) + "-" + std::to_string(v[j]);
    } else {
      for (size_t k = i; k <= j; ++k) out += (k > i ? "+" : "") + std::to_string(v[k]);
    }
    i = j + 1;
  }
  return out;
}

// ---- gzip-or-plain file reading --------------------------------------------------------------

/// The bytes of a file, inflated when it is gzip-compressed. A plain file is returned as it is
/// (its size is real); a compressed one stops at `cap` bytes, so a gzip bomb cannot fill memory.
std::string inflate_bounded(const std::string& bytes, size_t cap, const std::string& source) {
  if (bytes.size() < 2 || static_cast<uint8_t>(bytes[0]) != 0x1f || static_cast<uint8_t>(bytes[1]) != 0x8b) return bytes;
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) throw std::runtime_error("cannot inflate '" + source + "': zlib failed to start");
  std::string out;
  std::vector<char> buf(1 << 16);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(std::min<size_t>(bytes.size(), UINT32_MAX));
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf.data());
    z.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      const std::string why = rc == Z_BUF_ERROR ? "truncated" : (z.msg ? z.msg : "corrupt");
      inflateEnd(&z);
      throw std::runtime_error("cannot read '" + source + "': the gzip stream is " + why);
    }
    out.append(buf.data(), buf.size() - z.avail_out);
    if (out.size() > cap) {
      inflateEnd(&z);
      throw std::runtime_error("'" + source + "' decompresses to more than the " + std::to_string(cap) +
                               " bytes its contents can use (ReadLimits)");
    }
  }
  inflateEnd(&z);
  return out;
}

std::string read_maybe_gzip(const std::string& path, size_t cap) {
  require_file(path);
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const std::exception&) {
    throw std::runtime_error("cannot read '" + path + "'");
  }
  return inflate_bounded(bytes, cap, path);
}

uint32_t be32(const std::string& s, size_t off) {
  return (uint32_t(uint8_t(s[off])) << 24) | (uint32_t(uint8_t(s[off + 1])) << 16) |
         (uint32_t(uint8_t(s[off + 2])) << 8) | uint32_t(uint8_t(s[off + 3]));
}

/// The most bytes an IDX file's contents can have: its header plus max_elements.
size_t idx_cap(const ReadLimits& limits, size_t header) {
  return header + static_cast<size_t>(std::max<int64_t>(0, limits.max_elements));
}

/// A whole number in [lo, hi] spelled in full by `field`; nullopt otherwise.
std::optional<int> csv_int(const std::string& field, int lo, int hi) {
  size_t used = 0;
  try {
    const long v = std::stol(field, &used);
    if (used == field.size() && v >= lo && v <= hi) return static_cast<int>(v);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// An OOD set that ends up empty (test files without the unseen classes, an OOD folder whose
/// images were all dropped) is refused before training instead of failing at evaluation.
void require_nonempty_ood(const OpenSetSplit& split, const std::string& layout) {
  for (const auto& set : split.ood)
    if (!set.data || set.data->size() == 0)
      throw std::runtime_error(layout + ": the " + (set.near ? "near" : "far") + "-OOD set '" + set.name +
                               "' holds no image");
}

}  // namespace

torch::Tensor parse_idx_images(const std::string& bytes, const std::string& source, const ReadLimits& limits) {
  const std::string data = inflate_bounded(bytes, idx_cap(limits, 16), source);
  if (data.size() < 16 || be32(data, 0) != 0x803)
    throw std::runtime_error("'" + source + "' is not an IDX image file (magic 0x00000803)");
  const int64_t n = be32(data, 4), h = be32(data, 8), w = be32(data, 12);
  // Each factor is below 2^32, but products of two can pass 2^63: every product is checked
  // against the cap by division before it is formed.
  const int64_t cap = limits.max_elements;
  if (n > cap || (w != 0 && h > cap / w) || (h * w != 0 && n > cap / (h * w)))
    throw std::runtime_error("IDX image file '" + source + "' claims " + std::to_string(n) + "×" + std::to_string(h) +
                             "×" + std::to_string(w) + " bytes, more than ReadLimits::max_elements");
  const int64_t total = n * (h * w);
  if (static_cast<int64_t>(data.size()) - 16 != total)
    throw std::runtime_error("IDX image file '" + source + "' is truncated: header says " + std::to_string(n) + "×" +
                             std::to_string(h) + "×" + std::to_string(w) + " bytes, file holds " +
                             std::to_string(data.size() - 16));
  auto t = torch::empty({n, 1, h, w}, torch::kUInt8);
  if (total) std::memcpy(t.data_ptr<uint8_t>(), data.data() + 16, static_cast<size_t>(total));
  return t;
}

std::vector<int64_t> parse_idx_labels(const std::string& bytes, const std::string& source, const ReadLimits& limits) {
  const std::string data = inflate_bounded(bytes, idx_cap(limits, 8), source);
  if (data.size() < 8 || be32(data, 0) != 0x801)
    throw std::runtime_error("'" + source + "' is not an IDX label file (magic 0x00000801)");
  const int64_t n = be32(data, 4);
  if (static_cast<int64_t>(data.size()) - 8 != n)
    throw std::runtime_error("IDX label file '" + source + "' is truncated: header says " + std::to_string(n) +
                             " labels, file holds " + std::to_string(data.size() - 8));
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = uint8_t(data[static_cast<size_t>(8 + i)]);
  return out;
}

torch::Tensor read_idx_images(const std::string& path, const ReadLimits& limits) {
  require_file(path);
  return parse_idx_images(read_file(path), path, limits);
}

std::vector<int64_t> read_idx_labels(const std::string& path, const ReadLimits& limits) {
  require_file(path);
  return parse_idx_labels(read_file(path), path, limits);
}

std::shared_ptr<ImageDataset> read_uci_digits(const std::string& path) {
  const std::string text = read_maybe_gzip(path, size_t(1) << 30);
  std::istringstream in(text);
  std::string line;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF line ends
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string field;
    std::vector<int> values;
    while (std::getline(ls, field, ',')) {
      const bool pixel = values.size() < 64;
      const auto v = csv_int(field, 0, pixel ? 16 : 9);
      if (!v)
        throw std::runtime_error("'" + path + "' line " + std::to_string(line_no) + ": '" + field.substr(0, 20) +
                                 "' is not " + (pixel ? "a pixel value 0..16" : "a digit 0..9"));
      values.push_back(*v);
    }
    if (values.size() != 65)
      throw std::runtime_error("'" + path + "' line " + std::to_string(line_no) + ": expected 65 values, got " +
                               std::to_string(values.size()));
    for (int k = 0; k < 64; ++k) pixels.push_back(static_cast<uint8_t>(values[k]));
    labels.push_back(values[64]);
  }
  if (labels.empty()) throw std::runtime_error("'" + path + "' holds no digits");
  auto t = torch::from_blob(pixels.data(), {static_cast<int64_t>(labels.size()), 1, 8, 8}, torch::kUInt8).clone();
  return std::make_shared<TensorImageDataset>("uci-digits", t, labels, 1.0 / 16.0);
}

// ---- Fashion-MNIST -------------------------------------------------------------------------

OpenSetSplit fashion_mnist_split(const std::string& root, const std::string& far_ood_path, const SplitOptions& opt) {
  if (!fs::is_directory(root)) throw std::runtime_error("Fashion-MNIST root '" + root + "' does not exist");
  auto load = [&](const std::string& stem) {
    const std::string images = root + "/" + stem + "-images-idx3-ubyte.gz";
    const std::string labels = root + "/" + stem + "-labels-idx1-ubyte.gz";
    auto x = read_idx_images(images);
    if (x.size(2) == 0 || x.size(3) == 0)
      throw std::runtime_error("Fashion-MNIST: '" + images + "' holds images of " + std::to_string(x.size(2)) + "×" +
                               std::to_string(x.size(3)) + " pixels");
    auto y = read_idx_labels(labels);
    for (size_t i = 0; i < y.size(); ++i)
      if (y[i] < 0 || y[i] > 9)
        throw std::runtime_error("Fashion-MNIST: '" + labels + "' holds label " + std::to_string(y[i]) +
                                 " at position " + std::to_string(i) + "; labels must be 0..9");
    if (x.size(0) != static_cast<int64_t>(y.size()))
      throw std::runtime_error("Fashion-MNIST: '" + images + "' holds " + std::to_string(x.size(0)) + " images but '" +
                               labels + "' holds " + std::to_string(y.size()) + " labels");
    return std::make_shared<TensorImageDataset>("fashion-mnist/" + stem, x, y);
  };
  auto train_all = load("train");
  auto test_all = load("t10k");

  static const std::vector<std::string> kNames = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  std::vector<int64_t> ids{0, 1, 2, 3, 4};
  if (!opt.id_classes.empty())
    ids = resolve_classes(
        opt.id_classes, 10, 0,
        [](const std::string& n) {
          auto it = std::find(kNames.begin(), kNames.end(), n);
          return it == kNames.end() ? int64_t(-1) : static_cast<int64_t>(it - kNames.begin());
        },
        "fashion-mnist", "'Trouser' or 'Ankle boot'");
  OpenSetSplit split;
  split.name = "fashion-mnist";
  std::map<int64_t, int64_t> remap;
  for (size_t k = 0; k < ids.size(); ++k) {
    remap[ids[k]] = static_cast<int64_t>(k);
    split.class_names.push_back(kNames[static_cast<size_t>(ids[k])]);
  }

  auto train_labels = train_all->labels();
  std::vector<int64_t> id_idx, id_labels;
  for (size_t i = 0; i < train_labels.size(); ++i)
    if (remap.count(train_labels[i])) id_idx.push_back(static_cast<int64_t>(i));
  for (auto i : id_idx) id_labels.push_back(train_labels[static_cast<size_t>(i)]);
  auto parts = stratified_split(id_labels, {0.9, 0.1}, opt.seed);
  auto pick = [&](const std::vector<int64_t>& local) {
    std::vector<int64_t> out;
    for (auto j : local) out.push_back(id_idx[static_cast<size_t>(j)]);
    return out;
  };
  split.train = subset(train_all, limit_per_class(pick(parts[0]), train_labels, opt.train_per_class), train_labels,
                       remap);
  split.val = subset(train_all, limit_per_class(pick(parts[1]), train_labels, opt.val_per_class), train_labels, remap);

  auto test_labels = test_all->labels();
  std::vector<int64_t> test_id, test_ood, ood_classes;
  for (size_t i = 0; i < test_labels.size(); ++i)
    (remap.count(test_labels[i]) ? test_id : test_ood).push_back(static_cast<int64_t>(i));
  for (int64_t c = 0; c < 10; ++c)
    if (!remap.count(c)) ood_classes.push_back(c);
  split.test = subset(test_all, limit_per_class(test_id, test_labels, opt.test_per_class), test_labels, remap);
  split.ood.push_back({"fashion-mnist-" + index_ranges(ood_classes), true,
                       subset(test_all, random_limit(test_ood, opt.ood_limit, opt.seed), test_labels, {})});
  if (!far_ood_path.empty() && fs::exists(far_ood_path)) {
    split.ood.push_back({"uci-digits", false, limit_dataset(read_uci_digits(far_ood_path), opt.ood_limit, opt.seed)});
  } else {
    split.notes.push_back("no far-OOD set: '" + (far_ood_path.empty() ? std::string("(none given)") : far_ood_path) +
                          "' is absent (Debian's python3-sklearn ships the UCI digits used by default)");
  }
  require_nonempty_ood(split, "Fashion-MNIST");
  return split;
}

// ---- ImageFolder ---------------------------------------------------------------------------

namespace {

/// The last component of a folder path, ignoring a trailing separator.
std::string folder_name(const std::string& path) {
  auto p = fs::path(path);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

/// Hidden entries (".ipynb_checkpoints", macOS's "._name.jpg" metadata) are neither classes nor
/// images.
bool is_hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

/// The entries of `dir`, or an error naming it and the reason (permission, a symbolic-link loop).
std::vector<fs::directory_entry> entries(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::directory_entry> out;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    out.push_back(*it);
  if (ec) throw std::runtime_error("cannot list the folder '" + dir.string() + "': " + ec.message());
  return out;
}

/// The image files of `dir`, sorted. Image names that do not lead to a file (a broken symbolic
/// link, a link loop) go to `unreadable`.
std::vector<std::string> list_images(const fs::path& dir, std::vector<std::string>& unreadable) {
  std::vector<std::string> out;
  for (const auto& e : entries(dir)) {
    if (is_hidden(e.path()) || !is_image_file(e.path())) continue;
    std::error_code ec;
    if (e.is_regular_file(ec)) out.push_back(e.path().string());
    else if (ec || e.is_symlink(ec)) unreadable.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// "class folder 'DIR' holds no images", with what it holds instead, if anything.
std::string no_images(const fs::path& dir) {
  std::vector<std::string> files, folders;
  for (const auto& e : entries(dir)) {
    std::error_code ec;
    if (is_hidden(e.path())) continue;
    if (e.is_directory(ec)) folders.push_back(e.path().filename().string());
    else if (e.is_regular_file(ec)) files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  std::sort(folders.begin(), folders.end());
  auto some = [](const std::vector<std::string>& v, const std::string& what) {
    return std::to_string(v.size()) + " " + what + (v.size() == 1 ? "" : "s") + ", such as '" + v.front() + "'";
  };
  std::string s = "class folder '" + dir.string() + "' holds no images";
  if (!files.empty() || !folders.empty()) s += " (.jpg, .jpeg, .png or .bmp)";
  if (!files.empty()) s += ": " + some(files, "other file");
  if (!folders.empty())
    s += std::string(files.empty() ? ": " : "; ") + some(folders, "subfolder") + " (a class's images are not searched for in subfolders)";
  return s;
}

/// Drops files that do not decode, when asked; records them.
void filter_corrupt(std::vector<std::string>& paths, std::vector<int64_t>& labels, bool skip,
                    std::vector<std::string>& skipped) {
  if (!skip) return;
  std::vector<std::string> keep_p;
  std::vector<int64_t> keep_l;
  for (size_t i = 0; i < paths.size(); ++i) {
    try {
      load_image(paths[i]);
      keep_p.push_back(paths[i]);
      keep_l.push_back(labels[i]);
    } catch (const std::runtime_error&) {
      skipped.push_back(paths[i]);
    }
  }
  paths.swap(keep_p);
  labels.swap(keep_l);
}

/// A folder of class subfolders, or a flat folder of images (one class, label 0).
std::shared_ptr<ImageDataset> folder_dataset(const std::string& root, std::vector<std::string>* class_names,
                                             bool require_classes, bool skip, std::vector<std::string>& skipped) {
  if (!fs::is_directory(root))
    throw std::runtime_error("image folder '" + root + "' " + (fs::exists(root) ? "is not a directory" : "does not exist"));
  std::vector<std::string> classes, unreadable;
  for (const auto& e : entries(root)) {
    if (is_hidden(e.path())) continue;
    std::error_code ec, link_ec;
    if (e.is_directory(ec)) classes.push_back(e.path().filename().string());
    else if (ec && !is_image_file(e.path()) && e.is_symlink(link_ec))  // a class folder's link that leads nowhere
      throw std::runtime_error("image folder entry '" + e.path().string() +
                               "' is a symbolic link that cannot be followed: " + ec.message());
  }
  std::sort(classes.begin(), classes.end());
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  if (classes.empty() && require_classes) throw std::runtime_error("image folder '" + root + "' has no class subfolders");
  if (!require_classes) {
    // An OOD set: the images at its top level (label 0) and in its subfolders (labelled by
    // subfolder index, as an ImageFolder); subfolders without images are ignored.
    paths = list_images(root, unreadable);
    labels.assign(paths.size(), 0);
    for (size_t c = 0; c < classes.size(); ++c)
      for (auto& f : list_images(fs::path(root) / classes[c], unreadable)) {
        paths.push_back(f);
        labels.push_back(static_cast<int64_t>(c));
      }
  } else {
    for (size_t c = 0; c < classes.size(); ++c) {
      auto files = list_images(fs::path(root) / classes[c], unreadable);
      if (files.empty()) throw std::runtime_error(no_images(fs::path(root) / classes[c]));
      for (auto& f : files) {
        paths.push_back(f);
        labels.push_back(static_cast<int64_t>(c));
      }
    }
  }
  if (!unreadable.empty()) {
    std::sort(unreadable.begin(), unreadable.end());
    if (!skip) {
      std::error_code ec;
      (void)fs::status(unreadable.front(), ec);
      throw std::runtime_error("image '" + unreadable.front() + "' cannot be read: " +
                               (ec ? ec.message() : std::string("not a file")) +
                               (unreadable.size() > 1 ? " (and " + std::to_string(unreadable.size() - 1) + " more)" : ""));
    }
    skipped.insert(skipped.end(), unreadable.begin(), unreadable.end());
  }
  if (paths.empty()) throw std::runtime_error("image folder '" + root + "' holds no images");
  filter_corrupt(paths, labels, skip, skipped);
  if (class_names) *class_names = classes;
  return std::make_shared<FileImageDataset>(paths, labels);
}

}  // namespace

std::shared_ptr<ImageDataset> read_image_folder(const std::string& root, std::vector<std::string>* class_names) {
  std::vector<std::string> skipped;
  return folder_dataset(root, class_names, /*require_classes=*/true, /*skip=*/false, skipped);
}

OpenSetSplit image_folder_split(const std::string& root, const std::string& ood_root,
                                const std::vector<std::string>& far_ood_roots, const SplitOptions& opt) {
  OpenSetSplit split;
  split.name = "image-folder";
  auto all = folder_dataset(root, &split.class_names, true, opt.skip_corrupt, split.skipped_files);
  if (split.class_names.size() < 2) throw std::runtime_error("image folder '" + root + "' needs at least 2 classes");
  if (opt.fractions.size() != 3) throw std::invalid_argument("image-folder split needs 3 fractions (train/val/test)");
  auto labels = all->labels();
  const auto class_names = split.class_names;
  std::map<int64_t, int64_t> remap;  // ID class → label
  if (opt.id_classes.empty()) {
    for (size_t c = 0; c < class_names.size(); ++c) remap[static_cast<int64_t>(c)] = static_cast<int64_t>(c);
  } else {
    auto ids = resolve_classes(
        opt.id_classes, static_cast<int64_t>(class_names.size()), 0,
        [&](const std::string& n) {
          auto it = std::find(class_names.begin(), class_names.end(), n);
          return it == class_names.end() ? int64_t(-1) : static_cast<int64_t>(it - class_names.begin());
        },
        "image folder '" + root + "'", "'" + class_names.front() + "'", /*all_allowed=*/!ood_root.empty());
    split.class_names.clear();
    for (size_t k = 0; k < ids.size(); ++k) {
      remap[ids[k]] = static_cast<int64_t>(k);
      split.class_names.push_back(class_names[static_cast<size_t>(ids[k])]);
    }
  }
  std::vector<int64_t> id_idx, id_labels, unseen;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (remap.count(labels[i])) {
      id_idx.push_back(static_cast<int64_t>(i));
      id_labels.push_back(labels[i]);
    } else {
      unseen.push_back(static_cast<int64_t>(i));
    }
  }
  auto parts = stratified_split(id_labels, opt.fractions, opt.seed);
  for (auto& part : parts)
    for (auto& j : part) j = id_idx[static_cast<size_t>(j)];
  split.train = subset(all, limit_per_class(parts[0], labels, opt.train_per_class), labels, remap);
  split.val = subset(all, limit_per_class(parts[1], labels, opt.val_per_class), labels, remap);
  split.test = subset(all, limit_per_class(parts[2], labels, opt.test_per_class), labels, remap);
  if (!unseen.empty())
    split.ood.push_back({folder_name(root) + "-unseen", true,
                         subset(all, random_limit(unseen, opt.ood_limit, opt.seed), labels, {})});
  if (!ood_root.empty())
    split.ood.push_back({folder_name(ood_root), true,
                         limit_dataset(folder_dataset(ood_root, nullptr, false, opt.skip_corrupt, split.skipped_files),
                                       opt.ood_limit, opt.seed)});
  for (const auto& far : far_ood_roots)
    if (!far.empty())
      split.ood.push_back({folder_name(far), false,
                           limit_dataset(folder_dataset(far, nullptr, false, opt.skip_corrupt, split.skipped_files),
                                         opt.ood_limit, opt.seed)});
  require_nonempty_ood(split, "image folder '" + root + "'");
  return split;
}

// ---- .mat files (Stanford Dogs, Oxford Flowers-102) ------------------------------------------

std::shared_ptr<ImageDataset> oxford_flowers(const std::string& root, const std::string& part) {
  static const std::map<std::string, std::vector<const char*>> kParts = {
      {"all", {"trnid", "valid", "tstid"}}, {"train", {"trnid"}}, {"val", {"valid"}}, {"test", {"tstid"}}};
  auto wanted = kParts.find(part);
  if (wanted == kParts.end())
    throw std::invalid_argument("oxford_flowers: unknown part '" + part + "'; known: all, train, val, test");
  if (!fs::is_directory(root)) throw std::runtime_error("Oxford Flowers-102 root '" + root + "' does not exist");
  auto labels = MatFile::open(root + "/imagelabels.mat").integers("labels");
  std::vector<int64_t> ids;
  if (part == "all" && !fs::exists(root + "/setid.mat")) {
    for (size_t i = 0; i < labels.size(); ++i) ids.push_back(static_cast<int64_t>(i + 1));
  } else {
    const MatFile setid = MatFile::open(root + "/setid.mat");
    for (const char* name : wanted->second) {
      auto p = setid.integers(name);
      ids.insert(ids.end(), p.begin(), p.end());
    }
  }
  std::sort(ids.begin(), ids.end());
  if (auto twice = std::adjacent_find(ids.begin(), ids.end()); twice != ids.end())
    throw std::runtime_error("'" + root + "/setid.mat': image id " + std::to_string(*twice) + " is listed twice");
  std::vector<std::string> paths;
  std::vector<int64_t> out_labels;
  for (auto id : ids) {
    if (id < 1 || id > static_cast<int64_t>(labels.size()))
      throw std::runtime_error("'" + root + "/setid.mat': image id " + std::to_string(id) + " has no label in imagelabels.mat");
    if (labels[static_cast<size_t>(id - 1)] < 1)
      throw std::runtime_error("'" + root + "/imagelabels.mat': image id " + std::to_string(id) + " has label " +
                               std::to_string(labels[static_cast<size_t>(id - 1)]) +
                               " (labels are 1-based class indices)");
    char name[32];
    std::snprintf(name, sizeof name, "image_%05lld.jpg", static_cast<long long>(id));
    paths.push_back(root + "/jpg/" + name);
    out_labels.push_back(labels[static_cast<size_t>(id - 1)] - 1);
  }
  return std::make_shared<FileImageDataset>(paths, out_labels);
}

ImageList parse_image_list(const std::string& bytes, const std::string& source, const ReadLimits& limits) {
  const MatFile m(bytes, source, limits);
  ImageList list;
  list.files = m.strings("file_list");
  list.labels = m.integers("labels");
  if (list.files.size() != list.labels.size())
    throw std::runtime_error("'" + source + "': " + std::to_string(list.files.size()) + " files but " +
                             std::to_string(list.labels.size()) + " labels");
  for (size_t i = 0; i < list.labels.size(); ++i)
    if (list.labels[i] < 1 || list.labels[i] > 100000)
      throw std::runtime_error("'" + source + "': entry " + std::to_string(i) + " has label " +
                               std::to_string(list.labels[i]) + " (labels are 1-based class indices)");
  return list;
}

ImageList read_image_list(const std::string& mat_path, const ReadLimits& limits) {
  require_file(mat_path);
  return parse_image_list(read_file(mat_path), mat_path, limits);
}

namespace {

/// The images a Stanford Dogs list names, with 0-based labels. A listed file that does not exist
/// is an error, or, with skip_corrupt, dropped and recorded.
void read_dogs_list(const std::string& root, const std::string& file, bool skip, std::vector<std::string>& paths,
                    std::vector<int64_t>& labels, std::vector<std::string>& skipped) {
  const auto mat = root + "/" + file;
  const auto list = read_image_list(mat);
  const auto& files = list.files;
  const auto& l = list.labels;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto path = root + "/Images/" + files[i];
    if (files[i].find("..") != std::string::npos || (!files[i].empty() && files[i][0] == '/'))
      throw std::runtime_error("'" + mat + "' lists '" + files[i] + "', which points outside " + root + "/Images");
    if (!fs::is_regular_file(path)) {
      if (!skip)
        throw std::runtime_error("'" + mat + "' lists '" + files[i] + "', which does not exist under " + root +
                                 "/Images");
      skipped.push_back(path);
      continue;
    }
    paths.push_back(path);
    labels.push_back(l[i] - 1);
  }
}

}  // namespace

OpenSetSplit stanford_dogs_split(const std::string& root, const std::string& flowers_root, const SplitOptions& opt,
                                 int64_t num_id_classes) {
  if (!fs::is_directory(root)) throw std::runtime_error("Stanford Dogs root '" + root + "' does not exist");
  if (opt.fractions.size() < 2 || !(opt.fractions[0] > 0) || !(opt.fractions[1] > 0))
    throw std::invalid_argument("stanford-dogs split needs positive train and val fractions");
  OpenSetSplit split;
  split.name = "stanford-dogs";
  std::vector<std::string> train_paths, test_paths;
  std::vector<int64_t> train_labels, test_labels;
  read_dogs_list(root, "train_list.mat", opt.skip_corrupt, train_paths, train_labels, split.skipped_files);
  read_dogs_list(root, "test_list.mat", opt.skip_corrupt, test_paths, test_labels, split.skipped_files);

  // Classes, their folder names ("n02085620-Chihuahua") and their images over both lists.
  int64_t num_classes = 0;
  for (auto l : train_labels) num_classes = std::max(num_classes, l + 1);
  for (auto l : test_labels) num_classes = std::max(num_classes, l + 1);
  std::vector<std::string> names(static_cast<size_t>(num_classes));
  std::vector<int64_t> totals(static_cast<size_t>(num_classes), 0);
  auto count = [&](const std::vector<std::string>& paths, const std::vector<int64_t>& labels) {
    for (size_t i = 0; i < paths.size(); ++i) {
      auto& name = names[static_cast<size_t>(labels[i])];
      if (name.empty()) name = fs::path(paths[i]).parent_path().filename().string();
      ++totals[static_cast<size_t>(labels[i])];
    }
  };
  count(train_paths, train_labels);
  count(test_paths, test_labels);

  std::vector<int64_t> ids;
  if (opt.id_classes.empty()) {
    // The most images over both lists; ties go to the lower class index.
    std::vector<int64_t> order;
    for (int64_t c = 0; c < num_classes; ++c)
      if (totals[static_cast<size_t>(c)] > 0) order.push_back(c);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return totals[static_cast<size_t>(a)] > totals[static_cast<size_t>(b)]; });
    if (static_cast<int64_t>(order.size()) <= num_id_classes)
      throw std::runtime_error("Stanford Dogs: the lists hold " + std::to_string(order.size()) + " breeds; " +
                               std::to_string(num_id_classes) + " ID breeds need more");
    ids.assign(order.begin(), order.begin() + num_id_classes);
  } else {
    ids = resolve_classes(
        opt.id_classes, num_classes, 1,
        [&](const std::string& n) {
          for (size_t c = 0; c < names.size(); ++c) {
            const auto& full = names[c];
            const auto dash = full.find('-');
            if (full == n || (dash != std::string::npos && (full.substr(0, dash) == n || full.substr(dash + 1) == n)))
              return static_cast<int64_t>(c);
          }
          return int64_t(-1);
        },
        "stanford-dogs", "'n02085620-Chihuahua', 'n02085620' or 'Chihuahua'");
    for (size_t k = 0; k < ids.size(); ++k)
      if (totals[static_cast<size_t>(ids[k])] == 0)
        throw std::invalid_argument("stanford-dogs: class '" + opt.id_classes[k] + "' has no image in the lists");
  }
  std::map<int64_t, int64_t> remap;
  std::string chosen;
  for (size_t k = 0; k < ids.size(); ++k) {
    const auto c = static_cast<size_t>(ids[k]);
    remap[ids[k]] = static_cast<int64_t>(k);
    split.class_names.push_back(names[c].empty() ? "class-" + std::to_string(c + 1) : names[c]);
    chosen += (k ? ", " : "") + split.class_names.back() + " (class " + std::to_string(c + 1) + ", " +
              std::to_string(totals[c]) + " images)";
  }
  split.notes.push_back("ID breeds" + std::string(opt.id_classes.empty() ? ", most images over both lists" : "") +
                        ": " + chosen);

  // ID train/val from train_list.mat, stratified; ID test and near-OOD from test_list.mat.
  std::vector<std::string> id_paths;
  std::vector<int64_t> id_labels;
  for (size_t i = 0; i < train_paths.size(); ++i)
    if (remap.count(train_labels[i])) {
      id_paths.push_back(train_paths[i]);
      id_labels.push_back(remap[train_labels[i]]);
    }
  filter_corrupt(id_paths, id_labels, opt.skip_corrupt, split.skipped_files);
  auto id = std::make_shared<FileImageDataset>(id_paths, id_labels);
  const double train_share = opt.fractions[0] / (opt.fractions[0] + opt.fractions[1]);
  auto parts = stratified_split(id_labels, {train_share, 1 - train_share}, opt.seed);
  split.train = subset(id, limit_per_class(parts[0], id_labels, opt.train_per_class), id_labels, {});
  split.val = subset(id, limit_per_class(parts[1], id_labels, opt.val_per_class), id_labels, {});

  std::vector<std::string> test_id_paths, ood_paths;
  std::vector<int64_t> test_id_labels, ood_labels;
  for (size_t i = 0; i < test_paths.size(); ++i) {
    if (remap.count(test_labels[i])) {
      test_id_paths.push_back(test_paths[i]);
      test_id_labels.push_back(remap[test_labels[i]]);
    } else {
      ood_paths.push_back(test_paths[i]);
      ood_labels.push_back(test_labels[i]);
    }
  }
  filter_corrupt(test_id_paths, test_id_labels, opt.skip_corrupt, split.skipped_files);
  filter_corrupt(ood_paths, ood_labels, opt.skip_corrupt, split.skipped_files);
  std::vector<int64_t> all_test(test_id_paths.size());
  std::iota(all_test.begin(), all_test.end(), 0);
  auto test = std::make_shared<FileImageDataset>(test_id_paths, test_id_labels);
  split.test = subset(test, limit_per_class(all_test, test_id_labels, opt.test_per_class), test_id_labels, {});
  split.ood.push_back({"stanford-dogs-unseen", true,
                       limit_dataset(std::make_shared<FileImageDataset>(ood_paths, ood_labels), opt.ood_limit, opt.seed)});
  if (!flowers_root.empty()) {
    const bool has_splits = fs::exists(flowers_root + "/setid.mat");
    auto flowers = std::static_pointer_cast<FileImageDataset>(oxford_flowers(flowers_root, has_splits ? "test" : "all"));
    if (!has_splits) split.notes.push_back("far-OOD: '" + flowers_root + "/setid.mat' is absent, so every Flowers-102 image is used");
    auto paths = flowers->paths();
    auto labels = flowers->labels();
    filter_corrupt(paths, labels, opt.skip_corrupt, split.skipped_files);
    // Checked here like the Dogs lists: a listed image that is missing would otherwise fail
    // only at evaluation, after training.
    for (const auto& path : paths)
      if (!fs::is_regular_file(path))
        throw std::runtime_error("Oxford Flowers-102: '" + path + "' is listed in " +
                                 (has_splits ? "setid.mat" : "imagelabels.mat") + " but does not exist");
    split.ood.push_back({"oxford-flowers-102", false,
                         limit_dataset(std::make_shared<FileImageDataset>(paths, labels), opt.ood_limit, opt.seed)});
  }
  require_nonempty_ood(split, "Stanford Dogs");
  return split;
}

}  // namespace nordf
