#pragma once
/// @file
/// Strict JSON reading for files a user or another program wrote (configurations, grids, run
/// directories).

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace nordf {

/// Arrays and objects nested deeper than this are refused by `parse_json` (no libnordf file
/// nests more than a few levels).
constexpr int kMaxJsonDepth = 512;

/// Why `parse_json` refused a text: not JSON, nested more than `kMaxJsonDepth` deep, or a key
/// given twice in one object. `what()` is the reason alone; callers add the file.
struct JsonSyntaxError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Parses `text` as JSON, refusing what nlohmann's parser would accept silently or fail on later:
/// a key repeated within one object (parsers differ on which value counts; nlohmann keeps the
/// last) and nesting deeper than `kMaxJsonDepth` (printing or copying such a value recurses once
/// per level). Throws `JsonSyntaxError`.
nlohmann::json parse_json(const std::string& text);

}  // namespace nordf
