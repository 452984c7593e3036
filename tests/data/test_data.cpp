#include <libnordf/core/io.h>
#include <libnordf/data/dataset.h>
#include <libnordf/data/image.h>
#include <libnordf/data/loader.h>
#include <libnordf/data/sources.h>
#include <libnordf/data/transforms.h>

#include <catch2/catch.hpp>
#include <stb_image_write.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "matio_writer.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

/// Writes a tiny Fashion-MNIST-like IDX pair: n images of 4×4 whose pixels equal 10·label, with
/// labels cycling through 0 .. classes − 1.
void write_idx(const std::string& dir, const std::string& stem, int n, int labels_count = -1, int classes = 10) {
  std::string img = be32(0x803) + be32(n) + be32(4) + be32(4), lab = be32(0x801);
  if (labels_count < 0) labels_count = n;
  lab += be32(labels_count);
  for (int i = 0; i < n; ++i) img += std::string(16, char(10 * (i % classes)));
  for (int i = 0; i < labels_count; ++i) lab += char(i % classes);
  write_gz(dir + "/" + stem + "-images-idx3-ubyte.gz", img);
  write_gz(dir + "/" + stem + "-labels-idx1-ubyte.gz", lab);
}

void write_png(const std::string& path, float value, int size = 8) {
  fs::create_directories(fs::path(path).parent_path());
  nordf::save_png(path, torch::full({3, size, size}, value));
}

}  // namespace

TEST_CASE("images decode to 3×H×W floats and corrupt files are named", "[data]") {
  const auto dir = nordf_test::work_dir("images");
  auto img = torch::rand({3, 5, 7});
  nordf::save_png(dir + "/a.png", img);
  auto back = nordf::load_image(dir + "/a.png");
  CHECK(back.sizes() == torch::IntArrayRef({3, 5, 7}));
  CHECK(nordf_test::max_abs_diff(back, img) <= 0.5 / 255.0 + 1e-6);
  // Every byte value decodes to exactly what LibTorch's byte-to-float conversion gives, with the
  // AVX2 loop and without (35 pixels: four blocks of eight and a tail).
  auto v = torch::arange(256, torch::kInt64);
  auto pattern = torch::stack({v, 255 - v, (v * 7).remainder(256)}).to(torch::kUInt8).view({3, 16, 16});
  auto odd = pattern.flatten(1).narrow(1, 100, 35).reshape({3, 5, 7});
  nordf::save_png(dir + "/bytes.png", pattern.to(torch::kFloat).div(255.0));
  nordf::save_png(dir + "/odd.png", odd.to(torch::kFloat).div(255.0));
  for (bool simd : {true, false}) {
    CAPTURE(simd);
    nordf::set_simd_transforms(simd);
    CHECK(torch::equal(nordf::load_image(dir + "/bytes.png"), pattern.to(torch::kFloat).div(255.0)));
    CHECK(torch::equal(nordf::load_image(dir + "/odd.png"), odd.to(torch::kFloat).div(255.0)));
  }
  nordf::set_simd_transforms(true);
  nordf::save_png(dir + "/gray.png", torch::full({1, 4, 4}, 0.5f));
  auto gray = nordf::load_image(dir + "/gray.png");
  CHECK(gray.size(0) == 3);
  CHECK(torch::allclose(gray[0], gray[2]));

  // JPEG (written with stb_image_write) and BMP decode too.
  std::vector<uint8_t> rgb(16 * 16 * 3, 200);
  REQUIRE(stbi_write_jpg((dir + "/c.jpg").c_str(), 16, 16, 3, rgb.data(), 95) != 0);
  REQUIRE(stbi_write_bmp((dir + "/d.bmp").c_str(), 16, 16, 3, rgb.data()) != 0);
  CHECK(nordf::load_image(dir + "/c.jpg").mean().item<double>() == Approx(200.0 / 255.0).margin(0.02));
  CHECK(nordf::load_image(dir + "/d.bmp").sizes() == torch::IntArrayRef({3, 16, 16}));
  {
    // A top-down BMP (negative height, rows stored top first) is as valid as a bottom-up one.
    std::vector<uint8_t> two_rows(3 * 2 * 3, 10);
    std::fill(two_rows.begin() + 9, two_rows.end(), uint8_t(200));  // the bottom row
    REQUIRE(stbi_write_bmp((dir + "/up.bmp").c_str(), 3, 2, 3, two_rows.data()) != 0);
    auto b = nordf::read_file(dir + "/up.bmp");
    uint32_t offset = 0;
    std::memcpy(&offset, b.data() + 10, 4);
    const size_t row = 12;  // 3 pixels × 3 bytes, padded to 4
    const std::string bottom_up = b.substr(offset, row), top_row = b.substr(offset + row, row);
    b.replace(offset, row, top_row);
    b.replace(offset + row, row, bottom_up);
    const int32_t height = -2;
    std::memcpy(&b[22], &height, 4);
    nordf::write_file_atomic(dir + "/down.bmp", b);
    const auto up = nordf::load_image(dir + "/up.bmp"), down = nordf::load_image(dir + "/down.bmp");
    CHECK(up.sizes() == torch::IntArrayRef({3, 2, 3}));
    CHECK(up[0][0][0].item<float>() == Approx(10.0 / 255.0));
    CHECK(torch::equal(down, up));
  }

  // Truncated PNG.
  std::string bytes = nordf::read_file(dir + "/a.png");
  nordf::write_file_atomic(dir + "/trunc.png", bytes.substr(0, bytes.size() / 2));
  REQUIRE_THROWS_WITH(nordf::load_image(dir + "/trunc.png"), Catch::StartsWith("cannot decode image '" + dir + "/trunc.png'"));
  nordf::write_file_atomic(dir + "/junk.jpg", std::string("not an image at all"));
  REQUIRE_THROWS_WITH(nordf::load_image(dir + "/junk.jpg"), Catch::Contains("junk.jpg"));
  REQUIRE_THROWS_WITH(nordf::load_image(dir + "/missing.png"), Catch::Contains("does not exist"));
}

