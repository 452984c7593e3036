// The fuzz regression test: every saved input (tests/fuzz/corpus/<target>/, the seed corpus and
// what fuzzing added, and tests/fuzz/crashes/<target>/, inputs that once crashed a parser) runs
// through its target. Seconds, not minutes; under -DNORDF_SANITIZE=ON with the sanitizers.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/targets.h"

namespace {

int64_t replay(const std::string& name, int (*target)(const uint8_t*, size_t)) {
  namespace fs = std::filesystem;
  int64_t n = 0;
  for (const char* kind : {"corpus", "crashes"}) {
    const fs::path dir = fs::path(NORDF_TEST_SOURCE_DIR) / "fuzz" / kind / name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      INFO(e.path().string());
      target(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++n;
    }
  }
  return n;
}

}  // namespace

TEST_CASE("fuzz corpus and crash inputs replay through every parser", "[fuzz]") {
  CHECK(replay("state_dict", nordf_fuzz::state_dict) > 0);
  CHECK(replay("pickle_legacy", nordf_fuzz::pickle_legacy) > 0);
  CHECK(replay("safetensors", nordf_fuzz::safetensors) > 0);
  CHECK(replay("idx", nordf_fuzz::idx) > 0);
  CHECK(replay("image", nordf_fuzz::image) > 0);
  CHECK(replay("mat", nordf_fuzz::mat) > 0);
}
