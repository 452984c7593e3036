#include <libnordf/backbone/vit.h>
#include <libnordf/weights/weights.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nordf {

namespace {

// ---- bounds ---------------------------------------------------------------------------------

/// Throws the reader's error for `source`.
[[noreturn]] void corrupt(const std::string& source, const std::string& why) {
  throw std::runtime_error("'" + source + "' is not a readable checkpoint: " + why);
}

/// a·b and a + b, or nullopt on int64 overflow.
std::optional<int64_t> mul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? std::nullopt : std::optional<int64_t>(r);
}
std::optional<int64_t> add(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? std::nullopt : std::optional<int64_t>(r);
}

/// Elements of `shape`, checked against the element cap (and overflow).
int64_t checked_numel(const std::vector<int64_t>& shape, const ReadLimits& limits, const std::string& source,
                      const std::string& what) {
  int64_t n = 1;
  for (auto d : shape) {
    if (d < 0) corrupt(source, what + " has a negative size " + std::to_string(d));
    auto m = mul(n, d);
    if (!m || *m > limits.max_elements)
      corrupt(source, what + " claims more than " + std::to_string(limits.max_elements) +
                          " elements (ReadLimits::max_elements)");
    n = *m;
  }
  return n;
}

// ---- a minimal, restricted unpickler for torch.save files ---------------------------------
//
// LibTorch's own pickle_load cannot read the collections.OrderedDict that model.state_dict()
// returns (LibTorch 1.13: "Expected GenericDict but got None"), so libnordf reads the pickle
// stream itself. Like PyTorch's weights_only unpickler it runs no code and accepts only the
// globals a state dict needs (an allow-list); everything a file declares is checked before it is
// allocated. Objects live in an arena owned by the unpickler, so that a hostile file can make
// neither deep recursion in destructors nor reference cycles that leak.

struct PyObj {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kGlobal, kTensor, kOther } kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s, name;  // str/bytes value; global: s = module, name = name
  std::vector<PyObj*> items;
  std::vector<std::pair<PyObj*, PyObj*>> dict;
  torch::Tensor tensor;
  int64_t depth = 0;  // containers nested in this one
};
using Obj = PyObj*;

/// The globals a state dict may name: the tensor rebuild functions, OrderedDict and the storage
/// types (PyTorch's weights_only allow-list, restricted to what torch.save of tensors emits).
bool allowed_global(const std::string& module, const std::string& name) {
  static const std::set<std::string> allowed = {
      "collections.OrderedDict",
      "builtins.dict",
      "__builtin__.dict",
      "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state",
      "torch.nn.parameter.Parameter",
      "torch.Size",
      // LibTorch's own torch::pickle_save tags dicts with their types; the tag is dropped.
      "torch.jit._pickle.restore_type_tag",
  };
  if (allowed.count(module + "." + name)) return true;
  static const std::set<std::string> storages = {"FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage",
                                                 "LongStorage",  "IntStorage",    "ShortStorage", "CharStorage",
                                                 "ByteStorage",  "BoolStorage"};
  return module == "torch" && storages.count(name);
}

class Unpickler {
 public:
  using PersistentLoad = std::function<Obj(Unpickler&, Obj)>;
  Unpickler(const std::string& data, size_t pos, std::string source, const ReadLimits& limits, PersistentLoad load)
      : d_(data), p_(pos), source_(std::move(source)), limits_(limits), load_(std::move(load)) {}