TEST_CASE("Fashion-MNIST layout: ID classes 0–4, near-OOD 5–9, counts checked", "[data]") {
  const auto dir = nordf_test::work_dir("fmnist");
  write_idx(dir, "train", 200);
  write_idx(dir, "t10k", 100);
  nordf::SplitOptions o;
  auto split = nordf::fashion_mnist_split(dir, "", o);
  CHECK(split.num_classes() == 5);
  CHECK(split.train->size() + split.val->size() == 100);  // the 100 training images of classes 0–4
  CHECK(split.val->size() == 10);                          // 10% stratified: 2 per class
  CHECK(split.test->size() == 50);
  REQUIRE(split.ood.size() == 1);  // no far-OOD file given: none, and a note says so
  CHECK(split.ood[0].near);
  CHECK(split.ood[0].data->size() == 50);
  CHECK(split.notes.size() == 1);
  std::set<int64_t> ood_labels;
  for (int64_t i = 0; i < split.ood[0].data->size(); ++i) ood_labels.insert(split.ood[0].data->label(i));
  CHECK(ood_labels == std::set<int64_t>{5, 6, 7, 8, 9});
  for (int64_t i = 0; i < split.train->size(); ++i) {
    CHECK(split.train->label(i) < 5);
    // Pixel value encodes the label, so labels and images stay aligned.
    CHECK(split.train->image(i)[0][0][0].item<float>() == Approx(10.0 * split.train->label(i) / 255.0));
  }
  o.train_per_class = 3;
  CHECK(nordf::fashion_mnist_split(dir, "", o).train->size() == 15);

  write_idx(dir, "t10k", 100, 99);
  REQUIRE_THROWS_WITH(nordf::fashion_mnist_split(dir, "", o), Catch::Contains("holds 99 labels"));
  // Test files without the OOD classes leave the near-OOD set empty: refused here, not after training.
  write_idx(dir, "t10k", 100, -1, 5);
  REQUIRE_THROWS_WITH(nordf::fashion_mnist_split(dir, "", o),
                      Catch::Contains("the near-OOD set 'fashion-mnist-5-9' holds no image"));
  // A label outside 0..9 is named with its file and position.
  write_idx(dir, "t10k", 100, -1, 13);
  REQUIRE_THROWS_WITH(nordf::fashion_mnist_split(dir, "", o),
                      Catch::Contains("t10k-labels-idx1-ubyte.gz") && Catch::Contains("label 10 at position 10") &&
                          Catch::Contains("0..9"));
  // Images of no pixels (a valid IDX array) are named here, not by a failed resize in training.
  write_gz(dir + "/t10k-images-idx3-ubyte.gz", be32(0x803) + be32(100) + be32(0) + be32(0));
  REQUIRE_THROWS_WITH(nordf::fashion_mnist_split(dir, "", o),
                      Catch::Contains("t10k-images-idx3-ubyte.gz") && Catch::Contains("images of 0×0 pixels"));
  write_idx(dir, "t10k", 100);
  REQUIRE_THROWS_WITH(nordf::fashion_mnist_split(dir + "/nope", "", o), Catch::Contains("does not exist"));
  write_gz(dir + "/train-images-idx3-ubyte.gz", be32(0x803) + be32(5) + be32(4) + be32(4) + "short");
  REQUIRE_THROWS_WITH(nordf::read_idx_images(dir + "/train-images-idx3-ubyte.gz"), Catch::Contains("truncated"));
}

TEST_CASE("UCI digits far-OOD set reads the CSV", "[data]") {
  const auto dir = nordf_test::work_dir("digits");
  std::string line;
  for (int k = 0; k < 64; ++k) line += std::to_string(k % 17) + ",";
  write_gz(dir + "/digits.csv.gz", line + "3\n" + line + "7\n");
  auto d = nordf::read_uci_digits(dir + "/digits.csv.gz");
  REQUIRE(d->size() == 2);
  CHECK(d->label(1) == 7);
  CHECK(d->image(0).sizes() == torch::IntArrayRef({3, 8, 8}));
  CHECK(d->image(0).max().item<float>() == Approx(1.0));
  // A file saved with CRLF line ends, blank lines included, reads the same.
  write_gz(dir + "/crlf.csv.gz", line + "3\r\n\r\n" + line + "7\r\n\r\n");
  auto crlf = nordf::read_uci_digits(dir + "/crlf.csv.gz");
  REQUIRE(crlf->size() == 2);
  CHECK(crlf->label(0) == 3);
  CHECK(crlf->label(1) == 7);
  // A folder where the file should be is named as a folder, for every reader of one file.
  REQUIRE_THROWS_WITH(nordf::read_uci_digits(dir), "'" + dir + "' is a directory, not a file");
  REQUIRE_THROWS_WITH(nordf::read_idx_images(dir), "'" + dir + "' is a directory, not a file");
  REQUIRE_THROWS_WITH(nordf::read_image_list(dir), "'" + dir + "' is a directory, not a file");
  REQUIRE_THROWS_WITH(nordf::read_uci_digits(dir + "/none.csv"), "file '" + dir + "/none.csv' does not exist");
}

