#include <libnordf/data/dataset.h>
#include <libnordf/data/image.h>
#include <libnordf/data/sources.h>

#include <matio.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
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

// ---- gzip-or-plain file reading --------------------------------------------------------------

std::string read_maybe_gzip(const std::string& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error("file '" + path + "' does not exist");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open '" + path + "'");
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool failed = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  std::string why = failed && msg ? msg : "";
  gzclose(f);
  if (failed) throw std::runtime_error("cannot read '" + path + "': " + (why.empty() ? "corrupt or truncated" : why));
  return out;
}

uint32_t be32(const std::string& s, size_t off) {
  return (uint32_t(uint8_t(s[off])) << 24) | (uint32_t(uint8_t(s[off + 1])) << 16) |
         (uint32_t(uint8_t(s[off + 2])) << 8) | uint32_t(uint8_t(s[off + 3]));
}

}  // namespace

torch::Tensor read_idx_images(const std::string& path) {
  const std::string data = read_maybe_gzip(path);
  if (data.size() < 16 || be32(data, 0) != 0x803)
    throw std::runtime_error("'" + path + "' is not an IDX image file (magic 0x00000803)");
  const int64_t n = be32(data, 4), h = be32(data, 8), w = be32(data, 12);
  if (static_cast<int64_t>(data.size()) - 16 != n * h * w)
    throw std::runtime_error("IDX image file '" + path + "' is truncated: header says " + std::to_string(n) + "×" +
                             std::to_string(h) + "×" + std::to_string(w) + " bytes, file holds " +
                             std::to_string(data.size() - 16));
  auto t = torch::empty({n, 1, h, w}, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), data.data() + 16, static_cast<size_t>(n * h * w));
  return t;
}

std::vector<int64_t> read_idx_labels(const std::string& path) {
  const std::string data = read_maybe_gzip(path);
  if (data.size() < 8 || be32(data, 0) != 0x801)
    throw std::runtime_error("'" + path + "' is not an IDX label file (magic 0x00000801)");
  const int64_t n = be32(data, 4);
  if (static_cast<int64_t>(data.size()) - 8 != n)
    throw std::runtime_error("IDX label file '" + path + "' is truncated: header says " + std::to_string(n) +
                             " labels, file holds " + std::to_string(data.size() - 8));
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = uint8_t(data[static_cast<size_t>(8 + i)]);
  return out;
}

std::shared_ptr<ImageDataset> read_uci_digits(const std::string& path) {
  const std::string text = read_maybe_gzip(path);
  std::istringstream in(text);
  std::string line;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string field;
    std::vector<int> values;
    while (std::getline(ls, field, ',')) values.push_back(std::stoi(field));
    if (values.size() != 65)
      throw std::runtime_error("'" + path + "' line " + std::to_string(line_no) + ": expected 65 values, got " +
                               std::to_string(values.size()));
    for (int k = 0; k < 64; ++k) pixels.push_back(static_cast<uint8_t>(std::clamp(values[k], 0, 16)));
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
    auto y = read_idx_labels(labels);
    if (x.size(0) != static_cast<int64_t>(y.size()))
      throw std::runtime_error("Fashion-MNIST: '" + images + "' holds " + std::to_string(x.size(0)) + " images but '" +
                               labels + "' holds " + std::to_string(y.size()) + " labels");
    return std::make_shared<TensorImageDataset>("fashion-mnist/" + stem, x, y);
  };
  auto train_all = load("train");
  auto test_all = load("t10k");

  OpenSetSplit split;
  split.name = "fashion-mnist";
  split.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"};
  const std::map<int64_t, int64_t> identity{{0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}};

  auto train_labels = train_all->labels();
  std::vector<int64_t> id_idx, id_labels;
  for (size_t i = 0; i < train_labels.size(); ++i)
    if (train_labels[i] < 5) id_idx.push_back(static_cast<int64_t>(i));
  for (auto i : id_idx) id_labels.push_back(train_labels[static_cast<size_t>(i)]);
  auto parts = stratified_split(id_labels, {0.9, 0.1}, opt.seed);
  auto pick = [&](const std::vector<int64_t>& local) {
    std::vector<int64_t> out;
    for (auto j : local) out.push_back(id_idx[static_cast<size_t>(j)]);
    return out;
  };
  split.train = subset(train_all, limit_per_class(pick(parts[0]), train_labels, opt.train_per_class), train_labels,
                       identity);
  split.val = subset(train_all, limit_per_class(pick(parts[1]), train_labels, opt.val_per_class), train_labels,
                     identity);

  auto test_labels = test_all->labels();
  std::vector<int64_t> test_id, test_ood;
  for (size_t i = 0; i < test_labels.size(); ++i)
    (test_labels[i] < 5 ? test_id : test_ood).push_back(static_cast<int64_t>(i));
  split.test = subset(test_all, limit_per_class(test_id, test_labels, opt.test_per_class), test_labels, identity);
  split.ood.push_back({"fashion-mnist-5-9", true,
                       subset(test_all, random_limit(test_ood, opt.ood_limit, opt.seed), test_labels, {})});
  if (!far_ood_path.empty() && fs::exists(far_ood_path)) {
    split.ood.push_back({"uci-digits", false, limit_dataset(read_uci_digits(far_ood_path), opt.ood_limit, opt.seed)});
  } else {
    split.notes.push_back("no far-OOD set: '" + (far_ood_path.empty() ? std::string("(none given)") : far_ood_path) +
                          "' is absent (Debian's python3-sklearn ships the UCI digits used by default)");
  }
  return split;
}