  Obj make(PyObj::Kind k) {
    arena_.push_back(std::make_unique<PyObj>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }

  Obj run() {
    for (;;) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                        // PROTO
        case 0x95: take(8); break;                       // FRAME
        case '.': return pop();                          // STOP
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '}': stack_.push_back(make(PyObj::kDict)); break;
        case ']': stack_.push_back(make(PyObj::kList)); break;
        case ')': stack_.push_back(make(PyObj::kTuple)); break;
        case 'N': stack_.push_back(make(PyObj::kNone)); break;
        case 0x88: case 0x89: {
          auto o = make(PyObj::kBool);
          o->i = op == 0x88;
          stack_.push_back(o);
          break;
        }
        case 'K': push_int(byte()); break;
        case 'M': push_int(static_cast<int64_t>(le(2))); break;
        case 'J': push_int(static_cast<int32_t>(le(4))); break;
        case 0x8a: {  // LONG1: n little-endian two's-complement bytes (legacy files' 80-bit magic number)
          const size_t n = byte();
          if (n > 32) fail("an integer of " + std::to_string(n) + " bytes");
          const size_t at = p_;
          take(n);
          uint64_t v = 0;  // the low 64 bits: no state dict needs more
          for (size_t k = 0; k < std::min<size_t>(n, 8); ++k)
            v |= static_cast<uint64_t>(static_cast<uint8_t>(d_[at + k])) << (8 * k);
          if (n > 0 && n < 8 && (static_cast<uint8_t>(d_[at + n - 1]) & 0x80)) v -= uint64_t(1) << (8 * n);
          push_int(static_cast<int64_t>(v));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          const size_t at = p_;
          take(8);
          uint64_t bits = 0;
          for (size_t k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(d_[at + k]);
          auto o = make(PyObj::kFloat);
          std::memcpy(&o->f, &bits, 8);
          stack_.push_back(o);
          break;
        }
        case 'X': push_str(PyObj::kStr, le(4)); break;     // BINUNICODE
        case 0x8c: push_str(PyObj::kStr, byte()); break;   // SHORT_BINUNICODE
        case 0x8d: push_str(PyObj::kStr, le(8)); break;    // BINUNICODE8
        case 'T': push_str(PyObj::kStr, le(4)); break;     // BINSTRING (Python 2)
        case 'U': push_str(PyObj::kStr, byte()); break;    // SHORT_BINSTRING
        case 'B': push_str(PyObj::kBytes, le(4)); break;   // BINBYTES
        case 'C': push_str(PyObj::kBytes, byte()); break;  // SHORT_BINBYTES
        case 0x8e: push_str(PyObj::kBytes, le(8)); break;  // BINBYTES8
        case 'q': memo_[byte()] = top(); break;            // BINPUT
        case 'r': memo_[le(4)] = top(); break;             // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;     // MEMOIZE
        case 'h': stack_.push_back(memo(byte())); break;   // BINGET
        case 'j': stack_.push_back(memo(le(4))); break;    // LONG_BINGET
        case 'c': {                                        // GLOBAL
          auto module = line();
          auto name = line();
          push_global(module, name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          if (name->kind != PyObj::kStr || module->kind != PyObj::kStr) fail("STACK_GLOBAL of a non-string");
          push_global(module->s, name->s);
          break;
        }
        case 't': {
          auto o = make(PyObj::kTuple);
          o->items = pop_mark();
          nest(o, o->items);
          stack_.push_back(o);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          need(n);
          auto o = make(PyObj::kTuple);
          o->items.assign(stack_.end() - static_cast<long>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          nest(o, o->items);
          stack_.push_back(o);
          break;
        }
        case 'l': {
          auto o = make(PyObj::kList);
          o->items = pop_mark();
          nest(o, o->items);
          stack_.push_back(o);
          break;
        }
        case 'd': {
          auto o = make(PyObj::kDict);
          auto items = pop_mark();
          if (items.size() % 2) fail("DICT with an odd number of items");
          for (size_t k = 0; k + 1 < items.size(); k += 2) o->dict.emplace_back(items[k], items[k + 1]);
          nest(o, items);
          stack_.push_back(o);
          break;
        }
        case 'a': {
          auto v = pop();
          auto l = container(PyObj::kList, "APPEND");
          l->items.push_back(v);
          nest(l, {v});
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto l = container(PyObj::kList, "APPENDS");
          l->items.insert(l->items.end(), items.begin(), items.end());
          nest(l, items);
          break;
        }
        case 's': {
          auto v = pop(), k = pop();
          auto t = container(PyObj::kDict, "SETITEM");
          t->dict.emplace_back(k, v);
          nest(t, {k, v});
          break;
        }
        case 'u': {
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          auto t = container(PyObj::kDict, "SETITEMS");
          for (size_t k = 0; k + 1 < items.size(); k += 2) t->dict.emplace_back(items[k], items[k + 1]);
          nest(t, items);
          break;
        }
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': stack_.push_back(top()); break;
        case 'Q': {  // BINPERSID
          auto pid = pop();
          stack_.push_back(load_(*this, pid));
          break;
        }
        case 'R': {  // REDUCE
          auto args = pop(), fn = pop();
          stack_.push_back(reduce(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          auto args = pop(), cls = pop();
          if (cls->kind != PyObj::kGlobal) fail("NEWOBJ of a non-class");
          auto o = make(PyObj::kOther);
          o->s = cls->s;
          o->name = cls->name;
          (void)args;
          stack_.push_back(o);
          break;
        }
        case 'b': pop(); break;  // BUILD: the state of OrderedDict (_metadata) or of objects; not needed
        default: fail("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

  size_t position() const { return p_; }
  [[noreturn]] void fail(const std::string& why) const { corrupt(source_, why + " at byte " + std::to_string(p_)); }

 private:
  static std::string hex(uint8_t v) {
    char b[4];
    std::snprintf(b, sizeof b, "%02x", v);
    return b;
  }
  void take(uint64_t n) {
    if (n > d_.size() - p_) fail("unexpected end of data (truncated file?)");
    p_ += n;
  }
  uint8_t byte() {
    take(1);
    return static_cast<uint8_t>(d_[p_ - 1]);
  }
  uint64_t le(size_t n) {
    take(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(d_[p_ - n + k])) << (8 * k);
    return v;
  }
  std::string line() {
    auto end = d_.find('\n', p_);
    if (end == std::string::npos) fail("unterminated GLOBAL");
    if (end - p_ > 256) fail("a GLOBAL name longer than 256 bytes");
    std::string s = d_.substr(p_, end - p_);
    p_ = end + 1;
    return s;
  }
  void push_global(const std::string& module, const std::string& name) {
    // Refused by name: a weights file has no use for any other callable (os.system, eval, …).
    if (!allowed_global(module, name))
      fail("it names the Python global '" + module + "." + name +
           "', which is not allowed in a weights file (only tensor rebuild functions, OrderedDict and "
           "storages are)");
    auto o = make(PyObj::kGlobal);
    o->s = module;
    o->name = name;
    stack_.push_back(o);
  }
  void push_int(int64_t v) {
    auto o = make(PyObj::kInt);
    o->i = v;
    stack_.push_back(o);
  }
  void push_str(PyObj::Kind k, uint64_t n) {
    if (n > static_cast<uint64_t>(limits_.max_string))
      fail("a string of " + std::to_string(n) + " bytes (more than ReadLimits::max_string, " +
           std::to_string(limits_.max_string) + ")");
    take(n);
    auto o = make(k);
    o->s = d_.substr(p_ - n, n);
    stack_.push_back(o);
  }
  void need(size_t n) const {
    if (stack_.size() < n) fail("pickle stack underflow");
  }
  Obj top() const {
    need(1);
    return stack_.back();
  }
  Obj pop() {
    need(1);
    auto o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Obj container(PyObj::Kind kind, const char* op) {
    auto t = top();
    if (t->kind != kind) fail(std::string(op) + " on a non-" + (kind == PyObj::kList ? "list" : "dict"));
    return t;
  }
  /// Records that `items` now sit inside `o`, refusing nesting beyond the limit.
  void nest(Obj o, const std::vector<Obj>& items) {
    for (auto* c : items) o->depth = std::max(o->depth, c->depth + 1);
    if (o->depth > limits_.max_depth)
      fail("containers nested more than " + std::to_string(limits_.max_depth) + " deep (ReadLimits::max_depth)");
  }
  std::vector<Obj> pop_mark() {
    if (marks_.empty()) fail("pickle MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    if (m > stack_.size()) fail("pickle MARK beyond the stack");
    std::vector<Obj> items(stack_.begin() + static_cast<long>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Obj memo(uint64_t k) const {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("pickle memo entry missing");
    return it->second;
  }
  std::vector<int64_t> ints(Obj o, const char* what) const {
    if (o->kind != PyObj::kTuple && o->kind != PyObj::kList) fail(std::string("malformed tensor record (") + what + ")");
    std::vector<int64_t> out;
    for (auto* v : o->items) {
      if (v->kind != PyObj::kInt) fail(std::string("malformed tensor record (") + what + ")");
      out.push_back(v->i);
    }
    return out;
  }

  Obj reduce(Obj fn, Obj args) {
    if (fn->kind != PyObj::kGlobal) fail("REDUCE on a non-callable");
    const std::string qual = fn->s + "." + fn->name;
    if (qual == "collections.OrderedDict" || qual == "builtins.dict" || qual == "__builtin__.dict") return make(PyObj::kDict);
    if (args->kind != PyObj::kTuple) fail("REDUCE with non-tuple arguments");
    const auto& a = args->items;
    if (qual == "torch._utils._rebuild_tensor_v2" || qual == "torch._utils._rebuild_tensor") {
      if (a.size() < 4 || a[0]->kind != PyObj::kTensor || a[1]->kind != PyObj::kInt) fail("malformed tensor record");
      const auto size = ints(a[2], "size"), stride = ints(a[3], "stride");
      const int64_t offset = a[1]->i;
      if (size.size() != stride.size() || size.size() > 64) fail("malformed tensor record (size and stride)");
      const auto& storage = a[0]->tensor;
      const int64_t numel = checked_numel(size, limits_, source_, "a tensor");
      if (offset < 0) fail("a negative storage offset");
      if (numel > 0) {
        // The last element the view reaches must lie inside its storage.
        std::optional<int64_t> last = offset;
        for (size_t k = 0; k < size.size() && last; ++k) {
          if (stride[k] < 0) fail("a negative stride");
          auto step = mul(size[k] - 1, stride[k]);
          last = step ? add(*last, *step) : std::nullopt;
        }
        if (!last || *last >= storage.numel())
          fail("a tensor reaches past its storage (offset " + std::to_string(offset) + ", storage of " +
               std::to_string(storage.numel()) + " elements)");
      }
      auto t = make(PyObj::kTensor);
      t->tensor = numel > 0 ? storage.as_strided(size, stride, offset)
                            : torch::empty(size, storage.options());
      return t;
    }
    if (qual == "torch.jit._pickle.restore_type_tag") {
      if (a.empty()) fail("malformed type tag");
      return a[0];
    }
    if (qual == "torch._utils._rebuild_parameter" || qual == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != PyObj::kTensor) fail("malformed parameter record");
      return a[0];
    }
    auto o = make(PyObj::kOther);
    o->s = fn->s;
    o->name = fn->name;
    return o;
  }

  const std::string& d_;
  size_t p_;
  std::string source_;
  const ReadLimits& limits_;
  PersistentLoad load_;
  std::vector<std::unique_ptr<PyObj>> arena_;
  std::vector<Obj> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Obj> memo_;
};

torch::ScalarType storage_dtype(const Obj& type, const std::string& source) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"FloatStorage", torch::kFloat},   {"DoubleStorage", torch::kDouble}, {"HalfStorage", torch::kHalf},
      {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kLong}, {"IntStorage", torch::kInt},
      {"ShortStorage", torch::kShort},   {"CharStorage", torch::kChar},     {"ByteStorage", torch::kByte},
      {"BoolStorage", torch::kBool}};
  auto it = type->kind == PyObj::kGlobal ? types.find(type->name) : types.end();
  if (it == types.end()) corrupt(source, "unsupported storage type '" + type->name + "'");
  return it->second;
}

/// The fields of a persistent id ('storage', type, key, location, numel[, view]).
struct StorageRef {
  torch::ScalarType dtype;
  std::string key;
  int64_t numel;
};
StorageRef storage_ref(const Obj& pid, const std::string& source) {
  const auto& a = pid->items;
  if (pid->kind != PyObj::kTuple || a.size() < 5 || a[0]->kind != PyObj::kStr || a[0]->s != "storage" ||
      a[2]->kind != PyObj::kStr || a[4]->kind != PyObj::kInt)
    corrupt(source, "unexpected persistent id");
  return {storage_dtype(a[1], source), a[2]->s, a[4]->i};
}

std::string read_all(const std::string& path) {
  if (std::filesystem::is_directory(path))
    throw std::runtime_error("weights file '" + path + "' is a directory, not a weights file");
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("weights file '" + path + "' does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read weights file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Pulls the tensors out of an unpickled checkpoint (dict, or a dict under 'state_dict'/'model').
std::map<std::string, torch::Tensor> tensors_of(const Obj& root, const std::string& source, int64_t depth = 0) {
  if (root->kind != PyObj::kDict)
    throw std::runtime_error("'" + source + "' does not hold a state dict (its top-level object is not a dict)");
  if (depth > 8) corrupt(source, "state dicts wrapped more than 8 deep");
  for (const char* wrapper : {"state_dict", "model", "model_ema", "module"}) {
    for (auto& kv : root->dict)
      if (kv.first->kind == PyObj::kStr && kv.first->s == wrapper) {
        if (kv.second->kind == PyObj::kDict) return tensors_of(kv.second, source, depth + 1);
        if (kv.second->kind == PyObj::kOther)
          throw std::runtime_error("'" + source + "' holds a pickled module ('" + wrapper +
                                   "'), not a state dict; save model.state_dict() instead");
      }
  }
  std::map<std::string, torch::Tensor> out;
  for (auto& kv : root->dict)
    if (kv.first->kind == PyObj::kStr && kv.second->kind == PyObj::kTensor) out[kv.first->s] = kv.second->tensor;
  if (out.empty()) throw std::runtime_error("'" + source + "' holds no tensors");
  return out;
}

// ---- torch.save zip archives ---------------------------------------------------------------
//
// torch.save writes an uncompressed ZIP archive <name>/data.pkl, <name>/data/<key>, ... A
// bounded reader of our own (rather than caffe2's PyTorchStreamReader, which allocates whatever
// size an entry claims) checks every size and offset against the bytes actually there.

uint64_t le_at(const std::string& d, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(d[at + k])) << (8 * k);
  return v;
}

class ZipArchive {
 public:
  ZipArchive(const std::string& data, std::string source) : d_(data), source_(std::move(source)) {
    // The end-of-central-directory record: 22 bytes and a comment of up to 65535.
    const size_t n = d_.size();
    size_t eocd = std::string::npos;
    for (size_t back = 22; back <= std::min<size_t>(n, 22 + 65535); ++back)
      if (le_at(d_, n - back, 4) == 0x06054b50) {
        eocd = n - back;
        break;
      }
    if (eocd == std::string::npos) fail("no ZIP directory at its end (truncated file?)");
    uint64_t entries = le_at(d_, eocd + 10, 2), cd_size = le_at(d_, eocd + 12, 4), cd_offset = le_at(d_, eocd + 16, 4);
    if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
      // ZIP64: a locator just before the record points to the 64-bit directory record.
      if (eocd < 20 || le_at(d_, eocd - 20, 4) != 0x07064b50) fail("a ZIP64 archive without its locator");
      const uint64_t at = le_at(d_, eocd - 20 + 8, 8);
      if (at > n || n - at < 56 || le_at(d_, at, 4) != 0x06064b50) fail("a ZIP64 directory record out of place");
      entries = le_at(d_, at + 32, 8);
      cd_size = le_at(d_, at + 40, 8);
      cd_offset = le_at(d_, at + 48, 8);
    }
    if (cd_offset > n || cd_size > n - cd_offset) fail("a ZIP directory beyond the end of the file");
    if (entries > cd_size / 46) fail("a ZIP directory that claims more entries than it holds");
    size_t p = cd_offset;
    const size_t end = cd_offset + cd_size;
    for (uint64_t e = 0; e < entries; ++e) {
      if (end - p < 46 || le_at(d_, p, 4) != 0x02014b50) fail("a corrupt ZIP directory entry");
      const uint64_t method = le_at(d_, p + 10, 2);
      uint64_t comp = le_at(d_, p + 20, 4), size = le_at(d_, p + 24, 4);
      const size_t name_len = le_at(d_, p + 28, 2), extra_len = le_at(d_, p + 30, 2), comment_len = le_at(d_, p + 32, 2);
      uint64_t local = le_at(d_, p + 42, 4);
      if (end - p - 46 < name_len + extra_len + comment_len) fail("a ZIP directory entry beyond the directory");
      const std::string name = d_.substr(p + 46, name_len);
      // ZIP64 sizes and offset, in the extra field, for the fields marked 0xFFFFFFFF.
      for (size_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
        const uint64_t id = le_at(d_, x, 2), len = le_at(d_, x + 2, 2);
        if (x + 4 + len > p + 46 + name_len + extra_len) fail("a corrupt ZIP extra field");
        if (id == 1) {
          size_t f = x + 4;
          auto next = [&](uint64_t& v) {
            if (v != 0xFFFFFFFF) return;
            if (f + 8 > x + 4 + len) fail("a short ZIP64 extra field");
            v = le_at(d_, f, 8);
            f += 8;
          };
          next(size);
          next(comp);
          next(local);
        }
        x += 4 + len;
      }
      // torch.jit.save (and torch::serialize::OutputArchive, which libnordf's checkpoints use)
      // writes code and constants beside the data: a module, not a state dict.
      if (name.find("/code/__torch__") != std::string::npos || (name.size() >= 14 && name.compare(name.size() - 14, 14, "/constants.pkl") == 0))
        fail("it is a TorchScript archive (torch.jit.save, or a libnordf training checkpoint), not a state dict "
             "saved with torch.save; a libnordf run's checkpoint is resumed with --resume or read with "
             "load_checkpoint_model");
      if (method != 0) fail("entry '" + name + "' is compressed (torch.save stores entries uncompressed)");
      if (comp != size) fail("entry '" + name + "' has different stored and actual sizes");
      if (local > n || n - local < 30 || le_at(d_, local, 4) != 0x04034b50) fail("entry '" + name + "' has no local header");
      const uint64_t data = local + 30 + le_at(d_, local + 26, 2) + le_at(d_, local + 28, 2);
      if (data > n || size > n - data) fail("entry '" + name + "' reaches past the end of the file (truncated?)");
      entries_[name] = {static_cast<size_t>(data), static_cast<size_t>(size)};
      p += 46 + name_len + extra_len + comment_len;
    }
    // torch.save names every record <archive>/<record>.
    for (const auto& kv : entries_) {
      const auto slash = kv.first.find('/');
      if (slash != std::string::npos && kv.first.substr(slash + 1) == "data.pkl") prefix_ = kv.first.substr(0, slash + 1);
    }
    if (prefix_.empty() && !entries_.count("data.pkl")) fail("a ZIP archive without data.pkl (not a torch.save file)");
  }

  /// The bytes of `record` (data.pkl, data/<key>): (offset, size) in the file.
  std::pair<size_t, size_t> record(const std::string& name) const {
    auto it = entries_.find(prefix_ + name);
    if (it == entries_.end()) fail("record '" + name + "' is missing");
    return it->second;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { corrupt(source_, why); }
  const std::string& d_;
  std::string source_, prefix_;
  std::map<std::string, std::pair<size_t, size_t>> entries_;
};

std::map<std::string, torch::Tensor> read_torch_zip(const std::string& data, const std::string& source,
                                                    const ReadLimits& limits) {
  ZipArchive zip(data, source);
  const auto [pkl_at, pkl_size] = zip.record("data.pkl");
  const std::string pkl = data.substr(pkl_at, pkl_size);
  std::map<std::string, torch::Tensor> storages;
  Unpickler up(pkl, 0, source, limits, [&](Unpickler& u, Obj pid) -> Obj {
    const auto ref = storage_ref(pid, source);
    auto it = storages.find(ref.key);
    if (it == storages.end()) {
      const auto [at, size] = zip.record("data/" + ref.key);
      const size_t elem = c10::elementSize(ref.dtype);
      if (size % elem != 0) corrupt(source, "storage data/" + ref.key + " is not a whole number of elements");
      const int64_t numel = static_cast<int64_t>(size / elem);
      checked_numel({numel}, limits, source, "storage data/" + ref.key);
      auto t = torch::empty({numel}, torch::TensorOptions().dtype(ref.dtype));
      if (size) std::memcpy(t.data_ptr(), data.data() + at, size);
      it = storages.emplace(ref.key, t).first;
    }
    auto o = u.make(PyObj::kTensor);
    o->tensor = it->second;
    return o;
  });
  return tensors_of(up.run(), source);
}

std::map<std::string, torch::Tensor> read_torch_legacy(const std::string& data, const std::string& source,
                                                       const ReadLimits& limits) {
  // Pre-1.6 torch.save: pickles of (magic number, protocol version, sys info, object, storage
  // keys), then for each storage key its element count (int64 LE) and raw bytes.
  size_t pos = 0;
  auto none = [&](Unpickler&, Obj) -> Obj { corrupt(source, "unexpected persistent id"); };
  Unpickler magic(data, pos, source, limits, none);
  const Obj m = magic.run();
  pos = magic.position();
  Unpickler protocol(data, pos, source, limits, none);
  const Obj version = protocol.run();
  pos = protocol.position();
  if (m->kind != PyObj::kInt || version->kind != PyObj::kInt || version->i != 1001)
    throw std::runtime_error("'" + source + "' is not a PyTorch checkpoint (no torch.save header)");
  Unpickler sys_info(data, pos, source, limits, none);
  sys_info.run();
  pos = sys_info.position();
  struct Pending {
    torch::ScalarType dtype;
    int64_t numel;
    torch::Tensor tensor;
  };
  std::map<std::string, Pending> storages;
  Unpickler body(data, pos, source, limits, [&](Unpickler& u, Obj pid) -> Obj {
    const auto ref = storage_ref(pid, source);
    auto it = storages.find(ref.key);
    if (it == storages.end()) {
      // The bytes follow the pickles, so a storage can be no larger than the file.
      const int64_t numel = checked_numel({ref.numel}, limits, source, "storage " + ref.key);
      if (static_cast<uint64_t>(numel) > data.size() / c10::elementSize(ref.dtype))
        corrupt(source, "storage " + ref.key + " claims " + std::to_string(numel) + " elements, more than the file holds");
      it = storages.emplace(ref.key, Pending{ref.dtype, numel, torch::empty({numel}, torch::TensorOptions().dtype(ref.dtype))})
               .first;
    } else if (it->second.dtype != ref.dtype || it->second.numel != ref.numel) {
      corrupt(source, "storage " + ref.key + " is declared twice, differently");
    }
    torch::Tensor view = it->second.tensor;
    const auto& a = pid->items;
    if (a.size() > 5 && a[5]->kind == PyObj::kTuple && a[5]->items.size() >= 3) {  // (view key, offset, size)
      const auto* off = a[5]->items[1];
      const auto* len = a[5]->items[2];
      if (off->kind != PyObj::kInt || len->kind != PyObj::kInt || off->i < 0 || len->i < 0 ||
          off->i > it->second.numel || len->i > it->second.numel - off->i)
        corrupt(source, "a storage view outside storage " + ref.key);
      view = view.narrow(0, off->i, len->i);
    }
    auto o = u.make(PyObj::kTensor);
    o->tensor = view;
    return o;
  });
  Obj root = body.run();
  pos = body.position();
  Unpickler keys_up(data, pos, source, limits, none);
  Obj keys = keys_up.run();
  pos = keys_up.position();
  if (keys->kind != PyObj::kList && keys->kind != PyObj::kTuple) corrupt(source, "the storage key list is malformed");
  for (const auto& k : keys->items) {
    auto it = storages.find(k->s);
    if (k->kind != PyObj::kStr || it == storages.end())
      corrupt(source, "storage '" + k->s + "' is listed but never referenced");
    if (data.size() - pos < 8) throw std::runtime_error("'" + source + "' is truncated (storage " + k->s + ")");
    int64_t n;
    std::memcpy(&n, data.data() + pos, 8);
    pos += 8;
    const size_t bytes = static_cast<size_t>(it->second.numel) * c10::elementSize(it->second.dtype);
    if (n != it->second.numel || bytes > data.size() - pos)
      throw std::runtime_error("'" + source + "' is truncated or corrupt (storage " + k->s + ")");
    if (bytes) std::memcpy(it->second.tensor.data_ptr(), data.data() + pos, bytes);
    pos += bytes;
  }
  return tensors_of(root, source);
}

// ---- safetensors -----------------------------------------------------------------------------

std::map<std::string, torch::Tensor> read_safetensors(const std::string& data, const std::string& source,
                                                      const ReadLimits& limits) {
  if (data.size() < 8) corrupt(source, "shorter than a safetensors header");
  const uint64_t n = le_at(data, 0, 8);
  if (n > static_cast<uint64_t>(limits.max_header))
    corrupt(source, "a safetensors header of " + std::to_string(n) + " bytes (more than ReadLimits::max_header, " +
                        std::to_string(limits.max_header) + ")");
  if (n > data.size() - 8) corrupt(source, "truncated (the safetensors header claims " + std::to_string(n) + " bytes)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.begin() + 8, data.begin() + 8 + static_cast<long>(n));
  } catch (const std::exception& e) {
    corrupt(source, std::string("invalid safetensors header: ") + e.what());
  }
  if (!header.is_object()) corrupt(source, "the safetensors header is not a JSON object");
  static const std::map<std::string, torch::ScalarType> types = {
      {"F32", torch::kFloat}, {"F16", torch::kHalf}, {"BF16", torch::kBFloat16}, {"F64", torch::kDouble},
      {"I64", torch::kLong},  {"I32", torch::kInt},  {"I16", torch::kShort},     {"I8", torch::kChar},
      {"U8", torch::kByte},   {"BOOL", torch::kBool}};
  const uint64_t body = data.size() - 8 - n;
  struct Entry {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& e = it.value();
    const std::string what = "tensor '" + it.key() + "'";
    if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() || !e.contains("shape") ||
        !e["shape"].is_array() || !e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2)
      corrupt(source, what + " lacks a dtype, a shape or two data_offsets");
    auto type = types.find(e["dtype"].get<std::string>());
    if (type == types.end()) corrupt(source, what + " has unsupported dtype " + e["dtype"].dump());
    Entry en{it.key(), type->second, {}, 0, 0};
    if (e["shape"].size() > 64) corrupt(source, what + " has more than 64 dimensions");
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() && !d.is_number_unsigned()) corrupt(source, what + " has a non-integer size");
      if (d.is_number_unsigned() && d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) corrupt(source, what + " has a size beyond 2^63");
      en.shape.push_back(d.get<int64_t>());
    }
    for (const auto& o : e["data_offsets"])
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
        corrupt(source, what + " has a negative or non-integer data offset");
    en.begin = e["data_offsets"][0].get<uint64_t>();
    en.end = e["data_offsets"][1].get<uint64_t>();
    const int64_t numel = checked_numel(en.shape, limits, source, what);
    const auto bytes = mul(numel, static_cast<int64_t>(c10::elementSize(en.dtype)));
    if (en.begin > en.end || en.end > body)
      corrupt(source, what + " has data offsets [" + std::to_string(en.begin) + ", " + std::to_string(en.end) +
                          "] outside the " + std::to_string(body) + " data bytes");
    if (!bytes || static_cast<uint64_t>(*bytes) != en.end - en.begin)
      corrupt(source, what + " has data offsets that do not fit its shape and dtype");
    entries.push_back(std::move(en));
  }
  // The byte ranges of the tensors may not overlap (the format requires it).
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t k = 1; k < by_offset.size(); ++k)
    if (by_offset[k]->begin < by_offset[k - 1]->end && by_offset[k]->end > by_offset[k]->begin)
      corrupt(source, "tensors '" + by_offset[k - 1]->name + "' and '" + by_offset[k]->name + "' overlap");
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data.data() + 8 + n + e.begin, e.end - e.begin);
    out[e.name] = t;
  }
  if (out.empty()) throw std::runtime_error("'" + source + "' holds no tensors");
  return out;
}

std::map<std::string, torch::Tensor> strip_module_prefix(std::map<std::string, torch::Tensor> in, const std::string& source) {
  std::map<std::string, torch::Tensor> out;
  std::map<std::string, std::string> from;  // stripped key → the file's key
  for (auto& kv : in) {
    std::string k = kv.first;
    while (k.rfind("module.", 0) == 0) k = k.substr(7);
    const auto [it, fresh] = from.emplace(k, kv.first);
    if (!fresh)
      throw std::runtime_error("'" + source + "': the keys '" +
                               (it->second.size() > kv.first.size() ? it->second : kv.first) + "' and '" +
                               (it->second.size() > kv.first.size() ? kv.first : it->second) + "' both name '" + k +
                               "' (a DataParallel 'module.' prefix is dropped); which one to load is ambiguous");
    out[k] = kv.second;
  }
  return out;
}

// timm's ConvNeXt-V2 names → the official layout libnordf uses.
std::string timm_to_official(const std::string& key) {
  static const std::vector<std::pair<std::regex, std::string>> rules = {
      {std::regex(R"(^stem\.(\d)\.)"), "downsample_layers.0.$1."},
      {std::regex(R"(^stages\.(\d+)\.downsample\.(\d)\.)"), "downsample_layers.$1.$2."},
      {std::regex(R"(^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.)"), "stages.$1.$2.dwconv."},
      {std::regex(R"(^stages\.(\d+)\.blocks\.(\d+)\.norm\.)"), "stages.$1.$2.norm."},
      {std::regex(R"(^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.)"), "stages.$1.$2.pwconv1."},
      {std::regex(R"(^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.)"), "stages.$1.$2.pwconv2."},
      {std::regex(R"(^stages\.(\d+)\.blocks\.(\d+)\.mlp\.grn\.(weight|gamma)$)"), "stages.$1.$2.grn.gamma"},
      {std::regex(R"(^stages\.(\d+)\.blocks\.(\d+)\.mlp\.grn\.(bias|beta)$)"), "stages.$1.$2.grn.beta"},
      {std::regex(R"(^head\.)"), "head."},
  };
  for (const auto& r : rules)
    if (std::regex_search(key, r.first)) return std::regex_replace(key, r.first, r.second, std::regex_constants::format_first_only);
  return key;
}

// The official layout's name → timm's, for messages about a timm file (the inverse of the above).
std::string official_to_timm(const std::string& key) {
  static const std::vector<std::pair<std::regex, std::string>> rules = {
      {std::regex(R"(^downsample_layers\.0\.(\d)\.)"), "stem.$1."},
      {std::regex(R"(^downsample_layers\.(\d+)\.(\d)\.)"), "stages.$1.downsample.$2."},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.dwconv\.)"), "stages.$1.blocks.$2.conv_dw."},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.norm\.)"), "stages.$1.blocks.$2.norm."},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.pwconv1\.)"), "stages.$1.blocks.$2.mlp.fc1."},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.pwconv2\.)"), "stages.$1.blocks.$2.mlp.fc2."},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.grn\.gamma$)"), "stages.$1.blocks.$2.mlp.grn.weight"},
      {std::regex(R"(^stages\.(\d+)\.(\d+)\.grn\.beta$)"), "stages.$1.blocks.$2.mlp.grn.bias"},
  };
  for (const auto& r : rules)
    if (std::regex_search(key, r.first)) return std::regex_replace(key, r.first, r.second, std::regex_constants::format_first_only);
  return key;
}