TEST_CASE("ImageFolder layout: stratified split, OOD folders, errors", "[data]") {
  const auto dir = nordf_test::work_dir("folder");
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 10; ++i) write_png(dir + "/id/class" + std::to_string(c) + "/" + std::to_string(i) + ".png", c / 3.0f);
  for (int i = 0; i < 4; ++i) write_png(dir + "/near/x" + std::to_string(i) + ".png", 0.9f);
  nordf::SplitOptions o;
  auto split = nordf::image_folder_split(dir + "/id", dir + "/near", {""}, o);
  CHECK(split.class_names == std::vector<std::string>{"class0", "class1", "class2"});
  CHECK(split.train->size() == 24);
  CHECK(split.val->size() == 3);
  CHECK(split.test->size() == 3);
  REQUIRE(split.ood.size() == 1);
  CHECK(split.ood[0].data->size() == 4);
  // Chosen ID classes (by name or index); the other classes' images become a near-OOD set.
  o.id_classes = {"class2", "0"};
  auto chosen = nordf::image_folder_split(dir + "/id/", "", {}, o);
  CHECK(chosen.class_names == std::vector<std::string>{"class2", "class0"});
  CHECK(chosen.train->size() + chosen.val->size() + chosen.test->size() == 20);
  for (int64_t i = 0; i < chosen.train->size(); ++i)
    CHECK(chosen.train->source(i).find(chosen.train->label(i) == 0 ? "class2" : "class0") != std::string::npos);
  REQUIRE(chosen.ood.size() == 1);
  CHECK(chosen.ood[0].name == "id-unseen");
  CHECK(chosen.ood[0].data->size() == 10);
  // Every class, in another order: with an OOD folder there is still a near-OOD set; without one,
  // nothing is left to be OOD.
  o.id_classes = {"class2", "class0", "class1"};
  auto reordered = nordf::image_folder_split(dir + "/id", dir + "/near", {}, o);
  CHECK(reordered.class_names == std::vector<std::string>{"class2", "class0", "class1"});
  REQUIRE(reordered.ood.size() == 1);
  CHECK(reordered.ood[0].name == "near");
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {}, o),
                      Catch::Contains("every class is ID, which leaves no near-OOD class"));
  o.id_classes = {"class9", "0"};
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {}, o), Catch::Contains("unknown class 'class9'"));
  o.id_classes.clear();
  fs::create_directories(dir + "/id/empty_class");
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {}, o), Catch::Contains("empty_class' holds no images"));
  fs::remove(dir + "/id/empty_class");
  // The whole folder as one dataset, labelled in the sorted class order.
  std::vector<std::string> names;
  const auto whole = nordf::read_image_folder(dir + "/id", &names);
  CHECK(names == std::vector<std::string>{"class0", "class1", "class2"});
  REQUIRE(whole->size() == 30);
  for (int64_t i = 0; i < whole->size(); ++i)
    CHECK(whole->source(i).find("/class" + std::to_string(whole->label(i)) + "/") != std::string::npos);
  REQUIRE_THROWS_WITH(nordf::read_image_folder(dir + "/none"), Catch::Contains("/none' does not exist"));
  // A class folder of images in a format it cannot read says what it found.
  nordf::write_file_atomic(dir + "/id/scans/a.tif", std::string("II*"));
  nordf::write_file_atomic(dir + "/id/scans/b.tif", std::string("II*"));
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {}, o),
                      Catch::Contains("scans' holds no images (.jpg, .jpeg, .png or .bmp): 2 other files, such as 'a.tif'"));
  fs::remove_all(dir + "/id/scans");
  write_png(dir + "/id/nested/inner/0.png", 0.4f);
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {}, o),
                      Catch::Contains("nested' holds no images (.jpg, .jpeg, .png or .bmp): 1 subfolder, such as 'inner' "
                                      "(a class's images are not searched for in subfolders)"));
  fs::remove_all(dir + "/id/nested");
  // Hidden entries (names starting with '.': editor and OS metadata such as .ipynb_checkpoints or
  // macOS's ._ files) are neither classes nor images.
  write_png(dir + "/id/.ipynb_checkpoints/0.png", 0.1f);
  nordf::write_file_atomic(dir + "/id/class1/._0.png", std::string("\0\5\26\7 AppleDouble"));
  auto hidden = nordf::image_folder_split(dir + "/id", "", {}, o);
  CHECK(hidden.class_names == std::vector<std::string>{"class0", "class1", "class2"});
  CHECK(hidden.train->size() + hidden.val->size() + hidden.test->size() == 30);
  fs::remove_all(dir + "/id/.ipynb_checkpoints");
  fs::remove(dir + "/id/class1/._0.png");
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/missing", "", {}, o), Catch::Contains("does not exist"));

  // Folders named like numbers are chosen by name; a number that names no folder is an index.
  const auto num = nordf_test::work_dir("folder_numeric");
  for (const char* c : {"1", "2", "10", "11"})
    for (int i = 0; i < 4; ++i) write_png(num + "/" + c + "/" + std::to_string(i) + ".png", 0.5f);
  o.id_classes = {"1", "2"};
  CHECK(nordf::image_folder_split(num, "", {}, o).class_names == std::vector<std::string>{"1", "2"});
  o.id_classes = {"10", "3"};  // folder 10, and index 3 of 1, 10, 11, 2
  CHECK(nordf::image_folder_split(num, "", {}, o).class_names == std::vector<std::string>{"10", "2"});
  o.id_classes.clear();

  // An OOD folder's images at its top level and in its subfolders all count; an empty subfolder
  // is ignored. Its name is the folder's, with or without a trailing slash.
  write_png(dir + "/mixed/top0.png", 0.2f);
  write_png(dir + "/mixed/top1.png", 0.2f);
  write_png(dir + "/mixed/sub/s0.png", 0.3f);
  fs::create_directories(dir + "/mixed/.empty");
  auto mixed = nordf::image_folder_split(dir + "/id", dir + "/mixed/", {}, o);
  REQUIRE(mixed.ood.size() == 1);
  CHECK(mixed.ood[0].name == "mixed");
  CHECK(mixed.ood[0].data->size() == 3);

  // A corrupt file fails when read, naming it; with skip_corrupt it is dropped and counted.
  nordf::write_file_atomic(dir + "/id/class0/bad.png", std::string("garbage"));
  o.skip_corrupt = true;
  auto skipping = nordf::image_folder_split(dir + "/id", "", {}, o);
  CHECK(skipping.skipped_files.size() == 1);
  CHECK(skipping.train->size() + skipping.val->size() + skipping.test->size() == 30);
}

