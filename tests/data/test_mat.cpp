// The level-5 .mat reader: files written by matio (an independent writer) and by scipy.io.savemat
// (the fuzz seed corpus) read back exactly; crafted files get one clean error naming the problem.
#include <libnordf/core/io.h>
#include <libnordf/data/mat.h>
#include <libnordf/data/sources.h>

#include <catch2/catch.hpp>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "matio_writer.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

/// Hand-made level-5 elements, in either byte order, for files no writer would produce.
struct Mat5 {
  bool big = false;
  std::string u32(uint32_t v) const {
    if (big) v = __builtin_bswap32(v);
    return std::string(reinterpret_cast<const char*>(&v), 4);
  }
  std::string header() const {
    std::string h = "MATLAB 5.0 MAT-file, test";
    h.resize(124, ' ');
    h += big ? std::string("\x01\x00", 2) : std::string("\x00\x01", 2);
    h += big ? "MI" : "IM";
    return h;
  }
  /// An element: tag and contents padded to 8 bytes.
  std::string element(uint32_t type, const std::string& data) const {
    std::string e = u32(type) + u32(static_cast<uint32_t>(data.size())) + data;
    e.resize((e.size() + 7) & ~size_t(7), '\0');
    return e;
  }
  std::string matrix(uint32_t cls, std::vector<int32_t> dims, const std::string& name, const std::string& contents) const {
    std::string d;
    for (auto x : dims) d += u32(static_cast<uint32_t>(x));
    return element(14, element(6, u32(cls) + u32(0)) + element(5, d) + element(1, name) + contents);
  }
  /// A 1×n double array.
  std::string doubles(const std::string& name, const std::vector<double>& v) const {
    std::string data;
    for (double x : v) {
      uint64_t bits;
      std::memcpy(&bits, &x, 8);
      if (big) bits = __builtin_bswap64(bits);
      data.append(reinterpret_cast<const char*>(&bits), 8);
    }
    return matrix(6, {1, static_cast<int32_t>(v.size())}, name, element(9, data));
  }
  /// A 1×n char row stored as UTF-16 code units.
  std::string chars(const std::vector<uint16_t>& units) const {
    std::string data;
    for (uint16_t u : units) {
      const uint16_t v = big ? uint16_t((u >> 8) | (u << 8)) : u;
      data.append(reinterpret_cast<const char*>(&v), 2);
    }
    return matrix(4, {1, static_cast<int32_t>(units.size())}, "", element(4, data));
  }
};

std::string zlib(const std::string& data) {
  uLongf n = compressBound(data.size());
  std::string out(n, '\0');
  compress(reinterpret_cast<Bytef*>(&out[0]), &n, reinterpret_cast<const Bytef*>(data.data()), data.size());
  out.resize(n);
  return out;
}


}  // namespace

TEST_CASE("MatFile reads matio's files, compressed or not, and scipy's", "[data][mat]") {
  const std::string dir = nordf_test::work_dir("mat");
  const std::vector<std::string> files = {"n02085620-Chihuahua/n02085620_1.jpg", "", "n02/with space.jpg"};
  const std::vector<double> labels = {1, 120, 7};
  for (auto compression : {MAT_COMPRESSION_NONE, MAT_COMPRESSION_ZLIB}) {
    const std::string path = dir + "/list" + std::to_string(int(compression)) + ".mat";
    nordf_test::write_list_with_matio(path, files, labels, compression);
    const auto m = nordf::MatFile::open(path);
    CHECK(m.names() == std::vector<std::string>{"file_list", "labels"});
    CHECK(m.strings("file_list") == files);
    CHECK(m.integers("labels") == std::vector<int64_t>{1, 120, 7});
    const auto list = nordf::read_image_list(path);
    CHECK(list.files == files);
  }
  // scipy.io.savemat (tests/fuzz/make_corpus.py): char rows as UTF-16, labels stored as uint8.
  for (const char* name : {"list.mat", "list_compressed.mat"}) {
    const auto list = nordf::read_image_list(std::string(NORDF_TEST_SOURCE_DIR) + "/fuzz/corpus/mat/" + name);
    CHECK(list.files == std::vector<std::string>{"n02085620-Chihuahua/n02085620_1.jpg",
                                                 "n02085620-Chihuahua/n02085620_2.jpg",
                                                 "n02085782-Japanese_spaniel/n02085782_3.jpg"});
    CHECK(list.labels == std::vector<int64_t>{1, 1, 2});
  }
}

TEST_CASE("MatFile reads both byte orders, UTF-16 and UTF-8 text and nested one-element cells", "[data][mat]") {
  for (bool big : {false, true}) {
    Mat5 w{big};
    // {'dog'; {'é€'}; 'ü/x'} (UTF-16, UTF-16, then a miUTF8 row: 3 characters in 4 bytes), then labels.
    const std::string inner = w.matrix(1, {1, 1}, "", w.chars({0xE9, 0x20AC}));
    const std::string utf8 = w.matrix(4, {1, 3}, "", w.element(16, "\xC3\xBC/x"));
    const std::string cells = w.matrix(1, {3, 1}, "file_list", w.chars({'d', 'o', 'g'}) + inner + utf8);
    const std::string file = w.header() + cells + w.doubles("labels", {3, 4});
    const nordf::MatFile m(file, big ? "big.mat" : "little.mat");
    CHECK(m.strings("file_list") == std::vector<std::string>{"dog", "\xC3\xA9\xE2\x82\xAC", "\xC3\xBC/x"});
    CHECK(m.integers("labels") == std::vector<int64_t>{3, 4});
  }
}

