// Crafted hostile files: each gets one clean error naming the problem, with no crash and no large
// allocation (the readers check what a file declares before allocating).
#include <libnordf/core/io.h>
#include <libnordf/data/image.h>
#include <libnordf/data/sources.h>
#include <libnordf/weights/weights.h>

#include <catch2/catch.hpp>
#include <zlib.h>

#include <cstring>

#include "test_util.h"

/// A byte string literal that may hold NULs.
#define B(s) std::string(s, sizeof(s) - 1)

namespace {

std::string u32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string u64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string be32(uint32_t v) {
  const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  return std::string(b, 4);
}
/// BINUNICODE "s".
std::string str(const std::string& s) { return "X" + u32(static_cast<uint32_t>(s.size())) + s; }

/// The three pickles that open a legacy torch.save file: the magic number, protocol 1001 and
/// the system info.
std::string legacy_header() {
  return B("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.") + B("\x80\x02M\xe9\x03.") +
         B("\x80\x02}q\x00.");
}

/// A persistent id ('storage', torch.FloatStorage, key, 'cpu', numel) then BINPERSID.
std::string storage(const std::string& key, uint64_t numel) {
  return "(" + str("storage") + "ctorch\nFloatStorage\n" + str(key) + str("cpu") + "\x8a\x08" + u64(numel) + "tQ";
}

std::string safetensors(const std::string& header, size_t body) {
  return u64(header.size()) + header + std::string(body, '\0');
}

std::string gzip(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(data.size() + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(&out[0]);
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

/// A PNG whose header claims w × h RGB pixels (stb reads the IHDR chunk without checking its CRC).
std::string png_header(uint32_t w, uint32_t h) {
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5) +
         be32(0) + be32(0) + "IDAT" + be32(0);
}

}  // namespace

TEST_CASE("a pickle that names os.system is refused by name", "[weights][hostile]") {
  const auto file = legacy_header() + "\x80\x02" + "cos\nsystem\n" + str("echo pwned") + "\x85R.";
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(file, "evil.pt"),
                      Catch::Contains("'evil.pt'") && Catch::Contains("names the Python global 'os.system'") &&
                          Catch::Contains("not allowed"));
  // STACK_GLOBAL (protocol 4) is refused the same way, before REDUCE could run anything.
  const auto v4 = legacy_header() + "\x80\x04" + str("builtins") + str("eval") + "\x93" + str("1") + "\x85R.";
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(v4, "evil4.pt"), Catch::Contains("'builtins.eval'"));
}

TEST_CASE("storages that claim more than the limit or the file are refused before allocation", "[weights][hostile]") {
  auto body = [](uint64_t numel) {
    return legacy_header() + "\x80\x02}" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + storage("0", numel) +
           B("K\x00(K\x03t(K\x01t\x89)tRs.");
  };
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(body(1000000000000ull), "huge.pt"),
                      Catch::Contains("'huge.pt'") && Catch::Contains("storage 0 claims more than 4294967296 elements") &&
                          Catch::Contains("ReadLimits::max_elements"));
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(body(1000000), "big.pt"),
                      Catch::Contains("claims 1000000 elements, more than the file holds"));
  nordf::ReadLimits tight;
  tight.max_elements = 100;
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(body(1000), "tight.pt", tight), Catch::Contains("more than 100 elements"));
}

TEST_CASE("offsets past the end of the file or of a storage are refused", "[weights][hostile]") {
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(safetensors(R"({"w":{"dtype":"F32","shape":[200],"data_offsets":[0,800]}})", 8),
                                              "short.safetensors"),
                      Catch::Contains("'short.safetensors'") && Catch::Contains("outside the 8 data bytes"));
  // A tensor view at offset 100 of a 6-element storage.
  const auto view = legacy_header() + "\x80\x02}" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + storage("0", 6) +
                    "Kd(K\x03t(K\x01t\x89)tRs." + "\x80\x02(" + str("0") + "l." + u64(6) + std::string(24, '\0');
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(view, "view.pt"), Catch::Contains("reaches past its storage (offset 100"));
}

