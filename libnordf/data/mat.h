#pragma once
/// @file
/// A bounded reader of MATLAB level-5 .mat files (the format of the Stanford Dogs lists and the
/// Oxford Flowers-102 labels and splits). It reads numeric arrays of whole numbers and cell
/// arrays of strings, compressed or not, in either byte order. The files come from the internet,
/// so every size the file declares is checked against the bytes that hold it before anything is
/// read, decompression is capped, and nesting is bounded.

#include <libnordf/core/limits.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nordf {

/// The variables of one level-5 .mat file, parsed from memory.
class MatFile {
 public:
  /// Parses `bytes`, naming `source` in every error. Every variable is located (compressed ones
  /// inflated, at most `limits.max_elements` bytes each) and its arrays' headers checked, down to
  /// each cell; `integers` and `strings` then convert the contents. Throws `std::runtime_error` naming `source`
  /// when the bytes are not a level-5 .mat file (the 128-byte header with version 0x0100 and an
  /// 'IM'/'MI' byte-order mark), or an element claims more bytes than hold it, a compressed
  /// variable does not inflate or passes the cap, or an array header is malformed.
  MatFile(std::string bytes, std::string source, const ReadLimits& limits = {});
  /// Reads the file at `path` (throws `std::runtime_error` naming it when it is missing).
  static MatFile open(const std::string& path, const ReadLimits& limits = {});

  /// The variables' names, in file order.
  std::vector<std::string> names() const;
  /// The numeric array `name` (any integer or floating class, stored in any numeric type) as
  /// whole numbers, in MATLAB's column-major order. Throws `std::runtime_error` when it is
  /// missing, not a real numeric array, its element count disagrees with its dimensions, or a
  /// value is not a whole number of magnitude at most 2^53 (NaN, inf, 1.5).
  std::vector<int64_t> integers(const std::string& name) const;
  /// The cell array `name` of character rows (8-bit or UTF-8 bytes kept as they are, UTF-16
  /// converted to UTF-8; a string wrapped in nested one-element cells is unwrapped; an empty
  /// element is ""), in column-major order. Throws `std::runtime_error` when it is missing, not a
  /// cell array, or an element is not a single character row.
  std::vector<std::string> strings(const std::string& name) const;

  /// The file named in errors.
  const std::string& source() const { return source_; }

 private:
  struct Array;
  const Array& array(const std::string& name) const;
  Array parse_array(size_t buffer, size_t begin, size_t size, const std::string& what, int64_t depth) const;

  std::string source_;
  ReadLimits limits_;
  bool swap_ = false;
  std::vector<std::unique_ptr<std::string>> buffers_;  ///< the file, then each inflated variable
  std::vector<std::string> order_;
  std::map<std::string, std::shared_ptr<const Array>> vars_;  ///< parsed and checked when opened
};

}  // namespace nordf
