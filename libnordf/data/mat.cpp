#include <libnordf/core/io.h>
#include <libnordf/data/mat.h>

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

// The layout follows MathWorks' "MAT-File Format" (level 5): a 128-byte header, then data
// elements of an 8-byte tag (type, byte count) and contents padded to 8 bytes, or a "small"
// element of 1-4 bytes packed into the tag; miCOMPRESSED holds one zlib-compressed element.

namespace nordf {

namespace {

enum : uint32_t {
  miINT8 = 1, miUINT8 = 2, miINT16 = 3, miUINT16 = 4, miINT32 = 5, miUINT32 = 6, miSINGLE = 7,
  miDOUBLE = 9, miINT64 = 12, miUINT64 = 13, miMATRIX = 14, miCOMPRESSED = 15, miUTF8 = 16,
  miUTF16 = 17, miUTF32 = 18,
};
enum : uint32_t { mxCELL = 1, mxCHAR = 4, mxDOUBLE = 6, mxUINT64 = 15 };

/// Bytes per value of a numeric or character data type; 0 for the others.
size_t type_size(uint32_t t) {
  switch (t) {
    case miINT8: case miUINT8: case miUTF8: return 1;
    case miINT16: case miUINT16: case miUTF16: return 2;
    case miINT32: case miUINT32: case miSINGLE: case miUTF32: return 4;
    case miDOUBLE: case miINT64: case miUINT64: return 8;
    default: return 0;
  }
}

/// Inflates a zlib stream, refusing more than `cap` bytes of output.
std::string inflate_capped(const char* data, size_t size, size_t cap, const std::string& what) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) throw std::runtime_error(what + ": zlib failed to start");
  std::string out;
  char buf[1 << 15];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  z.avail_in = static_cast<uInt>(std::min<size_t>(size, UINT32_MAX));
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      const std::string why = rc == Z_BUF_ERROR ? "truncated" : (z.msg ? z.msg : "corrupt");
      inflateEnd(&z);
      throw std::runtime_error(what + ": the compressed data is " + why);
    }
    out.append(buf, sizeof buf - z.avail_out);
    if (out.size() > cap) {
      inflateEnd(&z);
      throw std::runtime_error(what + " decompresses to more than " + std::to_string(cap) +
                               " bytes (ReadLimits::max_elements)");
    }
  }
  inflateEnd(&z);
  return out;
}

/// UTF-16 code units → UTF-8 (an unpaired surrogate becomes U+FFFD).
std::string utf16_to_utf8(const std::vector<uint32_t>& units) {
  std::string s;
  for (size_t i = 0; i < units.size(); ++i) {
    uint32_t c = units[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < units.size() && units[i + 1] >= 0xDC00 && units[i + 1] <= 0xDFFF)
      c = 0x10000 + ((c - 0xD800) << 10) + (units[++i] - 0xDC00);
    else if (c >= 0xD800 && c <= 0xDFFF)
      c = 0xFFFD;
    if (c < 0x80) {
      s += char(c);
    } else if (c < 0x800) {
      s += char(0xC0 | (c >> 6));
      s += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      s += char(0xE0 | (c >> 12));
      s += char(0x80 | ((c >> 6) & 0x3F));
      s += char(0x80 | (c & 0x3F));
    } else {
      s += char(0xF0 | (c >> 18));
      s += char(0x80 | ((c >> 12) & 0x3F));
      s += char(0x80 | ((c >> 6) & 0x3F));
      s += char(0x80 | (c & 0x3F));
    }
  }
  return s;
}

}  // namespace

/// One parsed array: its header, and its contents as a view into a buffer.
struct MatFile::Array {
  uint32_t cls = 0;              ///< mx class; 0 for an empty miMATRIX element
  bool complex = false;
  std::string name;
  std::vector<int64_t> dims;
  int64_t elements = 0;          ///< the product of dims
  uint32_t type = 0;             ///< the data type of the real part (numeric and char arrays)
  const char* data = nullptr;    ///< the real part's bytes
  size_t bytes = 0;
  std::vector<Array> cells;      ///< the elements of a cell array
};

