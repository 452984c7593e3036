#pragma once
/// @file
/// Dataset layouts: Fashion-MNIST (IDX), ImageFolder, Stanford Dogs, Oxford Flowers-102, UCI digits.

#include <libnordf/core/limits.h>
#include <libnordf/data/dataset.h>

#include <string>

namespace nordf {

/// Where Debian's dataset-fashion-mnist installs the IDX files.
inline constexpr const char* kFashionMnistDefaultRoot = "/usr/share/datasets/fashion-mnist";
/// The UCI optical-recognition handwritten digits (1,797 8×8 images) shipped by Debian's
/// python3-sklearn; libnordf's default far-OOD set for Fashion-MNIST when present.
inline constexpr const char* kUciDigitsDefaultPath = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";

/// Reads an IDX image file (magic 0x00000803, optionally gzip-compressed) → uint8 N×1×H×W.
/// The header's N·H·W is checked against `limits.max_elements` before anything is allocated, and
/// decompression stops at the size the header declares. Throws `std::runtime_error` naming the
/// file when it is missing, truncated, too large or of another type.
torch::Tensor read_idx_images(const std::string& path, const ReadLimits& limits = {});
/// Reads an IDX label file (magic 0x00000801, optionally gzip-compressed) → labels.
std::vector<int64_t> read_idx_labels(const std::string& path, const ReadLimits& limits = {});
/// Same as `read_idx_images`, from the bytes of a file in memory; `source` names it in errors.
torch::Tensor parse_idx_images(const std::string& bytes, const std::string& source, const ReadLimits& limits = {});
/// Same as `read_idx_labels`, from the bytes of a file in memory.
std::vector<int64_t> parse_idx_labels(const std::string& bytes, const std::string& source,
                                      const ReadLimits& limits = {});

/// A Stanford Dogs list file (train_list.mat, test_list.mat): its image paths, relative to
/// Images/, and their 1-based class labels.
struct ImageList {
  std::vector<std::string> files;
  std::vector<int64_t> labels;
};
/// Reads a Stanford Dogs list (a level-5 .mat file with the cell array of strings file_list and
/// the numeric array labels; see MatFile). Throws `std::runtime_error` naming the file when it is
/// missing, not a .mat file or malformed (every size checked against `limits`), lacks either
/// variable, they differ in length, or a label is outside 1..100000.
ImageList read_image_list(const std::string& mat_path, const ReadLimits& limits = {});
/// `read_image_list` on the file's bytes; `source` names it in errors.
ImageList parse_image_list(const std::string& bytes, const std::string& source, const ReadLimits& limits = {});

/// Reads the UCI digits CSV (64 pixel values 0..16 then the digit, per line; gzip or plain)
/// → dataset of 1×8×8 images scaled to [0, 1]. Throws `std::runtime_error` naming the file.
std::shared_ptr<ImageDataset> read_uci_digits(const std::string& path);

/// Fashion-MNIST open set. ID = `options.id_classes` (indices 0–9 or names: T-shirt/top,
/// Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot), by default classes
/// 0–4; near-OOD = the official test images of the other classes, named
/// "fashion-mnist-<classes>" (for example fashion-mnist-5-9). ID train/val are a stratified 90/10
/// split of the official training images of the ID classes (seed), ID test = their official test
/// images. Far-OOD: the UCI digits at `far_ood_path` if given and present (else none, noted).
/// Throws `std::runtime_error` naming a missing file, or when image and label counts disagree,
/// and `std::invalid_argument` naming an unknown class.
OpenSetSplit fashion_mnist_split(const std::string& root, const std::string& far_ood_path, const SplitOptions& options);

/// ImageFolder layout: `root/<class>/*.{jpg,jpeg,png,bmp}`; classes sorted by name. ID splits
/// are stratified (options.fractions). With `options.id_classes` (folder names, or indices into
/// the sorted class list), only those classes are ID and every image of the others forms the
/// near-OOD set "<root name>-unseen". `ood_root` (near-OOD) and each `far_ood_root` may be an
/// ImageFolder or a flat folder of images; empty strings are skipped. Throws
/// `std::runtime_error` on a missing root or an empty class folder, `std::invalid_argument`
/// naming an unknown class.
OpenSetSplit image_folder_split(const std::string& root, const std::string& ood_root,
                                const std::vector<std::string>& far_ood_roots, const SplitOptions& options);

/// Every image of an ImageFolder, `root/<class>/*.{jpg,jpeg,png,bmp}`, labelled by the class
/// folders' sorted order (the names go to `class_names` when given); listed as
/// `image_folder_split` lists it, with the same errors. Images are decoded when read.
std::shared_ptr<ImageDataset> read_image_folder(const std::string& root, std::vector<std::string>* class_names = nullptr);
/// Stanford Dogs, original layout: `root/Images/<synset>-<breed>/*.jpg` and
/// `root/{train,test}_list.mat` (fields file_list, labels; labels 1-based).
///  - ID breeds: `options.id_classes` (class indices 1–120 as in the lists, or names: the folder
///    name "n02085620-Chihuahua", its synset "n02085620" or its breed "Chihuahua"); by default
///    the `num_id_classes` breeds with the most images over both lists, ties broken by the lower
///    class index. train_list.mat holds exactly 100 images of every breed, so only the totals
///    separate them. Label k is the k-th breed chosen; `notes` lists them with their counts.
///  - ID train/val: the breeds' train_list.mat images, split stratified with options.seed in the
///    ratio of options.fractions[0] : options.fractions[1].
///  - ID test: every test_list.mat image of the breeds. Near-OOD ("stanford-dogs-unseen"): every
///    test_list.mat image of the other breeds, none of which is ever trained on.
///  - Far-OOD ("oxford-flowers-102"): with `flowers_root`, Oxford Flowers-102's test split when
///    its setid.mat is present, otherwise all its images.
/// Throws `std::runtime_error` naming a missing list or a listed file that does not exist (unless
/// skip_corrupt, which drops and counts it), `std::invalid_argument` naming an unknown breed.
OpenSetSplit stanford_dogs_split(const std::string& root, const std::string& flowers_root, const SplitOptions& options,
                                 int64_t num_id_classes = 5);

/// Oxford Flowers-102, original layout: `root/jpg/image_%05d.jpg`, `root/imagelabels.mat`
/// (labels), `root/setid.mat` (trnid, valid, tstid). `part` is "all" (every labelled image; also
/// works without setid.mat), "train", "val" or "test". Labels 0..101. Throws
/// `std::runtime_error` naming a missing or malformed file, `std::invalid_argument` on another part.
std::shared_ptr<ImageDataset> oxford_flowers(const std::string& root, const std::string& part = "all");

}  // namespace nordf