TEST_CASE("a truncated zip checkpoint is refused, and a whole one reads", "[weights][hostile]") {
  c10::Dict<std::string, torch::Tensor> dict;
  dict.insert("weight", torch::arange(6, torch::kFloat).view({2, 3}));
  const auto bytes = torch::pickle_save(c10::IValue(dict));
  const std::string zip(bytes.begin(), bytes.end());
  auto sd = nordf::parse_state_dict(zip, "whole.pt");
  REQUIRE(sd.count("weight"));
  CHECK(torch::equal(sd.at("weight"), torch::arange(6, torch::kFloat).view({2, 3})));
  for (size_t keep : {zip.size() / 2, zip.size() - 10, size_t(30)}) {
    INFO(keep);
    REQUIRE_THROWS_WITH(nordf::parse_state_dict(zip.substr(0, keep), "cut.pt"),
                        Catch::Contains("'cut.pt'") && Catch::Contains("truncated"));
  }
}

TEST_CASE("safetensors headers: overlapping or out-of-range offsets, a 2^31-byte length", "[weights][hostile]") {
  REQUIRE_THROWS_WITH(
      nordf::parse_state_dict(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                          16),
                              "overlap.safetensors"),
      Catch::Contains("tensors 'a' and 'b' overlap"));
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(safetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16),
                                              "range.safetensors"),
                      Catch::Contains("outside the 16 data bytes"));
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                                              "shape.safetensors"),
                      Catch::Contains("do not fit its shape and dtype"));
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(u64(uint64_t(1) << 31) + "{}" + std::string(64, ' '), "long.safetensors"),
                      Catch::Contains("'long.safetensors'") && Catch::Contains("a safetensors header of 2147483648 bytes") &&
                          Catch::Contains("ReadLimits::max_header"));
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(safetensors(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,0]}})", 0),
                                              "neg.safetensors"),
                      Catch::Contains("negative size"));
}

TEST_CASE("pickle nesting and self-referencing wrappers are bounded", "[weights][hostile]") {
  const std::string deep = legacy_header() + "\x80\x02" + std::string(600, ']') + std::string(599, 'a') + ".";
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(deep, "deep.pt"), Catch::Contains("nested more than 512 deep"));
  // d = {}; d['model'] = d
  const std::string loop = legacy_header() + B("\x80\x02}q\x00(") + str("model") + B("h\x00u.") + "\x80\x02].";
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(loop, "loop.pt"), Catch::Contains("wrapped more than 8 deep"));
  const std::string bomb = legacy_header() + "\x80\x02" + "\x8d" + u64(uint64_t(1) << 62) + "abc";
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(bomb, "string.pt"), Catch::Contains("more than ReadLimits::max_string"));
}

TEST_CASE("a PNG that claims 100000 x 100000 pixels is refused before decoding", "[data][hostile]") {
  REQUIRE_THROWS_WITH(nordf::decode_image(png_header(100000, 100000), "huge.png"),
                      Catch::Contains("image 'huge.png' is too large: 100000×100000 pixels"));
  REQUIRE_THROWS_WITH(nordf::decode_image(png_header(20000, 20000), "big.png"),
                      Catch::Contains("too large: 20000×20000 pixels, more than ReadLimits::max_pixels"));
  // Width × height beyond 2^63 (a fuzzer's finding): refused from the header, without overflowing.
  REQUIRE_THROWS_WITH(nordf::decode_image(png_header(0xFFFFFFFF, 0xFFFFFF15), "wrap.png"),
                      Catch::Contains("image 'wrap.png' is too large: 4294967295×4294967061 pixels"));
  // Within max_pixels but past the decoder's side limit, and no pixels at all: both said
  // "Image not of any known type, or corrupt".
  REQUIRE_THROWS_WITH(nordf::decode_image(png_header(1, 1 << 26), "tall.png"),
                      "image 'tall.png' is too large: 1×67108864 pixels; a side may be at most 16777216");
  REQUIRE_THROWS_WITH(nordf::decode_image(png_header(0, 0), "empty.png"), "image 'empty.png' has no pixels (0×0)");
}

