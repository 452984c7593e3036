#include <libnordf/core/io.h>
#include <libnordf/data/image.h>
#include <libnordf/report/plots.h>

#include <catch2/catch.hpp>

#include <fstream>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "test_util.h"

TEST_CASE("line and histogram plots render real PNG and SVG files", "[report]") {
  const auto dir = nordf_test::work_dir("plots");
  nordf::report::Series a{"rising", {1, 2, 3, 4}, {0.1, 0.4, 0.5, 0.9}}, b{"falling", {1, 2, 3, 4}, {0.9, 0.6, 0.3, 0.2}};
  nordf::report::PlotOptions o;
  o.title = "test";
  o.width = 400;
  o.height = 300;
  nordf::report::line_plot(dir + "/lines.png", {a, b}, o);
  auto img = nordf::load_image(dir + "/lines.png");
  CHECK(img.sizes() == torch::IntArrayRef({3, 300, 400}));
  CHECK(img.std().item<double>() > 0.05);               // not blank
  CHECK(img.mean().item<double>() > 0.5);               // white background
  nordf::report::line_plot(dir + "/lines.svg", {a}, o);
  CHECK(std::filesystem::file_size(dir + "/lines.svg") > 1000);
  nordf::report::histogram_plot(dir + "/hist.png", {{"x", {}, {0.1, 0.2, 0.2, 0.9}}, {"y", {}, {0.5, 0.6}}}, o);
  CHECK(nordf::load_image(dir + "/hist.png").std().item<double>() > 0.05);
  for (auto& e : std::filesystem::directory_iterator(dir)) CHECK(e.path().filename().string()[0] != '.');

  REQUIRE_THROWS_WITH(nordf::report::line_plot(dir + "/x.bmp", {a}, o), Catch::Contains("unknown format"));
  nordf::report::Series bad{"bad", {1, 2}, {0.0, std::nan("")}};
  REQUIRE_THROWS_WITH(nordf::report::line_plot(dir + "/bad.png", {bad}, o), Catch::Contains("'bad' has a non-finite value"));
  REQUIRE_THROWS_AS(nordf::report::line_plot(dir + "/empty.png", {}, o), std::invalid_argument);
}

TEST_CASE("a plot whose directory cannot be written fails with an error naming it", "[report]") {
  // PLplot ends the process when it cannot open its output file.
  const auto dir = nordf_test::work_dir("plots_unwritable");
  std::ofstream(dir + "/file") << "x";
  nordf::report::Series a{"a", {1, 2}, {0.1, 0.2}};
  nordf::report::PlotOptions o;
  CHECK_THROWS_WITH(nordf::report::line_plot(dir + "/file/loss.png", {a}, o),
                    Catch::Contains("cannot write plot '" + dir + "/file/loss.png'") &&
                        Catch::Contains("is not a directory"));
}

TEST_CASE("a one-point curve draws its band as an error bar, without PLplot errors", "[report]") {
  const auto dir = nordf_test::work_dir("plots_one_point");
  nordf::report::PlotOptions o;
  o.width = 300;
  o.height = 200;
  nordf::report::Series plain{"one", {1}, {0.5}}, banded = plain;
  banded.lo = {0.2};
  banded.hi = {0.8};
  nordf::report::line_plot(dir + "/plain.png", {plain, nordf::report::Series{"two", {1, 2}, {0.0, 1.0}}}, o);
  // PLplot reports on stderr and carries on: capture file descriptor 2 around the call.
  std::fflush(stderr);
  const int saved = dup(2);
  const auto log = dir + "/stderr.txt";
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  nordf::report::line_plot(dir + "/banded.png", {banded, nordf::report::Series{"two", {1, 2}, {0.0, 1.0}}}, o);
  std::fflush(stderr);
  dup2(saved, 2);
  close(fd);
  close(saved);
  CHECK(nordf::read_file(log).empty());
  CHECK_FALSE(torch::equal(nordf::load_image(dir + "/plain.png"), nordf::load_image(dir + "/banded.png")));
}

TEST_CASE("history plots cover every epoch record", "[report]") {
  const auto dir = nordf_test::work_dir("history_plots");
  std::vector<nordf::EpochRecord> h(3);
  for (int i = 0; i < 3; ++i) {
    h[i].epoch = i + 1;
    h[i].train.total = 2.0 - 0.5 * i;
    h[i].val.total = 2.1 - 0.4 * i;
    h[i].train.cls_accuracy = 0.5 + 0.1 * i;
    h[i].train.sim_accuracy = 0.6;
    h[i].val.sim_accuracy = 0.6;
  }
  auto files = nordf::report::plot_history(h, dir);
  CHECK(files.size() == 4);
  for (const auto& f : files) CHECK(std::filesystem::file_size(f) > 1000);
  REQUIRE_THROWS_AS(nordf::report::plot_history({}, dir), std::invalid_argument);
}