namespace {

/// A data element's tag read at `pos` of [begin, end): its type and where its contents lie.
struct Element {
  uint32_t type = 0;
  size_t begin = 0, size = 0;
};

}  // namespace

MatFile MatFile::open(const std::string& path, const ReadLimits& limits) {
  require_file(path);
  return MatFile(read_file(path), path, limits);
}

MatFile::MatFile(std::string bytes, std::string source, const ReadLimits& limits)
    : source_(std::move(source)), limits_(limits) {
  const std::string& b = *buffers_.emplace_back(std::make_unique<std::string>(std::move(bytes)));
  const std::string where = "'" + source_ + "'";
  if (b.size() < 128 || !((b[126] == 'I' && b[127] == 'M') || (b[126] == 'M' && b[127] == 'I')))
    throw std::runtime_error(where + " is not a MATLAB level-5 .mat file (no 128-byte header with a byte-order mark)");
  swap_ = b[126] == 'M';
  const uint16_t version = swap_ ? uint16_t((uint8_t(b[124]) << 8) | uint8_t(b[125]))
                                 : uint16_t(uint8_t(b[124]) | (uint8_t(b[125]) << 8));
  if (version != 0x0100)
    throw std::runtime_error(where + " is not a MATLAB level-5 .mat file (version " + std::to_string(version) +
                             "; v7.3 files are HDF5 and not supported)");

  size_t pos = 128;
  int index = 0;
  while (pos + 8 <= b.size()) {
    const std::string what = where + ": variable " + std::to_string(index);
    uint32_t type, size;
    std::memcpy(&type, b.data() + pos, 4);
    std::memcpy(&size, b.data() + pos + 4, 4);
    if (swap_) type = __builtin_bswap32(type), size = __builtin_bswap32(size);
    if (size > b.size() - pos - 8)
      throw std::runtime_error(what + " claims " + std::to_string(size) + " bytes, but the file holds " +
                               std::to_string(b.size() - pos - 8) + " after its tag");
    size_t buffer = 0, begin = pos + 8, length = size;
    if (type == miCOMPRESSED) {
      buffers_.push_back(std::make_unique<std::string>(
          inflate_capped(b.data() + begin, size, static_cast<size_t>(std::max<int64_t>(0, limits_.max_elements)), what)));
      buffer = buffers_.size() - 1;
      const std::string& in = *buffers_[buffer];
      if (in.size() < 8) throw std::runtime_error(what + ": the compressed element is shorter than a tag");
      uint32_t t, s;
      std::memcpy(&t, in.data(), 4);
      std::memcpy(&s, in.data() + 4, 4);
      if (swap_) t = __builtin_bswap32(t), s = __builtin_bswap32(s);
      if (s > in.size() - 8)
        throw std::runtime_error(what + " claims " + std::to_string(s) + " bytes, but inflates to " +
                                 std::to_string(in.size() - 8) + " after its tag");
      type = t, begin = 8, length = s;
      pos += 8 + size;  // compressed elements are not padded
    } else {
      pos += 8 + ((size + 7) & ~size_t(7));
    }
    ++index;
    if (type != miMATRIX) continue;  // anything else at the top level carries no variable
    auto a = std::make_shared<const Array>(parse_array(buffer, begin, length, what, 0));
    if (a->cls == 0) continue;  // an empty element names nothing
    if (vars_.count(a->name)) throw std::runtime_error(where + " holds variable '" + a->name + "' twice");
    order_.push_back(a->name);
    vars_[a->name] = std::move(a);
  }
}