TEST_CASE("MatFile refuses crafted files with one error naming the file and the problem", "[data][mat][hostile]") {
  Mat5 w;
  const auto err = [](const std::string& bytes) {
    try {
      nordf::MatFile m(bytes, "x.mat");
      m.strings("file_list");
      m.integers("labels");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(err("not a mat file"), Catch::Contains("'x.mat' is not a MATLAB level-5 .mat file"));
  std::string v73 = w.header();
  v73[124] = 0, v73[125] = 2;
  CHECK_THAT(err(v73), Catch::Contains("version 512; v7.3 files are HDF5"));
  // A variable claiming 2^32 − 1 bytes in a file of a few hundred.
  CHECK_THAT(err(w.header() + w.u32(14) + w.u32(0xFFFFFFFF) + std::string(64, '\0')),
             Catch::Contains("'x.mat': variable 0 claims 4294967295 bytes, but the file holds 64 after its tag"));
  // A sub-element longer than its array.
  const std::string lying = w.element(14, w.element(6, w.u32(6) + w.u32(0)) + w.u32(5) + w.u32(4000) + std::string(8, '\0'));
  CHECK_THAT(err(w.header() + lying), Catch::Contains("its dimensions element claims 4000 bytes, but the array holds"));
  // 2^31 − 1 cells declared in a few bytes: refused before anything is allocated for them.
  CHECK_THAT(err(w.header() + w.matrix(1, {0x7FFFFFFF, 1}, "file_list", "")),
             Catch::Contains("a cell array of 2147483647 elements in 0 bytes"));
  // Dimensions whose product passes the element cap.
  CHECK_THAT(err(w.header() + w.matrix(6, {0x7FFFFFFF, 0x7FFFFFFF}, "labels", "")),
             Catch::Contains("more than ReadLimits::max_elements"));
  CHECK_THAT(err(w.header() + w.matrix(6, {-1, 1}, "labels", "")), Catch::Contains("negative dimension -1"));
  // Cells nested past the depth limit.
  std::string nested = w.chars({'a'});
  for (int i = 0; i < 40; ++i) nested = w.matrix(1, {1, 1}, "", nested);
  nordf::ReadLimits shallow;
  shallow.max_depth = 16;
  REQUIRE_THROWS_WITH(nordf::MatFile(w.header() + w.matrix(1, {1, 1}, "file_list", nested), "deep.mat", shallow),
                      Catch::Contains("'deep.mat'") && Catch::Contains("cells nested deeper than 16 (ReadLimits::max_depth)"));
  // A compression bomb: 64 MiB of zeros against a 1 MiB cap.
  nordf::ReadLimits small;
  small.max_elements = 1 << 20;
  const std::string bomb = zlib(w.u32(14) + w.u32(64 << 20) + std::string(64 << 20, '\0'));
  REQUIRE_THROWS_WITH(nordf::MatFile(w.header() + w.u32(15) + w.u32(static_cast<uint32_t>(bomb.size())) + bomb, "bomb.mat", small),
                      Catch::Contains("'bomb.mat': variable 0 decompresses to more than 1048576 bytes"));
  const std::string cut = zlib(w.doubles("labels", {1, 2}));
  CHECK_THAT(err(w.header() + w.u32(15) + w.u32(static_cast<uint32_t>(cut.size() / 2)) + cut.substr(0, cut.size() / 2)),
             Catch::Contains("the compressed data is truncated"));
  // Values that are not indices, and element counts that disagree with the dimensions.
  CHECK_THAT(err(w.header() + w.matrix(1, {0, 1}, "file_list", "") + w.doubles("labels", {1.5})),
             Catch::Contains("variable 'labels' holds 1.500000, which is not an index"));
  CHECK_THAT(err(w.header() + w.matrix(1, {0, 1}, "file_list", "") + w.doubles("labels", {NAN})),
             Catch::Contains("which is not an index"));
  CHECK_THAT(err(w.header() + w.matrix(1, {0, 1}, "file_list", "") +
                 w.matrix(6, {1, 3}, "labels", w.element(9, std::string(8, '\0')))),
             Catch::Contains("'labels' holds 1 values for 3 elements"));
  // Text where numbers belong, numbers where text belongs, a missing or repeated variable.
  CHECK_THAT(err(w.header() + w.doubles("file_list", {1})), Catch::Contains("'file_list' is not a cell array of strings"));
  CHECK_THAT(err(w.header() + w.matrix(1, {1, 1}, "file_list", w.doubles("", {1}))),
             Catch::Contains("'file_list': entry 0 is not a string"));
  CHECK_THAT(err(w.header() + w.matrix(1, {0, 1}, "file_list", "")), Catch::Contains("'x.mat' has no variable 'labels'"));
  CHECK_THAT(err(w.header() + w.doubles("labels", {1}) + w.doubles("labels", {2})),
             Catch::Contains("holds variable 'labels' twice"));
}
