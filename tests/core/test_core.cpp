#include <libnordf/core/io.h>
#include <libnordf/core/registry.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

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

TEST_CASE("CSV records read back whole when a quoted field holds line breaks", "[core]") {
  const std::vector<std::vector<std::string>> records{
      {"method", "split"}, {"msp", "two\nlines"}, {"energy", "crlf\r\nname, \"quoted\""}, {"knn", "plain"}};
  std::string text;
  for (const auto& r : records) text += nordf::csv_field(r[0]) + "," + nordf::csv_field(r[1]) + "\n";
  std::istringstream in(text);
  std::vector<std::vector<std::string>> back;
  std::vector<std::string> fields;
  while (nordf::read_csv_record(in, fields, "scores.csv")) back.push_back(fields);
  CHECK(back == records);
  // The last record needs no line break; a quote left open names the file.
  std::istringstream last("a,b\nc,\"d\ne\"");
  REQUIRE(nordf::read_csv_record(last, fields, "x.csv"));
  REQUIRE(nordf::read_csv_record(last, fields, "x.csv"));
  CHECK(fields == std::vector<std::string>{"c", "d\ne"});
  CHECK_FALSE(nordf::read_csv_record(last, fields, "x.csv"));
  std::istringstream open("a,\"b\nc\n");
  REQUIRE_THROWS_WITH(nordf::read_csv_record(open, fields, "x.csv"), "'x.csv': the file ends inside a quoted field");
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
