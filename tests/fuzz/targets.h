#pragma once
// The fuzz targets' bodies, one function per parser that reads what users download. Each feeds
// its bytes to the parser and accepts a clean error (std::exception); a crash, a sanitizer report,
// a hang or an allocation beyond the limits is a finding. fuzz_<name>.cpp wraps one as a libFuzzer
// entry point (NORDF_FUZZ builds); test_replay.cpp replays the saved corpus through all of them.
#include <libnordf/core/limits.h>
#include <libnordf/data/image.h>
#include <libnordf/data/sources.h>
#include <libnordf/weights/weights.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace nordf_fuzz {

/// Limits small enough that a fuzzer's memory cap is never what it finds.
inline nordf::ReadLimits limits() {
  nordf::ReadLimits l;
  l.max_elements = int64_t(1) << 22;
  l.max_pixels = int64_t(1) << 20;
  l.max_string = int64_t(1) << 16;
  l.max_header = int64_t(1) << 20;
  return l;
}

inline std::string as_string(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

/// read_state_dict's parser on any bytes: zip, legacy pickle or safetensors, detected as for a file.
inline int state_dict(const uint8_t* data, size_t size) {
  try {
    nordf::parse_state_dict(as_string(data, size), "fuzz-input", limits());
  } catch (const std::exception&) {
  }
  return 0;
}

/// The legacy (pre-1.6) torch.save format: pickles, then raw storages. Inputs that do not start
/// with a pickle PROTO opcode belong to the other targets.
inline int pickle_legacy(const uint8_t* data, size_t size) {
  if (size < 2 || data[0] != 0x80) return 0;
  return state_dict(data, size);
}

/// A .safetensors header: the input is the JSON; its first byte sets the data section's length
/// (×8), so that the fuzzer explores the header rather than the framing.
inline int safetensors(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string header = as_string(data + 1, size - 1);
  std::string file(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(&file[0], &n, 8);
  file += header;
  file.append(static_cast<size_t>(data[0]) * 8, '\x01');
  try {
    nordf::parse_state_dict(file, "fuzz-input", limits());
  } catch (const std::exception&) {
  }
  return 0;
}

/// IDX image and label files, plain or gzip-compressed.
inline int idx(const uint8_t* data, size_t size) {
  const auto in = as_string(data, size);
  try {
    nordf::parse_idx_images(in, "fuzz-input", limits());
  } catch (const std::exception&) {
  }
  try {
    nordf::parse_idx_labels(in, "fuzz-input", limits());
  } catch (const std::exception&) {
  }
  return 0;
}

/// Image decoding: PNG, JPEG and BMP through stb_image.
inline int image(const uint8_t* data, size_t size) {
  try {
    nordf::decode_image(as_string(data, size), "fuzz-input", limits());
  } catch (const std::exception&) {
  }
  return 0;
}

/// A Stanford Dogs list (a level-5 .mat file).
inline int mat(const uint8_t* data, size_t size) {
  try {
    nordf::parse_image_list(as_string(data, size), "fuzz-input", limits());
  } catch (const std::exception&) {
  }
  return 0;
}

}  // namespace nordf_fuzz