TEST_CASE("a truncated .gz and an IDX header beyond the limits get clean errors", "[data][hostile]") {
  std::string labels = be32(0x801) + be32(1000) + std::string(1000, '\x03');
  const auto gz = gzip(labels);
  CHECK(nordf::parse_idx_labels(gz, "labels.gz").size() == 1000);
  REQUIRE_THROWS_WITH(nordf::parse_idx_labels(gz.substr(0, gz.size() / 2), "cut.gz"),
                      Catch::Contains("'cut.gz'") && Catch::Contains("gzip stream is truncated"));
  // 2^32 - 1 images of 2^16 × 2^16 pixels in a 16-byte header.
  const auto header = be32(0x803) + be32(0xFFFFFFFF) + be32(65536) + be32(65536);
  REQUIRE_THROWS_WITH(nordf::parse_idx_images(header, "huge.idx"), Catch::Contains("more than ReadLimits::max_elements"));
  // A gzip bomb: 64 MiB of zeros inflated against a 1 MiB cap.
  nordf::ReadLimits small;
  small.max_elements = 1 << 20;
  const auto bomb = gzip(be32(0x801) + be32(64 << 20) + std::string(64 << 20, '\0'));
  REQUIRE_THROWS_WITH(nordf::parse_idx_labels(bomb, "bomb.gz", small), Catch::Contains("decompresses to more than"));
}

TEST_CASE("an IDX header whose rows x columns pass 2^63 is refused without overflowing", "[data][hostile]") {
  // h·w = (2^32 − 1)·(2^32 − 247) > 2^63: the product must never be formed (found by fuzz_idx).
  const auto header = be32(0x803) + be32(1) + be32(0xFFFFFFFF) + be32(0xFFFFFF09);
  REQUIRE_THROWS_WITH(nordf::parse_idx_images(header, "wide.idx"),
                      Catch::Contains("'wide.idx'") && Catch::Contains("more than ReadLimits::max_elements"));
  // Zero columns: n·h would pass 2^63 if formed first; the file is a valid empty array.
  const auto empty = nordf::parse_idx_images(be32(0x803) + be32(0xFFFFFFFF) + be32(0xFFFFFFFF) + be32(0), "empty.idx");
  CHECK(empty.numel() == 0);
  CHECK(empty.size(0) == 0xFFFFFFFFLL);
}

TEST_CASE("a JPEG Huffman table with more than 256 codes is refused before stb_image sees it", "[data][hostile]") {
  // SOI, then a DHT segment (class 0, id 0) whose 16 counts sum to 16 × 255 = 4080 (found by fuzz_image).
  std::string counts(16, '\xFF');
  std::string body = std::string(1, '\x00') + counts + std::string(4080, '\x01');
  const size_t len = 2 + body.size();
  std::string jpeg = B("\xFF\xD8") + "\xFF\xC4" + std::string(1, char(len >> 8)) + std::string(1, char(len & 0xFF)) + body +
                     B("\xFF\xD9");
  REQUIRE_THROWS_WITH(nordf::decode_image(jpeg, "tables.jpg"),
                      Catch::Contains("cannot decode image 'tables.jpg': corrupt JPEG") &&
                          Catch::Contains("declares 4080 codes, more than 256"));
  // stb_image skips 0xFF fill bytes before the SOI too, so they must not hide the table.
  REQUIRE_THROWS_WITH(nordf::decode_image(std::string(80, '\xFF') + jpeg, "filled.jpg"),
                      Catch::Contains("declares 4080 codes, more than 256"));
}

TEST_CASE("a PNG chunk longer than the file is refused before stb_image sees it", "[data][hostile]") {
  // An IDAT of 2^31 − 16 bytes in a 60-byte file (found by fuzz_image: stb_image 2.27 overflows).
  const auto png = png_header(4, 4).substr(0, 33) + be32(0x7FFFFFF0) + "IDAT" + std::string(16, '\0');
  REQUIRE_THROWS_WITH(nordf::decode_image(png, "long.png"),
                      Catch::Contains("cannot decode image 'long.png': corrupt PNG (chunk 'IDAT' declares 2147483632 bytes"));
}
