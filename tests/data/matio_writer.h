#pragma once
// Writes .mat lists with matio, an independent writer, for the tests of libnordf's own reader.
#include <catch2/catch.hpp>
#include <matio.h>

#include <string>
#include <vector>

namespace nordf_test {

/// A Stanford Dogs-style list: the cell array of strings file_list and the double array labels,
/// both files.size() × 1, as the official lists are laid out. ASCII only: matio 1.5's MAT_T_UTF8
/// reads past the end of non-ASCII input (AddressSanitizer), so non-ASCII text is tested with
/// scipy's and hand-made files.
inline void write_list_with_matio(const std::string& path, const std::vector<std::string>& files,
                                  const std::vector<double>& labels,
                                  matio_compression compression = MAT_COMPRESSION_NONE) {
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  REQUIRE(mat != nullptr);
  size_t dims[2] = {files.size(), 1};
  matvar_t* cell = Mat_VarCreate("file_list", MAT_C_CELL, MAT_T_CELL, 2, dims, nullptr, 0);
  for (size_t i = 0; i < files.size(); ++i) {
    size_t sdims[2] = {1, files[i].size()};
    Mat_VarSetCell(cell, static_cast<int>(i),
                   Mat_VarCreate(nullptr, MAT_C_CHAR, MAT_T_UTF8, 2, sdims, const_cast<char*>(files[i].c_str()), 0));
  }
  Mat_VarWrite(mat, cell, compression);
  Mat_VarFree(cell);
  matvar_t* lab = Mat_VarCreate("labels", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, const_cast<double*>(labels.data()), 0);
  Mat_VarWrite(mat, lab, compression);
  Mat_VarFree(lab);
  Mat_Close(mat);
}

}  // namespace nordf_test