bool is_dropped_head(const std::string& key) {
  return key.rfind("classifier.", 0) == 0 || key.rfind("head.", 0) == 0 || key.rfind("heads.", 0) == 0 ||
         key.rfind("norm.", 0) == 0 || key.rfind("fc.", 0) == 0 || key.rfind("fc_norm.", 0) == 0;
}

// torchvision's VisionTransformer names → timm's, which libnordf's ViT uses.
std::string torchvision_vit_to_timm(const std::string& key) {
  static const std::vector<std::pair<std::regex, std::string>> rules = {
      {std::regex(R"(^class_token$)"), "cls_token"},
      {std::regex(R"(^conv_proj\.)"), "patch_embed.proj."},
      {std::regex(R"(^encoder\.pos_embedding$)"), "pos_embed"},
      {std::regex(R"(^encoder\.ln\.)"), "norm."},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.)"), "blocks.$1.norm1."},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.)"), "blocks.$1.norm2."},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_weight$)"), "blocks.$1.attn.qkv.weight"},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_bias$)"), "blocks.$1.attn.qkv.bias"},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.)"), "blocks.$1.attn.proj."},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(0|linear_1)\.)"), "blocks.$1.mlp.fc1."},
      {std::regex(R"(^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(3|linear_2)\.)"), "blocks.$1.mlp.fc2."},
  };
  for (const auto& r : rules)
    if (std::regex_search(key, r.first)) return std::regex_replace(key, r.first, r.second, std::regex_constants::format_first_only);
  return key;
}

