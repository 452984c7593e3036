#include <libnordf/core/io.h>
#include <libnordf/core/json.h>
#include <libnordf/core/registry.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

namespace nordf {

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  return out;
}

namespace {

std::string errno_text() { return std::strerror(errno); }

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;  // best effort for directories on filesystems that refuse it
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create directory '" + dir.string() + "': " + ec.message());

  std::random_device rd;
  const fs::path tmp = dir / ("." + target.filename().string() + ".tmp" + std::to_string(rd()));
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error("cannot open '" + tmp.string() + "' for writing: " + errno_text());
      write(out);
      out.flush();
      if (!out) throw std::runtime_error("write to '" + tmp.string() + "' failed");
    }
    fsync_path(tmp.string(), false);
    if (std::rename(tmp.c_str(), target.c_str()) != 0)
      throw std::runtime_error("cannot rename '" + tmp.string() + "' to '" + path + "': " + errno_text());
    fsync_path(dir.string(), true);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_file_atomic(path, [&](std::ostream& out) { out << contents; });
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "': " + errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("error while reading '" + path + "'");
  return ss.str();
}

void require_file(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (std::filesystem::is_regular_file(st)) return;
  if (std::filesystem::is_directory(st)) throw std::runtime_error("'" + path + "' is a directory, not a file");
  if (st.type() == std::filesystem::file_type::not_found) throw std::runtime_error("file '" + path + "' does not exist");
  if (ec) throw std::runtime_error("cannot read '" + path + "': " + ec.message());
  throw std::runtime_error("'" + path + "' is not a regular file");
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

std::string shell_quoted(const std::string& s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || (c != 0 && std::strchr("/._-+=:,@%", c) != nullptr);
  });
  if (plain) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool read_csv_record(std::istream& in, std::vector<std::string>& fields, const std::string& what) {
  std::string record, line;
  if (!std::getline(in, record)) return false;
  // An odd count of quotes so far means a quoted field is still open: its line break is data.
  auto quotes = std::count(record.begin(), record.end(), '"');
  while (quotes % 2 != 0) {
    if (!std::getline(in, line)) throw std::runtime_error("'" + what + "': the file ends inside a quoted field");
    quotes += std::count(line.begin(), line.end(), '"');
    record += '\n';
    record += line;
  }
  fields = csv_fields(record);
  return true;
}

}  // namespace nordf

namespace nordf {

std::string loaded_blas_library() {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find("openblas") != std::string::npos) return path;  // OpenBLAS wins if both are mapped
    if (found.empty() && path.find("libblas.so") != std::string::npos) found = path;
  }
  return found;
}

nlohmann::json parse_json(const std::string& text) {
  using json = nlohmann::json;
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          throw JsonSyntaxError("arrays and objects are nested more than " + std::to_string(kMaxJsonDepth) + " deep");
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.back().insert(parsed.get<std::string>()).second)
          throw JsonSyntaxError("the key '" + parsed.get<std::string>() + "' appears twice in one object");
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text, check);
  } catch (const json::exception& e) {
    throw JsonSyntaxError(e.what());
  }
}

}  // namespace nordf