namespace {


/// A miniature Stanford Dogs tree: 8 breeds "n0<c>-breed<c>" (label c + 1), 10 training images
/// each as in the official train_list.mat, and `test_counts[c]` test images; returns the root.
std::string write_dogs(const std::string& dir, const std::vector<int>& test_counts) {
  std::vector<std::string> train_files, test_files;
  std::vector<double> train_labels, test_labels;
  for (int c = 0; c < static_cast<int>(test_counts.size()); ++c) {
    const std::string breed = "n0" + std::to_string(c) + "-breed" + std::to_string(c);
    for (int i = 0; i < 10; ++i) {
      train_files.push_back(breed + "/tr" + std::to_string(i) + ".png");
      train_labels.push_back(c + 1);
    }
    for (int i = 0; i < test_counts[static_cast<size_t>(c)]; ++i) {
      test_files.push_back(breed + "/te" + std::to_string(i) + ".png");
      test_labels.push_back(c + 1);
    }
  }
  for (auto* files : {&train_files, &test_files})
    for (const auto& f : *files) write_png(dir + "/Images/" + f, 0.3f);
  nordf_test::write_list_with_matio(dir + "/train_list.mat", train_files, train_labels);
  nordf_test::write_list_with_matio(dir + "/test_list.mat", test_files, test_labels);
  return dir;
}

/// Writes `vars` (name → row vector of doubles) as one MAT-5 file.
void write_mat_vector(const std::string& path, const std::vector<std::pair<std::string, std::vector<double>>>& vars) {
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  for (auto [name, values] : vars) {
    size_t dims[2] = {1, values.size()};
    matvar_t* v = Mat_VarCreate(name.c_str(), MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, values.data(), 0);
    Mat_VarWrite(mat, v, MAT_COMPRESSION_NONE);
    Mat_VarFree(v);
  }
  Mat_Close(mat);
}

/// Oxford Flowers-102: 6 images, labels 1..3, ids split over trnid/valid/tstid (1,3 / 2,4 / 5,6).
std::string write_flowers(const std::string& flowers, bool with_splits) {
  for (int i = 1; i <= 6; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "image_%05d.jpg", i);
    fs::create_directories(flowers + "/jpg");
    nordf::save_png(flowers + "/jpg/" + name, torch::full({3, 4, 4}, 0.5f));  // PNG bytes: stb sniffs the content
  }
  mat_t* mat = Mat_CreateVer((flowers + "/imagelabels.mat").c_str(), nullptr, MAT_FT_MAT5);
  double labels[6] = {1, 1, 2, 2, 3, 3};
  size_t dims[2] = {1, 6};
  matvar_t* v = Mat_VarCreate("labels", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, labels, 0);
  Mat_VarWrite(mat, v, MAT_COMPRESSION_NONE);
  Mat_VarFree(v);
  Mat_Close(mat);
  if (!with_splits) return flowers;
  mat = Mat_CreateVer((flowers + "/setid.mat").c_str(), nullptr, MAT_FT_MAT5);
  double trn[2] = {1, 3}, val[2] = {2, 4}, tst[2] = {5, 6};
  size_t d2[2] = {1, 2};
  for (auto kv : std::vector<std::pair<const char*, double*>>{{"trnid", trn}, {"valid", val}, {"tstid", tst}}) {
    matvar_t* s = Mat_VarCreate(kv.first, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, d2, kv.second, 0);
    Mat_VarWrite(mat, s, MAT_COMPRESSION_NONE);
    Mat_VarFree(s);
  }
  Mat_Close(mat);
  return flowers;
}

std::set<std::string> sources(const nordf::ImageDataset& d) {
  std::set<std::string> out;
  for (int64_t i = 0; i < d.size(); ++i) out.insert(d.source(i));
  return out;
}

}  // namespace

TEST_CASE("Stanford Dogs: the 5 breeds with most images over both lists, official test images", "[data][dogs]") {
  // Every breed has 10 training images, as the official list has 100: only the test lists make the
  // totals differ. Totals by label 1..8: 13 19 15 18 15 17 16 12, so the top 5 are labels 2, 4, 6,
  // 7 and 3, which ties with 5 at 15 and wins by its lower index.
  const auto dir = write_dogs(nordf_test::work_dir("dogs"), {3, 9, 5, 8, 5, 7, 6, 2});
  const auto flowers = write_flowers(dir + "/flowers", true);
  nordf::SplitOptions o;
  auto split = nordf::stanford_dogs_split(dir, flowers, o);
  CHECK(split.class_names == std::vector<std::string>{"n01-breed1", "n03-breed3", "n05-breed5", "n06-breed6", "n02-breed2"});
  REQUIRE(!split.notes.empty());
  CHECK_THAT(split.notes[0], Catch::Contains("n01-breed1 (class 2, 19 images)") &&
                                 Catch::Contains("n02-breed2 (class 3, 15 images)"));
  // Train and val: the breeds' 10 training images each, 8 : 1 (fractions 0.8 / 0.1) → 9 / 1.
  CHECK(split.train->size() == 45);
  CHECK(split.val->size() == 5);
  std::map<int64_t, int64_t> per_class;
  for (int64_t i = 0; i < split.train->size(); ++i) per_class[split.train->label(i)]++;
  for (int64_t c = 0; c < 5; ++c) CHECK(per_class[c] == 9);
  // ID test: every test-list image of the breeds; none of them is in train or val.
  CHECK(split.test->size() == 9 + 8 + 7 + 6 + 5);
  auto train_val = sources(*split.train);
  for (const auto& v : sources(*split.val)) train_val.insert(v);
  for (const auto& t : sources(*split.test)) {
    CHECK(train_val.count(t) == 0);
    CHECK(t.find("/te") != std::string::npos);
  }
  for (const auto& t : train_val) CHECK(t.find("/tr") != std::string::npos);
  // Near-OOD: the other breeds' test-list images only.
  REQUIRE(split.ood.size() == 2);
  CHECK(split.ood[0].name == "stanford-dogs-unseen");
  CHECK(split.ood[0].near);
  CHECK(split.ood[0].data->size() == 3 + 5 + 2);
  for (int64_t i = 0; i < split.ood[0].data->size(); ++i) {
    const auto l = split.ood[0].data->label(i);
    CHECK((l == 0 || l == 4 || l == 7));
    CHECK(split.ood[0].data->source(i).find("/te") != std::string::npos);
  }
  // Far-OOD: Flowers-102's test split (ids 5, 6), or every image without setid.mat.
  CHECK_FALSE(split.ood[1].near);
  CHECK(split.ood[1].data->size() == 2);
  CHECK(split.ood[1].data->label(0) == 2);
  fs::remove(flowers + "/setid.mat");
  auto all_flowers = nordf::stanford_dogs_split(dir, flowers, o);
  CHECK(all_flowers.ood[1].data->size() == 6);
  CHECK_THAT(all_flowers.notes.back(), Catch::Contains("setid.mat' is absent"));
  // The same seed gives the same split.
  auto again = nordf::stanford_dogs_split(dir, "", o);
  CHECK(again.train->source(0) == split.train->source(0));
  CHECK(nordf::oxford_flowers(write_flowers(dir + "/flowers2", true), "val")->size() == 2);
  REQUIRE_THROWS_WITH(nordf::oxford_flowers(dir + "/flowers2", "extra"), Catch::Contains("unknown part 'extra'"));
  REQUIRE_THROWS_WITH(nordf::oxford_flowers(dir + "/nowhere"), Catch::Contains("does not exist"));
  // A listed image that is missing is named before training (Dogs lists are checked the same way).
  write_flowers(flowers, true);
  fs::remove(flowers + "/jpg/image_00006.jpg");
  REQUIRE_THROWS_WITH(nordf::stanford_dogs_split(dir, flowers, o),
                      Catch::Contains("image_00006.jpg' is listed in setid.mat but does not exist"));
  auto skipping = o;
  skipping.skip_corrupt = true;
  CHECK(nordf::stanford_dogs_split(dir, flowers, skipping).ood[1].data->size() == 1);
  // An id listed twice, and a label 0 in 1-based imagelabels.mat, are refused by name.
  write_flowers(flowers, true);
  write_mat_vector(flowers + "/setid.mat", {{"trnid", {1, 3}}, {"valid", {2, 4}}, {"tstid", {5, 5}}});
  REQUIRE_THROWS_WITH(nordf::oxford_flowers(flowers, "test"),
                      Catch::Contains("setid.mat': image id 5 is listed twice"));
  write_flowers(flowers, true);
  write_mat_vector(flowers + "/imagelabels.mat", {{"labels", {1, 1, 2, 2, 0, 3}}});
  REQUIRE_THROWS_WITH(nordf::oxford_flowers(flowers, "test"),
                      Catch::Contains("imagelabels.mat': image id 5 has label 0"));
}