// ---- ImageFolder ---------------------------------------------------------------------------

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

std::vector<std::string> list_images(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && is_image_file(e.path())) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
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
  if (!fs::is_directory(root)) throw std::runtime_error("image folder '" + root + "' does not exist");
  std::vector<std::string> classes;
  for (auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  if (classes.empty()) {
    if (require_classes) throw std::runtime_error("image folder '" + root + "' has no class subfolders");
    paths = list_images(root);
    labels.assign(paths.size(), 0);
  } else {
    for (size_t c = 0; c < classes.size(); ++c) {
      auto files = list_images(fs::path(root) / classes[c]);
      if (files.empty())
        throw std::runtime_error("class folder '" + (fs::path(root) / classes[c]).string() + "' holds no images");
      for (auto& f : files) {
        paths.push_back(f);
        labels.push_back(static_cast<int64_t>(c));
      }
    }
  }
  if (paths.empty()) throw std::runtime_error("image folder '" + root + "' holds no images");
  filter_corrupt(paths, labels, skip, skipped);
  if (class_names) *class_names = classes;
  return std::make_shared<FileImageDataset>(paths, labels);
}

}  // namespace

OpenSetSplit image_folder_split(const std::string& root, const std::string& ood_root,
                                const std::vector<std::string>& far_ood_roots, const SplitOptions& opt) {
  OpenSetSplit split;
  split.name = "image-folder";
  auto all = folder_dataset(root, &split.class_names, true, opt.skip_corrupt, split.skipped_files);
  if (split.class_names.size() < 2) throw std::runtime_error("image folder '" + root + "' needs at least 2 classes");
  if (opt.fractions.size() != 3) throw std::invalid_argument("image-folder split needs 3 fractions (train/val/test)");
  auto labels = all->labels();
  auto parts = stratified_split(labels, opt.fractions, opt.seed);
  split.train = subset(all, limit_per_class(parts[0], labels, opt.train_per_class), labels, {});
  split.val = subset(all, limit_per_class(parts[1], labels, opt.val_per_class), labels, {});
  split.test = subset(all, limit_per_class(parts[2], labels, opt.test_per_class), labels, {});
  if (!ood_root.empty())
    split.ood.push_back({fs::path(ood_root).filename().string(), true,
                         limit_dataset(folder_dataset(ood_root, nullptr, false, opt.skip_corrupt, split.skipped_files),
                                       opt.ood_limit, opt.seed)});
  for (const auto& far : far_ood_roots)
    if (!far.empty())
      split.ood.push_back({fs::path(far).filename().string(), false,
                           limit_dataset(folder_dataset(far, nullptr, false, opt.skip_corrupt, split.skipped_files),
                                         opt.ood_limit, opt.seed)});
  return split;
}

// ---- .mat files (Stanford Dogs, Oxford Flowers-102) ------------------------------------------

namespace {

struct MatFile {
  explicit MatFile(const std::string& path) : path(path) {
    if (!fs::is_regular_file(path)) throw std::runtime_error("file '" + path + "' does not exist");
    mat = Mat_Open(path.c_str(), MAT_ACC_RDONLY);
    if (!mat) throw std::runtime_error("'" + path + "' is not a readable MATLAB .mat file");
  }
  ~MatFile() {
    if (mat) Mat_Close(mat);
  }
  MatFile(const MatFile&) = delete;
  MatFile& operator=(const MatFile&) = delete;

