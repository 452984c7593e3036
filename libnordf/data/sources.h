#pragma once
/// @file
/// Dataset layouts: Fashion-MNIST (IDX), ImageFolder, Stanford Dogs, Oxford Flowers-102, UCI digits.

#include <libnordf/data/dataset.h>

#include <string>

namespace nordf {

/// Where Debian's dataset-fashion-mnist installs the IDX files.
inline constexpr const char* kFashionMnistDefaultRoot = "/usr/share/datasets/fashion-mnist";
/// The UCI optical-recognition handwritten digits (1,797 8×8 images) shipped by Debian's
/// python3-sklearn; libnordf's default far-OOD set for Fashion-MNIST when present.
inline constexpr const char* kUciDigitsDefaultPath = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";

/// Reads an IDX image file (magic 0x00000803, optionally gzip-compressed) → uint8 N×1×H×W.
/// Throws `std::runtime_error` naming the file when it is missing, truncated or of another type.
torch::Tensor read_idx_images(const std::string& path);
/// Reads an IDX label file (magic 0x00000801, optionally gzip-compressed) → labels.
std::vector<int64_t> read_idx_labels(const std::string& path);

/// Reads the UCI digits CSV (64 pixel values 0..16 then the digit, per line; gzip or plain)
/// → dataset of 1×8×8 images scaled to [0, 1]. Throws `std::runtime_error` naming the file.
std::shared_ptr<ImageDataset> read_uci_digits(const std::string& path);

/// Fashion-MNIST open set: ID = classes 0–4 (T-shirt/top, Trouser, Pullover, Dress, Coat),
/// near-OOD = classes 5–9 of the official test set. ID train/val are a stratified 90/10 split of
/// the official training set (seed), ID test = the official test set's classes 0–4.
/// Far-OOD: the UCI digits at `far_ood_path` if given and present (else none, noted).
/// Throws `std::runtime_error` naming the missing file, or when image and label counts disagree.
OpenSetSplit fashion_mnist_split(const std::string& root, const std::string& far_ood_path, const SplitOptions& options);

/// ImageFolder layout: `root/<class>/*.{jpg,jpeg,png,bmp}`; classes sorted by name. ID splits
/// are stratified (options.fractions). `ood_root` (near-OOD) and each `far_ood_root` may be an
/// ImageFolder or a flat folder of images; empty strings are skipped. Throws
/// `std::runtime_error` on a missing root or an empty class folder.
OpenSetSplit image_folder_split(const std::string& root, const std::string& ood_root,
                                const std::vector<std::string>& far_ood_roots, const SplitOptions& options);

/// Stanford Dogs, original layout: `root/Images/...` and `root/{train,test}_list.mat`
/// (fields file_list, labels; labels 1-based). ID = the 5 most frequent classes of
/// train_list.mat (ties: lower class index), fixed once; ID images (train_list) split 80/10/10
/// stratified with options.seed (the prototype's 14). Near-OOD = test_list.mat images of the
/// other classes. `flowers_root`, if not empty, adds Oxford Flowers-102 as far-OOD.
OpenSetSplit stanford_dogs_split(const std::string& root, const std::string& flowers_root, const SplitOptions& options,
                                 int64_t num_id_classes = 5);

/// Oxford Flowers-102, original layout: `root/jpg/image_%05d.jpg`, `root/imagelabels.mat`
/// (labels), `root/setid.mat` (trnid, valid, tstid). Returns all listed images (train, val and
/// test ids), labels 0..101. Throws `std::runtime_error` naming a missing or malformed file.
std::shared_ptr<ImageDataset> oxford_flowers(const std::string& root);

}  // namespace nordf