TEST_CASE("Stanford Dogs: explicit ID breeds by index or name, and clear errors", "[data][dogs]") {
  const auto dir = write_dogs(nordf_test::work_dir("dogs_ids"), {3, 9, 5, 8, 5, 7, 6, 2});
  nordf::SplitOptions o;
  o.id_classes = {"4", "2"};  // 1-based class indices, as in the lists
  auto by_index = nordf::stanford_dogs_split(dir, "", o);
  CHECK(by_index.class_names == std::vector<std::string>{"n03-breed3", "n01-breed1"});
  CHECK(by_index.test->size() == 8 + 9);
  CHECK(by_index.ood[0].data->size() == 3 + 5 + 5 + 7 + 6 + 2);
  o.id_classes = {"breed7", "n00", "n05-breed5"};  // breed, synset, folder name
  auto by_name = nordf::stanford_dogs_split(dir, "", o);
  CHECK(by_name.class_names == std::vector<std::string>{"n07-breed7", "n00-breed0", "n05-breed5"});
  CHECK(by_name.train->size() + by_name.val->size() == 30);
  o.id_classes = {"poodle", "2"};
  REQUIRE_THROWS_WITH(nordf::stanford_dogs_split(dir, "", o),
                      Catch::Contains("stanford-dogs: unknown class 'poodle'; use an index 1..8"));
  o.id_classes = {"2", "9"};
  REQUIRE_THROWS_WITH(nordf::stanford_dogs_split(dir, "", o), Catch::Contains("unknown class '9'"));
  o.id_classes.clear();
  // A missing list, and a list naming a file that does not exist.
  const auto broken = write_dogs(nordf_test::work_dir("dogs_broken"), {2, 2, 2, 2, 2, 2, 2});
  fs::remove(broken + "/test_list.mat");
  REQUIRE_THROWS_WITH(nordf::stanford_dogs_split(broken, "", o), Catch::Contains("test_list.mat' does not exist"));
  nordf_test::write_list_with_matio(broken + "/test_list.mat",
                                    {"n00-breed0/te0.png", "n00-breed0/gone.png", "n06-breed6/te0.png"}, {1, 1, 7});
  REQUIRE_THROWS_WITH(nordf::stanford_dogs_split(broken, "", o),
                      Catch::Contains("lists 'n00-breed0/gone.png', which does not exist"));
  o.skip_corrupt = true;  // dropped and counted instead
  o.id_classes = {"1", "2"};
  auto skipped = nordf::stanford_dogs_split(broken, "", o);
  CHECK(skipped.skipped_files.size() == 1);
  CHECK(skipped.ood[0].data->size() == 1);
  // A test list without any image of the unseen breeds leaves near-OOD empty: refused up front.
  nordf_test::write_list_with_matio(broken + "/test_list.mat", {"n00-breed0/te0.png"}, {1});
  REQUIRE_THROWS_WITH(nordf::stanford_dogs_split(broken, "", o),
                      "Stanford Dogs: the near-OOD set 'stanford-dogs-unseen' holds no image");
}