std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

std::string LoadReport::summary() const {
  std::ostringstream o;
  o << format << " (" << layout << "): loaded " << loaded.size() << " tensors";
  if (!converted.empty()) o << " (" << converted.size() << " converted to the model's dtype)";
  if (!resampled.empty()) o << " (" << resampled.front() << " resampled to the model's grid)";
  o << ", skipped " << skipped.size();
  if (!skipped.empty()) o << " [" << skipped.front() << (skipped.size() > 1 ? ", …]" : "]");
  o << ", left at init " << missing.size();
  if (!missing.empty()) o << " [" << missing.front() << (missing.size() > 1 ? ", …]" : "]");
  return o.str();
}

namespace {

std::map<std::string, torch::Tensor> parse_any(const std::string& data, const std::string& source,
                                               const ReadLimits& limits, std::string& format) {
  if (data.size() < 8) throw std::runtime_error("'" + source + "' is too short to be a weights file");
  if (data.compare(0, 4, "PK\x03\x04") == 0) {
    format = "torch-zip";
    return strip_module_prefix(read_torch_zip(data, source, limits), source);
  }
  // safetensors: a JSON header after its 8-byte length. A length whose low byte is 0x80 could also
  // be a pickle's PROTO opcode, so a header that does not fit the file is read as one only when
  // the file does not start like a pickle.
  const uint64_t n = le_at(data, 0, 8);
  if (data.size() > 8 && data[8] == '{' && (n <= data.size() - 8 || static_cast<uint8_t>(data[0]) != 0x80)) {
    format = "safetensors";
    return strip_module_prefix(read_safetensors(data, source, limits), source);
  }
  if (static_cast<uint8_t>(data[0]) == 0x80) {
    format = "torch-legacy";
    return strip_module_prefix(read_torch_legacy(data, source, limits), source);
  }
  throw std::runtime_error("'" + source + "' is not a PyTorch checkpoint or a .safetensors file");
}

}  // namespace