MatFile::Array MatFile::parse_array(size_t buffer, size_t begin, size_t size, const std::string& what,
                                    int64_t depth) const {
  if (depth > limits_.max_depth)
    throw std::runtime_error(what + ": cells nested deeper than " + std::to_string(limits_.max_depth) +
                             " (ReadLimits::max_depth)");
  const std::string& in = *buffers_[buffer];
  const size_t end = begin + size;
  size_t pos = begin;
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, in.data() + at, 4);
    return swap_ ? __builtin_bswap32(v) : v;
  };
  // The next element inside [pos, end), checked against end.
  auto next = [&](const char* role) {
    if (pos + 8 > end) throw std::runtime_error(what + ": the array ends before its " + std::string(role));
    Element e;
    const uint32_t w0 = u32(pos);
    if (w0 >> 16) {
      e.type = w0 & 0xFFFF;
      e.size = w0 >> 16;
      e.begin = pos + 4;
      if (e.size > 4) throw std::runtime_error(what + ": a packed " + role + " claims " + std::to_string(e.size) + " bytes");
      pos += 8;
    } else {
      e.type = w0;
      e.size = u32(pos + 4);
      e.begin = pos + 8;
      if (e.size > end - pos - 8)
        throw std::runtime_error(what + ": its " + role + " element claims " + std::to_string(e.size) + " bytes, but the array holds " +
                                 std::to_string(end - pos - 8) + " after its tag");
      pos = std::min(end, pos + 8 + ((e.size + 7) & ~size_t(7)));
    }
    return e;
  };

  Array a;
  if (size == 0) return a;  // an empty element: MATLAB writes [] cells this way
  const Element flags = next("array flags");
  if (flags.type != miUINT32 || flags.size != 8) throw std::runtime_error(what + ": malformed array flags");
  a.cls = u32(flags.begin) & 0xFF;
  a.complex = (u32(flags.begin) & 0x800) != 0;
  const Element dims = next("dimensions");
  if (dims.type != miINT32 || dims.size < 8 || dims.size % 4)
    throw std::runtime_error(what + ": malformed dimensions");
  a.elements = 1;
  for (size_t k = 0; k < dims.size / 4; ++k) {
    const int64_t d = static_cast<int32_t>(u32(dims.begin + 4 * k));
    if (d < 0) throw std::runtime_error(what + ": negative dimension " + std::to_string(d));
    if (d != 0 && a.elements > limits_.max_elements / d)
      throw std::runtime_error(what + ": its dimensions hold more than ReadLimits::max_elements elements");
    a.dims.push_back(d);
    a.elements *= d;
  }
  const Element name = next("name");
  if (name.type != miINT8 && name.type != miUINT8 && name.type != miUTF8)
    throw std::runtime_error(what + ": malformed name");
  a.name.assign(in.data() + name.begin, name.size);

  if (a.cls == mxCELL) {
    // Each cell is an element of at least a tag: a count beyond what the bytes can hold is a lie.
    if (a.elements > static_cast<int64_t>((end - pos) / 8))
      throw std::runtime_error(what + ": a cell array of " + std::to_string(a.elements) + " elements in " +
                               std::to_string(end - pos) + " bytes");
    for (int64_t k = 0; k < a.elements; ++k) {
      const Element cell = next("cell");
      if (cell.type != miMATRIX) throw std::runtime_error(what + ": cell " + std::to_string(k) + " is not an array");
      a.cells.push_back(parse_array(buffer, cell.begin, cell.size, what + ", cell " + std::to_string(k), depth + 1));
    }
  } else if (a.cls == mxCHAR || (a.cls >= mxDOUBLE && a.cls <= mxUINT64)) {
    if (a.elements == 0 && pos >= end) return a;
    const Element real = next("data");
    const size_t ts = type_size(real.type);
    if (ts == 0) throw std::runtime_error(what + ": data of unknown type " + std::to_string(real.type));
    if (real.size % ts) throw std::runtime_error(what + ": data of " + std::to_string(real.size) + " bytes is not whole values");
    a.type = real.type;
    a.data = in.data() + real.begin;
    a.bytes = real.size;
  }
  return a;
}

const MatFile::Array& MatFile::array(const std::string& name) const {
  auto it = vars_.find(name);
  if (it == vars_.end()) throw std::runtime_error("'" + source_ + "' has no variable '" + name + "'");
  return *it->second;
}

std::vector<std::string> MatFile::names() const { return order_; }