TEST_CASE("image folders: links that lead nowhere are named, or dropped with skip_corrupt", "[data][hostile]") {
  const auto dir = nordf_test::work_dir("folder_links");
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < 6; ++i) write_png(dir + "/id/c" + std::to_string(c) + "/" + std::to_string(i) + ".png", 0.5f);
  nordf::SplitOptions o;
  const auto before = nordf::image_folder_split(dir + "/id", "", {""}, o).train->size();
  // Two image links pointing at each other, and one pointing at a file that is gone.
  fs::create_symlink("y.png", dir + "/id/c0/x.png");
  fs::create_symlink("x.png", dir + "/id/c0/y.png");
  fs::create_symlink(dir + "/gone.png", dir + "/id/c1/z.png");
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {""}, o),
                      Catch::Contains("id/c0/x.png' cannot be read: Too many levels of symbolic links (and 2 more)"));
  auto skipping = o;
  skipping.skip_corrupt = true;
  const auto split = nordf::image_folder_split(dir + "/id", "", {""}, skipping);
  CHECK(split.train->size() == before);
  CHECK(split.skipped_files.size() == 3);
  // A class folder that links to itself, and a root that is a file.
  fs::create_symlink("loop", dir + "/id/loop");
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id", "", {""}, skipping),
                      Catch::Contains("id/loop' is a symbolic link that cannot be followed: Too many levels"));
  REQUIRE_THROWS_WITH(nordf::image_folder_split(dir + "/id/c0/0.png", "", {""}, o),
                      Catch::Contains("image folder '" + dir + "/id/c0/0.png' is not a directory"));
  REQUIRE_THROWS_WITH(nordf::load_image(dir + "/id/c0/x.png"),
                      "cannot read image '" + dir + "/id/c0/x.png': Too many levels of symbolic links");
}

TEST_CASE("pair sampler: rate, fresh partners each epoch, reproducible", "[data]") {
  std::vector<int64_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 5);
  nordf::PairSampler sampler(labels, 0.5, 42);
  auto e0 = sampler.epoch_pairs(0), e1 = sampler.epoch_pairs(1);
  REQUIRE(e0.size() == 1000);
  double same = 0;
  std::set<int64_t> anchors;
  for (const auto& p : e0) {
    same += p.different == 0;
    anchors.insert(p.first);
    CHECK(p.different == (labels[p.first] != labels[p.second] ? 1 : 0));
    if (p.different == 0) CHECK(p.first != p.second);
  }
  CHECK(anchors.size() == 1000);  // every image is an anchor once per epoch
  CHECK(same / 1000 == Approx(0.5).margin(0.05));
  std::map<int64_t, int64_t> partner0, partner1;
  for (const auto& p : e0) partner0[p.first] = p.second;
  for (const auto& p : e1) partner1[p.first] = p.second;
  int changed = 0;
  for (auto& kv : partner0) changed += partner1[kv.first] != kv.second;
  CHECK(changed > 900);
  auto again = nordf::PairSampler(labels, 0.5, 42).epoch_pairs(1);
  for (size_t i = 0; i < again.size(); ++i) CHECK((again[i].first == e1[i].first && again[i].second == e1[i].second));
  nordf::PairSampler mostly_same(labels, 0.9, 1);
  double s9 = 0;
  for (const auto& p : mostly_same.epoch_pairs(0)) s9 += p.different == 0;
  CHECK(s9 / 1000 == Approx(0.9).margin(0.04));
  REQUIRE_THROWS_AS(nordf::PairSampler(labels, 1.5, 0), std::invalid_argument);
}

TEST_CASE("pair loader: deterministic batches, un-normalised targets, errors", "[data]") {
  std::vector<int64_t> labels;
  for (int i = 0; i < 40; ++i) labels.push_back(i % 4);
  auto images = torch::randint(0, 256, {40, 1, 28, 28}).to(torch::kUInt8);
  auto data = std::make_shared<nordf::TensorImageDataset>("toy", images, labels);
  nordf::LoaderOptions o;
  o.batch_size = 8;
  o.workers = 3;
  o.seed = 5;
  o.augment = true;
  o.drop_last = true;
  o.transform.image_size = 32;
  o.transform.recon_size = 16;
  o.transform.hflip_prob = 0.5;
  o.transform.rotation_degrees = 10;
  o.transform.crop_scale_min = 0.5;
  nordf::PairLoader a(data, 0.5, o), b(data, 0.5, o);
  CHECK(a.num_batches() == 5);
  auto ea = a.epoch(3), eb = b.epoch(3);
  int n = 0;
  while (auto ba = ea.next()) {
    auto bb = eb.next();
    REQUIRE(bb);
    CHECK(torch::equal(ba->x1, bb->x1));
    CHECK(torch::equal(ba->target2, bb->target2));
    CHECK(torch::equal(ba->labels1, bb->labels1));
    CHECK(ba->x1.sizes() == torch::IntArrayRef({8, 3, 32, 32}));
    CHECK(ba->target1.sizes() == torch::IntArrayRef({8, 3, 16, 16}));
    CHECK(ba->target1.min().item<float>() >= 0.0f);
    CHECK(ba->target1.max().item<float>() <= 1.0f);
    CHECK(ba->x1.min().item<float>() < -1.0f);  // normalised input: black maps to −mean/std
    CHECK(torch::equal(ba->different, (ba->labels1 != ba->labels2).to(torch::kFloat)));
    ++n;
  }
  CHECK(n == 5);
  // Resuming mid-epoch yields the same later batches.
  auto full = a.epoch(2);
  full.next();
  full.next();
  auto third = full.next();
  auto resumed = a.epoch(2, 2).next();
  CHECK(torch::equal(third->x2, resumed->x2));

  o.batch_size = 41;
  REQUIRE_THROWS_WITH(nordf::PairLoader(data, 0.5, o), Catch::Contains("batch size 41 is larger than the dataset (40 images)"));

  // A decoding error in a worker reaches the consumer with the file name.
  auto files = std::make_shared<nordf::FileImageDataset>(std::vector<std::string>{"/nonexistent/a.png", "/nonexistent/b.png"},
                                                         std::vector<int64_t>{0, 1});
  nordf::LoaderOptions fo;
  fo.batch_size = 2;
  nordf::ImageLoader bad(files, fo);
  auto pass = bad.pass();
  REQUIRE_THROWS_WITH(pass.next(), Catch::Contains("/nonexistent/a.png"));
}

