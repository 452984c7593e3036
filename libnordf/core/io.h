#pragma once
/// @file
/// Crash-safe file output: everything libnordf writes goes through a temp file + rename.

#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

namespace nordf {

/// Writes `path` atomically: `write` fills a temporary file beside `path`, which is flushed,
/// fsync'ed and renamed over `path`. A reader sees the old file or the new one, never a
/// partial one. Creates missing parent directories. Throws `std::runtime_error` naming the
/// path on any I/O failure (the temporary file is removed).
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write);

/// Convenience overload writing a string.
void write_file_atomic(const std::string& path, const std::string& contents);

/// Reads a whole file. Throws `std::runtime_error` naming the path if it cannot be read.
std::string read_file(const std::string& path);

/// Throws `std::runtime_error` unless `path` is a regular file (after links): "file '…' does not
/// exist", "'…' is a directory, not a file", or "'…' is not a regular file".
void require_file(const std::string& path);

/// One CSV field (RFC 4180): `text` as is, or in double quotes with inner quotes doubled when it
/// holds a comma, a quote or a line break (set names come from folder names).
std::string csv_field(const std::string& text);

/// The fields of one CSV line written with `csv_field`.
std::vector<std::string> csv_fields(const std::string& line);

/// `s` as one POSIX shell word, for commands quoted in messages: as it is when it needs no quoting,
/// else in single quotes.
std::string shell_quoted(const std::string& s);

/// Reads the next CSV record of `in` into `fields`: one line, or several where a quoted field
/// holds a line break. Returns false at the end of the stream. Throws `std::runtime_error` naming
/// `what` (the file) when the stream ends inside a quoted field.
bool read_csv_record(std::istream& in, std::vector<std::string>& fields, const std::string& what);

}  // namespace nordf

namespace nordf {

/// Path of the BLAS shared library mapped into this process (read from /proc/self/maps), or an
/// empty string if none is mapped or the platform has no /proc. Apps use it to warn when LibTorch
/// runs on the reference BLAS instead of OpenBLAS.
std::string loaded_blas_library();

}  // namespace nordf