  matvar_t* var(const char* name) const {
    matvar_t* v = Mat_VarRead(mat, name);
    if (!v) throw std::runtime_error("'" + path + "' has no variable '" + name + "'");
    return v;
  }

  std::vector<int64_t> numbers(const char* name) const {
    matvar_t* v = var(name);
    std::vector<int64_t> out;
    const size_t n = v->nbytes / (v->data_size ? v->data_size : 1);
    for (size_t i = 0; i < n && v->data; ++i) {
      double x = 0;
      switch (v->data_type) {
        case MAT_T_DOUBLE: x = static_cast<const double*>(v->data)[i]; break;
        case MAT_T_SINGLE: x = static_cast<const float*>(v->data)[i]; break;
        case MAT_T_UINT8: x = static_cast<const uint8_t*>(v->data)[i]; break;
        case MAT_T_INT32: x = static_cast<const int32_t*>(v->data)[i]; break;
        case MAT_T_UINT16: x = static_cast<const uint16_t*>(v->data)[i]; break;
        case MAT_T_INT64: x = static_cast<double>(static_cast<const int64_t*>(v->data)[i]); break;
        default:
          Mat_VarFree(v);
          throw std::runtime_error("'" + path + "': variable '" + name + "' is not numeric");
      }
      out.push_back(static_cast<int64_t>(x));
    }
    Mat_VarFree(v);
    return out;
  }

  std::vector<std::string> strings(const char* name) const {
    matvar_t* v = var(name);
    if (v->class_type != MAT_C_CELL) {
      Mat_VarFree(v);
      throw std::runtime_error("'" + path + "': variable '" + name + "' is not a cell array of strings");
    }
    std::vector<std::string> out;
    const size_t n = v->nbytes / sizeof(matvar_t*);
    for (size_t i = 0; i < n; ++i) {
      matvar_t* cell = Mat_VarGetCell(v, static_cast<int>(i));
      while (cell && cell->class_type == MAT_C_CELL) cell = Mat_VarGetCell(cell, 0);  // {'x'} nested cells
      if (!cell || cell->class_type != MAT_C_CHAR || !cell->data) {
        Mat_VarFree(v);
        throw std::runtime_error("'" + path + "': entry " + std::to_string(i) + " of '" + name + "' is not a string");
      }
      const size_t len = cell->nbytes / (cell->data_size ? cell->data_size : 1);
      std::string s;
      if (cell->data_size == 1) {
        s.assign(static_cast<const char*>(cell->data), len);
      } else {
        for (size_t k = 0; k < len; ++k) s.push_back(static_cast<char>(static_cast<const uint16_t*>(cell->data)[k]));
      }
      out.push_back(s);
    }
    Mat_VarFree(v);
    return out;
  }

  std::string path;
  mat_t* mat = nullptr;
};

}  // namespace

std::shared_ptr<ImageDataset> oxford_flowers(const std::string& root) {
  if (!fs::is_directory(root)) throw std::runtime_error("Oxford Flowers-102 root '" + root + "' does not exist");
  auto labels = MatFile(root + "/imagelabels.mat").numbers("labels");
  MatFile setid(root + "/setid.mat");
  std::vector<int64_t> ids;
  for (const char* part : {"trnid", "valid", "tstid"}) {
    auto p = setid.numbers(part);
    ids.insert(ids.end(), p.begin(), p.end());
  }
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> paths;
  std::vector<int64_t> out_labels;
  for (auto id : ids) {
    if (id < 1 || id > static_cast<int64_t>(labels.size()))
      throw std::runtime_error("'" + root + "/setid.mat': image id " + std::to_string(id) + " has no label in imagelabels.mat");
    char name[32];
    std::snprintf(name, sizeof name, "image_%05lld.jpg", static_cast<long long>(id));
    paths.push_back(root + "/jpg/" + name);
    out_labels.push_back(labels[static_cast<size_t>(id - 1)] - 1);
  }
  return std::make_shared<FileImageDataset>(paths, out_labels);
}