TEST_CASE("passes and epochs outlive their loaders", "[data]") {
  auto data = nordf_test::toy_dataset(10, 5, 1, 28, 3);
  nordf::LoaderOptions o;
  o.batch_size = 4;
  o.workers = 2;
  o.transform.image_size = 32;
  std::vector<int64_t> labels;
  auto pass = nordf::ImageLoader(data, o).pass();  // the loader is a temporary
  {
    nordf::LoaderOptions other = o;  // reuse the stack space the temporary had
    other.batch_size = 1;
    nordf::ImageLoader unrelated(data, other);
    while (auto b = pass.next()) {
      CHECK(b->images.sizes() == torch::IntArrayRef({b->labels.size(0), 3, 32, 32}));
      for (int64_t i = 0; i < b->labels.size(0); ++i) labels.push_back(b->labels[i].item<int64_t>());
    }
  }
  CHECK(labels == std::vector<int64_t>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4});
  int64_t pairs = 0;
  auto epoch = std::make_unique<nordf::PairLoader>(data, 0.5, o)->epoch(0);
  while (auto b = epoch.next()) pairs += b->x1.size(0);
  CHECK(pairs == 10);
}

TEST_CASE("resize and rotate and area_resize match LibTorch's interpolate and grid_sample", "[data]") {
  namespace F = torch::nn::functional;
  torch::manual_seed(5);
  auto close = [](const torch::Tensor& a, const torch::Tensor& b, double tol = 2e-6) {
    REQUIRE(a.sizes() == b.sizes());
    return nordf_test::max_abs_diff(a, b) <= tol;
  };
  // Shrinking either side antialiases both (torchvision's Resize on tensors); enlarging does not.
  struct Case {
    int64_t h, w, size;
  };
  for (auto c : {Case{37, 53, 16}, Case{5, 7, 16}, Case{20, 9, 12}, Case{64, 64, 31}, Case{3, 40, 40}, Case{1, 1, 4}}) {
    CAPTURE(c.h, c.w, c.size);
    auto img = torch::rand({3, c.h + 4, c.w + 6}).narrow(1, 3, c.h).narrow(2, 2, c.w);  // a crop: a strided view
    const bool shrink = c.h > c.size || c.w > c.size;
    auto expected = F::interpolate(img.unsqueeze(0), F::InterpolateFuncOptions()
                                                         .size(std::vector<int64_t>{c.size, c.size})
                                                         .mode(torch::kBilinear)
                                                         .align_corners(false)
                                                         .antialias(shrink))
                        .squeeze(0)
                        .clamp(0, 1);
    CHECK(close(nordf::resize(img, c.size), expected));
  }
  for (auto [h, w] : {std::pair<int64_t, int64_t>{13, 17}, {8, 8}, {1, 5}}) {
    auto img = torch::rand({3, h, w});
    for (double deg : {-10.0, 7.5, 90.0, 180.0, 33.0}) {
      CAPTURE(h, w, deg);
      const double r = deg * M_PI / 180.0;
      auto theta = torch::tensor({{std::cos(r), -std::sin(r), 0.0}, {std::sin(r), std::cos(r), 0.0}}).unsqueeze(0);
      auto grid = F::affine_grid(theta, {1, 3, h, w}, /*align_corners=*/false);
      auto expected = F::grid_sample(img.unsqueeze(0), grid, F::GridSampleFuncOptions()
                                                                 .mode(torch::kBilinear)
                                                                 .padding_mode(torch::kZeros)
                                                                 .align_corners(false))
                          .squeeze(0);
      CHECK(close(nordf::rotate(img, deg), expected, 1e-5));  // sample points differ by float rounding
    }
  }
  for (auto [side, size] : {std::pair<int64_t, int64_t>{224, 112}, {30, 7}, {9, 9}, {5, 8}}) {
    CAPTURE(side, size);
    auto img = torch::rand({3, side, side + 2}).narrow(2, 1, side);
    auto expected = F::interpolate(img.unsqueeze(0), F::InterpolateFuncOptions()
                                                         .size(std::vector<int64_t>{size, size})
                                                         .mode(torch::kArea))
                        .squeeze(0);
    CHECK(close(nordf::area_resize(img, size), expected));
  }
  CHECK_THROWS_WITH(nordf::resize(torch::rand({3, 4}), 2), Catch::Contains("resize: expected a C×H×W image"));
  CHECK_THROWS_WITH(nordf::rotate(torch::rand({4}), 2.0), Catch::Contains("rotate: expected a C×H×W image"));
  CHECK_THROWS_WITH(nordf::resize(torch::rand({3, 0, 5}), 4), Catch::Contains("resize: the image is empty"));
  CHECK_THROWS_WITH(nordf::area_resize(torch::rand({3, 6, 0}), 2), Catch::Contains("area_resize: the image is empty"));
  CHECK_THROWS_WITH(nordf::rotate(torch::rand({3, 4, 4}, torch::kDouble), 5.0), Catch::Contains("rotate: expected a float image"));
  std::mt19937_64 rng(1);
  CHECK_THROWS_WITH(nordf::random_resized_crop(torch::rand({5}), 4, 0.5, rng), Catch::Contains("random_resized_crop: expected a C×H×W image"));
}