std::vector<int64_t> MatFile::integers(const std::string& name) const {
  const Array& a = array(name);
  const std::string what = "'" + source_ + "': variable '" + name + "'";
  if (a.cls < mxDOUBLE || a.cls > mxUINT64 || a.complex) throw std::runtime_error(what + " is not a real numeric array");
  const size_t ts = type_size(a.type);
  const size_t n = ts ? a.bytes / ts : 0;
  if (static_cast<int64_t>(n) != a.elements || a.type == miUTF8 || a.type == miUTF16 || a.type == miUTF32)
    throw std::runtime_error(what + " holds " + std::to_string(n) + " values for " + std::to_string(a.elements) +
                             " elements");
  std::vector<int64_t> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    unsigned char raw[8];
    std::memcpy(raw, a.data + i * ts, ts);
    if (swap_) std::reverse(raw, raw + ts);
    double x = 0;
    bool whole = true;
    int64_t v = 0;
    switch (a.type) {
      case miINT8: v = int8_t(raw[0]); break;
      case miUINT8: v = raw[0]; break;
      case miINT16: { int16_t t; std::memcpy(&t, raw, 2); v = t; break; }
      case miUINT16: { uint16_t t; std::memcpy(&t, raw, 2); v = t; break; }
      case miINT32: { int32_t t; std::memcpy(&t, raw, 4); v = t; break; }
      case miUINT32: { uint32_t t; std::memcpy(&t, raw, 4); v = t; break; }
      case miINT64: { int64_t t; std::memcpy(&t, raw, 8); v = t; break; }
      case miUINT64: {
        uint64_t t;
        std::memcpy(&t, raw, 8);
        if (t > (uint64_t(1) << 53)) throw std::runtime_error(what + " holds " + std::to_string(t) + ", which is not an index");
        v = static_cast<int64_t>(t);
        break;
      }
      case miSINGLE: { float t; std::memcpy(&t, raw, 4); x = t; whole = false; break; }
      case miDOUBLE: { std::memcpy(&x, raw, 8); whole = false; break; }
      default: throw std::runtime_error(what + " is not a real numeric array");
    }
    if (!whole) {
      // NaN, inf, fractions and values beyond exact integers (2^53) are not indices.
      if (!(std::abs(x) <= 9007199254740992.0) || x != std::floor(x))
        throw std::runtime_error(what + " holds " + std::to_string(x) + ", which is not an index");
      v = static_cast<int64_t>(x);
    }
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> MatFile::strings(const std::string& name) const {
  const Array& a = array(name);
  const std::string what = "'" + source_ + "': variable '" + name + "'";
  if (a.cls != mxCELL) throw std::runtime_error(what + " is not a cell array of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < a.cells.size(); ++i) {
    const Array* c = &a.cells[i];
    while (c->cls == mxCELL && c->cells.size() == 1) c = &c->cells[0];  // {'x'}: nested cells
    const auto bad = [&] {
      return std::runtime_error(what + ": entry " + std::to_string(i) + " is not a string");
    };
    if (c->cls == 0 || (c->cls == mxCHAR && c->elements == 0)) {
      out.emplace_back();
      continue;
    }
    if (c->cls != mxCHAR || c->complex || c->dims.size() != 2 || c->dims[0] != 1) throw bad();
    const size_t ts = type_size(c->type);
    if (ts == 1) {
      out.emplace_back(c->data, c->bytes);
    } else if (ts == 2 || ts == 4) {
      std::vector<uint32_t> units(c->bytes / ts);
      for (size_t k = 0; k < units.size(); ++k) {
        unsigned char raw[4];
        std::memcpy(raw, c->data + k * ts, ts);
        if (swap_) std::reverse(raw, raw + ts);
        uint32_t u = 0;
        if (ts == 2) {
          uint16_t t;
          std::memcpy(&t, raw, 2);
          u = t;
        } else {
          std::memcpy(&u, raw, 4);
          if (u > 0x10FFFF) u = 0xFFFD;
        }
        units[k] = u;
      }
      out.push_back(utf16_to_utf8(units));
    } else {
      throw bad();
    }
  }
  return out;
}

}  // namespace nordf