OpenSetSplit stanford_dogs_split(const std::string& root, const std::string& flowers_root, const SplitOptions& opt,
                                 int64_t num_id_classes) {
  if (!fs::is_directory(root)) throw std::runtime_error("Stanford Dogs root '" + root + "' does not exist");
  if (opt.fractions.size() != 3) throw std::invalid_argument("stanford-dogs split needs 3 fractions (train/val/test)");
  auto read_list = [&](const std::string& file, std::vector<std::string>& paths, std::vector<int64_t>& labels) {
    MatFile m(root + "/" + file);
    auto files = m.strings("file_list");
    auto l = m.numbers("labels");
    if (files.size() != l.size())
      throw std::runtime_error("'" + m.path + "': " + std::to_string(files.size()) + " files but " +
                               std::to_string(l.size()) + " labels");
    for (size_t i = 0; i < files.size(); ++i) {
      paths.push_back(root + "/Images/" + files[i]);
      labels.push_back(l[i] - 1);  // 1-based in the .mat files
    }
  };
  std::vector<std::string> train_paths, test_paths;
  std::vector<int64_t> train_labels, test_labels;
  read_list("train_list.mat", train_paths, train_labels);
  read_list("test_list.mat", test_paths, test_labels);

  // ID classes: the most frequent in the training list, fixed once (ties: lower index).
  std::map<int64_t, int64_t> counts;
  for (auto l : train_labels) counts[l]++;
  std::vector<std::pair<int64_t, int64_t>> order(counts.begin(), counts.end());
  std::stable_sort(order.begin(), order.end(), [](auto& a, auto& b) { return a.second > b.second; });
  if (static_cast<int64_t>(order.size()) <= num_id_classes)
    throw std::runtime_error("Stanford Dogs: need more than " + std::to_string(num_id_classes) + " classes");
  std::map<int64_t, int64_t> remap;
  std::vector<int64_t> id_classes;
  for (int64_t k = 0; k < num_id_classes; ++k) {
    id_classes.push_back(order[static_cast<size_t>(k)].first);
    remap[order[static_cast<size_t>(k)].first] = k;
  }

  OpenSetSplit split;
  split.name = "stanford-dogs";
  for (auto c : id_classes) {
    // Class names from the folder part of the path, e.g. "n02085620-Chihuahua".
    for (size_t i = 0; i < train_paths.size(); ++i)
      if (train_labels[i] == c) {
        split.class_names.push_back(fs::path(train_paths[i]).parent_path().filename().string());
        break;
      }
  }
  std::vector<std::string> id_paths;
  std::vector<int64_t> id_labels;
  for (size_t i = 0; i < train_paths.size(); ++i)
    if (remap.count(train_labels[i])) {
      id_paths.push_back(train_paths[i]);
      id_labels.push_back(remap[train_labels[i]]);
    }
  filter_corrupt(id_paths, id_labels, opt.skip_corrupt, split.skipped_files);
  auto id = std::make_shared<FileImageDataset>(id_paths, id_labels);
  auto parts = stratified_split(id_labels, opt.fractions, opt.seed);
  split.train = subset(id, limit_per_class(parts[0], id_labels, opt.train_per_class), id_labels, {});
  split.val = subset(id, limit_per_class(parts[1], id_labels, opt.val_per_class), id_labels, {});
  split.test = subset(id, limit_per_class(parts[2], id_labels, opt.test_per_class), id_labels, {});

  std::vector<std::string> ood_paths;
  std::vector<int64_t> ood_labels;
  for (size_t i = 0; i < test_paths.size(); ++i)
    if (!remap.count(test_labels[i])) {
      ood_paths.push_back(test_paths[i]);
      ood_labels.push_back(test_labels[i]);
    }
  filter_corrupt(ood_paths, ood_labels, opt.skip_corrupt, split.skipped_files);
  split.ood.push_back({"stanford-dogs-unseen", true,
                       limit_dataset(std::make_shared<FileImageDataset>(ood_paths, ood_labels), opt.ood_limit, opt.seed)});
  if (!flowers_root.empty()) {
    auto flowers = std::static_pointer_cast<FileImageDataset>(oxford_flowers(flowers_root));
    auto paths = flowers->paths();
    auto labels = flowers->labels();
    filter_corrupt(paths, labels, opt.skip_corrupt, split.skipped_files);
    split.ood.push_back({"oxford-flowers-102", false,
                         limit_dataset(std::make_shared<FileImageDataset>(paths, labels), opt.ood_limit, opt.seed)});
  }
  return split;
}

}  // namespace nordf