TEST_CASE("the AVX2 and portable transform loops give the same bits", "[data]") {
  if (!nordf::simd_transforms()) {
    WARN("this CPU has no AVX2 (or the loops are off): only the portable loops run here");
    return;
  }
  torch::manual_seed(11);
  auto bits = [](const torch::Tensor& t) { return t.contiguous().view(torch::kInt32); };
  auto both = [&](const std::function<torch::Tensor()>& f) {
    auto fast = f();
    nordf::set_simd_transforms(false);
    auto portable = f();
    nordf::set_simd_transforms(true);
    REQUIRE(nordf::simd_transforms());
    REQUIRE(fast.sizes() == portable.sizes());
    return torch::equal(bits(fast), bits(portable));
  };
  struct Case {
    int64_t h, w, size;
  };
  // Sizes around the eight-lane blocks, shrinking (antialiased) and enlarging, strided crops, and
  // a NaN pixel that must travel the same way through both.
  for (auto c : {Case{427, 640, 224}, Case{37, 53, 16}, Case{9, 7, 16}, Case{20, 9, 12}, Case{64, 64, 31},
                 Case{3, 40, 40}, Case{1, 1, 4}, Case{19, 300, 17}}) {
    CAPTURE(c.h, c.w, c.size);
    auto img = torch::rand({3, c.h + 4, c.w + 6}).narrow(1, 3, c.h).narrow(2, 2, c.w);
    img[1][c.h / 2][c.w / 2] = std::numeric_limits<float>::quiet_NaN();
    CHECK(both([&] { return nordf::resize(img, c.size); }));
    CHECK(both([&] { return nordf::area_resize(img, std::max<int64_t>(1, c.size / 2)); }));
    CHECK(both([&] { return nordf::resize(img.transpose(1, 2), c.size); }));  // columns strided
  }
  for (auto [h, w] : {std::pair<int64_t, int64_t>{224, 224}, {13, 17}, {8, 8}, {1, 5}, {31, 64}, {50, 9}}) {
    auto img = torch::rand({3, h, w});
    img[2][h / 2][w / 3] = std::numeric_limits<float>::quiet_NaN();
    for (double deg : {-10.0, 7.5, 90.0, 180.0, 33.0, -147.0}) {
      CAPTURE(h, w, deg);
      CHECK(both([&] { return nordf::rotate(img, deg); }));
    }
  }
  // Normalisation, through the pipeline (its own loop), on a size with a tail.
  nordf::TransformOptions plain;
  plain.image_size = 13;
  plain.recon_size = 0;
  std::mt19937_64 rng(1);
  auto small = torch::rand({3, 13, 13});
  CHECK(both([&] { return nordf::apply_transforms(small, plain, false, rng).input; }));
  CHECK(torch::equal(nordf::apply_transforms(small, plain, false, rng).input, nordf::imagenet_normalize(small)));
  auto gray = torch::rand({1, 40, 33});
  CHECK(both([&] { return nordf::rotate(gray, 12.0); }));
  CHECK(both([&] { return nordf::resize(gray, 16); }));
}

TEST_CASE("transforms", "[data]") {
  auto img = torch::zeros({3, 8, 8});
  img.narrow(2, 0, 4).fill_(1.0);  // left half white
  auto flipped = nordf::hflip(img);
  CHECK(flipped[0][0][7].item<float>() == 1.0f);
  CHECK(flipped[0][0][0].item<float>() == 0.0f);
  CHECK(torch::allclose(nordf::imagenet_denormalize(nordf::imagenet_normalize(img)), img, 1e-5, 1e-6));
  CHECK(nordf::resize(img, 16).sizes() == torch::IntArrayRef({3, 16, 16}));
  auto rot = nordf::rotate(img, 180.0);
  CHECK(rot[0][4][6].item<float>() == Approx(1.0).margin(1e-4));  // the white half moves right
  std::mt19937_64 rng(0);
  auto crop = nordf::random_resized_crop(img, 5, 0.3, rng);
  CHECK(crop.sizes() == torch::IntArrayRef({3, 5, 5}));

  // hflip on strided and batched images is LibTorch's flip.
  auto photo = torch::rand({3, 40, 52}).narrow(2, 1, 50);
  CHECK(torch::equal(nordf::hflip(photo), photo.flip({-1})));
  auto batch = torch::rand({2, 3, 4, 5});
  CHECK(torch::equal(nordf::hflip(batch), batch.flip({-1})));
  // The pipeline is exactly the composition of the public transforms, in the documented order
  // and with the documented draws: crop, flip coin, rotation angle.
  nordf::TransformOptions o;
  o.image_size = 24;
  o.recon_size = 12;
  o.crop_scale_min = 0.5;
  o.hflip_prob = 1.0;
  o.rotation_degrees = 10.0;
  for (bool simd : {true, false}) {  // the flip is folded into the rotation on both paths
    CAPTURE(simd);
    nordf::set_simd_transforms(simd);
    for (uint64_t seed : {3, 4, 5}) {
      std::mt19937_64 r1(seed), r2(seed);
      auto t = nordf::apply_transforms(photo, o, /*augment=*/true, r1);
      auto x = nordf::random_resized_crop(photo, 24, 0.5, r2);
      REQUIRE(std::uniform_real_distribution<double>(0, 1)(r2) < 1.0);
      x = nordf::rotate(nordf::hflip(x), std::uniform_real_distribution<double>(-10.0, 10.0)(r2));
      CHECK(torch::equal(t.input, nordf::imagenet_normalize(x)));
      CHECK(torch::equal(t.target, nordf::area_resize(x, 12)));
    }
  }
  nordf::set_simd_transforms(true);
  std::mt19937_64 r1(3);
  auto plain = nordf::apply_transforms(photo, o, /*augment=*/false, r1);
  CHECK(torch::equal(plain.input, nordf::imagenet_normalize(nordf::resize(photo, 24))));
  // Written into a batch's slot, the same values; a slot of the wrong shape is named.
  auto slots = torch::full({2, 3, 24, 24}, 7.0f);
  auto into = nordf::apply_transforms(photo, o, /*augment=*/false, r1, slots[1]);
  CHECK(torch::equal(slots[1], plain.input));
  CHECK(into.input.data_ptr() == slots[1].data_ptr());
  CHECK(torch::equal(slots[0], torch::full({3, 24, 24}, 7.0f)));
  CHECK_THROWS_WITH(nordf::apply_transforms(photo, o, false, r1, torch::empty({3, 20, 24})),
                    Catch::Contains("apply_transforms: the input tensor given must be a contiguous CPU float tensor of [3, 24, 24], got Float [3, 20, 24] on cpu"));
  CHECK_THROWS_WITH(nordf::apply_transforms(photo, o, false, r1, torch::empty({3, 24, 48}).narrow(2, 0, 24)),
                    Catch::Contains("got Float [3, 24, 24] (not contiguous) on cpu"));
}
