#include <libnordf/core/io.h>
#include <libnordf/core/registry.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "test_util.h"

TEST_CASE("registry makes, lists and rejects unknown names", "[core]") {
  nordf::Registry<int, int> reg("widget");
  reg.add("double", [](int x) { return 2 * x; });
  reg.add("square", [](int x) { return x * x; });
  CHECK(reg.make("double", 4) == 8);
  CHECK(reg.make("square", 4) == 16);
  CHECK(reg.names() == std::vector<std::string>{"double", "square"});
  REQUIRE_THROWS_WITH(reg.make("cube", 2), "unknown widget 'cube'; known: double, square");
  REQUIRE_THROWS_AS(reg.add("", [](int x) { return x; }), std::invalid_argument);
}

TEST_CASE("CSV fields quote commas and quotes and read back", "[core]") {
  CHECK(nordf::csv_field("plain-name") == "plain-name");
  CHECK(nordf::csv_field("a,b") == "\"a,b\"");
  CHECK(nordf::csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  const std::vector<std::string> fields{"msp", "set, with comma", "3", "", "say \"hi\""};
  std::string line;
  for (const auto& f : fields) line += (line.empty() ? "" : ",") + nordf::csv_field(f);
  CHECK(nordf::csv_fields(line) == fields);
  CHECK(nordf::csv_fields("a,,b,") == std::vector<std::string>{"a", "", "b", ""});
}

TEST_CASE("write_file_atomic replaces whole files and leaves no temporaries", "[core]") {
  namespace fs = std::filesystem;
  const auto dir = nordf_test::work_dir("atomic");
  const auto path = dir + "/sub/out.txt";
  nordf::write_file_atomic(path, "first");
  CHECK(nordf::read_file(path) == "first");
  nordf::write_file_atomic(path, "second");
  CHECK(nordf::read_file(path) == "second");

  // A writer that fails part-way leaves the previous contents intact.
  REQUIRE_THROWS_AS(nordf::write_file_atomic(path,
                                             [](std::ostream& out) {
                                               out << "partial";
                                               throw std::runtime_error("writer failed");
                                             }),
                    std::runtime_error);
  CHECK(nordf::read_file(path) == "second");
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir + "/sub")) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
  REQUIRE_THROWS_WITH(nordf::read_file(dir + "/missing.txt"), Catch::Contains("missing.txt"));
}