std::map<std::string, torch::Tensor> parse_state_dict(const std::string& bytes, const std::string& source,
                                                      const ReadLimits& limits) {
  std::string format;
  return parse_any(bytes, source, limits, format);
}

std::map<std::string, torch::Tensor> read_state_dict(const std::string& path, const ReadLimits& limits) {
  std::string format;
  return parse_any(read_all(path), path, limits, format);
}

LoadReport load_state_dict(torch::nn::Module& module, std::map<std::string, torch::Tensor> state,
                           const std::string& source, const LoadWeightsOptions& options) {
  LoadReport report;
  report.layout = "direct";
  bool timm = false;
  for (auto& kv : state)
    if (kv.first.rfind("stem.", 0) == 0 || kv.first.find(".blocks.") != std::string::npos) timm = true;
  bool tv_vit = false;
  for (auto& kv : state)
    if (kv.first.rfind("encoder.layers.encoder_layer_", 0) == 0) tv_vit = true;
  std::map<std::string, std::string> file_key;  // the module's name → the file's, where they differ
  auto map_keys = [&](const auto& rename) {
    std::map<std::string, torch::Tensor> mapped;
    std::map<std::string, std::string> from;
    for (auto& kv : state) {
      const auto k = rename(kv.first);
      const auto [it, fresh] = from.emplace(k, kv.first);
      if (!fresh)
        throw std::runtime_error("'" + source + "': the keys '" + it->second + "' and '" + kv.first + "' both name '" + k +
                                 "' in the " + report.layout + " layout; which one to load is ambiguous");
      if (k != kv.first) file_key[k] = kv.first;
      mapped[k] = kv.second;
    }
    state.swap(mapped);
  };
  if (tv_vit) {
    report.layout = "torchvision-vit";
    map_keys(torchvision_vit_to_timm);
  } else if (timm) {
    report.layout = "timm-convnextv2";
    map_keys(timm_to_official);
  }
  // How the file names (or would name) a key of the module, for messages.
  auto as_in_file = [&](const std::string& key) -> std::string {
    if (auto it = file_key.find(key); it != file_key.end()) return " (the file's '" + it->second + "')";
    if (report.layout == "timm-convnextv2" && official_to_timm(key) != key)
      return " (timm's '" + official_to_timm(key) + "': the file's keys are in timm's ConvNeXt-V2 layout)";
    if (report.layout == "torchvision-vit") return " (the file's keys are in torchvision's ViT layout)";
    return "";
  };
  auto params = module.named_parameters(/*recurse=*/true);
  auto buffers = module.named_buffers(/*recurse=*/true);
  std::map<std::string, torch::Tensor> targets;
  for (auto& kv : params) targets[kv.key()] = kv.value();
  for (auto& kv : buffers) targets[kv.key()] = kv.value();

  // Match and check everything first, so a failed strict load leaves the module untouched.
  std::set<std::string> used;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (destination, source)
  for (auto& kv : targets) {
    auto it = state.find(kv.first);
    if (it == state.end()) {
      if (options.strict())
        throw std::runtime_error("'" + source + "': missing key '" + kv.first + "' (expected shape " +
                                 shape_str(kv.second.sizes()) + ")" + as_in_file(kv.first));
      report.missing.push_back(kv.first);
      continue;
    }
    torch::Tensor src = it->second;
    auto& dst = kv.second;
    const bool pos_embed = kv.first == "pos_embed" ||
                           (kv.first.size() > 10 && kv.first.compare(kv.first.size() - 10, 10, ".pos_embed") == 0);
    if (pos_embed && src.sizes() != dst.sizes() && src.dim() == 3 && dst.dim() == 3 && src.size(2) == dst.size(2)) {
      // A ViT checkpoint for another input side: resample its grid to the model's, as timm does.
      const auto g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(dst.size(1) - 1))));
      src = resample_pos_embed(src, g, g, "'" + source + "': '" + kv.first + "'");
      report.resampled.push_back(kv.first);
    }
    if (src.sizes() != dst.sizes()) {
      // Same values in another singleton layout: timm's GRN [C] vs [1,1,1,C], and conv-MLP 1×1
      // convolutions [O,I,1,1] vs Linear [O,I]. Anything else is a mismatch.
      auto squeeze = [](c10::IntArrayRef s) {
        std::vector<int64_t> out;
        for (auto d : s)
          if (d != 1) out.push_back(d);
        return out;
      };
      if (squeeze(src.sizes()) == squeeze(dst.sizes())) {
        src = src.reshape(dst.sizes());
      } else {
        throw std::runtime_error("'" + source + "': shape mismatch for '" + kv.first + "'" + as_in_file(kv.first) +
                                 ": file " + shape_str(it->second.sizes()) + ", model " + shape_str(dst.sizes()));
      }
    }
    if (dst.is_floating_point() && !src.is_floating_point())
      throw std::runtime_error("'" + source + "': tensor '" + kv.first + "'" + as_in_file(kv.first) + " is " +
                               std::string(c10::toString(src.scalar_type())) + ", not floating point like the model's " +
                               std::string(c10::toString(dst.scalar_type())) + " (not a weights file of this model?)");
    if (src.is_floating_point()) {
      const int64_t bad = src.numel() - torch::isfinite(src).sum().item<int64_t>();
      if (bad > 0)
        throw std::runtime_error("'" + source + "': tensor '" + kv.first + "'" + as_in_file(kv.first) + " holds " +
                                 std::to_string(bad) + " non-finite value" + (bad > 1 ? "s" : "") + " (NaN or infinity)");
    }
    if (src.scalar_type() != dst.scalar_type() && src.is_floating_point()) report.converted.push_back(kv.first);
    copies.emplace_back(dst, src);
    used.insert(it->first);
    report.loaded.push_back(kv.first);
  }
  for (auto& kv : state) {
    if (used.count(kv.first)) continue;
    if (options.strict() && !is_dropped_head(kv.first))
      throw std::runtime_error("'" + source + "': unexpected key '" + kv.first + "' (shape " +
                               shape_str(kv.second.sizes()) + ") has no place in the model");
    report.skipped.push_back(kv.first);
  }
  torch::NoGradGuard no_grad;
  for (auto& c : copies) c.first.copy_(c.second.to(c.first.device(), c.first.scalar_type()));
  return report;
}

LoadReport load_weights(torch::nn::Module& module, const std::string& path, const LoadWeightsOptions& options) {
  std::string format;
  auto state = parse_any(read_all(path), path, options.limits(), format);
  auto report = load_state_dict(module, std::move(state), path, options);
  report.format = format;
  return report;
}

}  // namespace nordf
