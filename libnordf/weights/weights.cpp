#include <libnordf/weights/weights.h>

#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nordf {

namespace {

// ---- a minimal unpickler for torch.save files ----------------------------------------------
//
// LibTorch's own pickle_load cannot read the collections.OrderedDict that model.state_dict()
// returns (LibTorch 1.13: "Expected GenericDict but got None"), so libnordf reads the pickle
// stream itself. It supports the opcodes that torch.save emits (protocols 2–5) and rebuilds
// tensors through torch._utils._rebuild_tensor_v2 / _rebuild_parameter, resolving storages
// through a callback.

struct PyObj;
using Obj = std::shared_ptr<PyObj>;

struct PyObj {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kGlobal, kTensor, kOther } kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s, name;  // str/bytes value; global: s = module, name = name
  std::vector<Obj> items;
  std::vector<std::pair<Obj, Obj>> dict;
  torch::Tensor tensor;
};

Obj make(PyObj::Kind k) {
  auto o = std::make_shared<PyObj>();
  o->kind = k;
  return o;
}

class Unpickler {
 public:
  using PersistentLoad = std::function<Obj(const Obj&)>;
  Unpickler(const std::string& data, size_t pos, std::string source, PersistentLoad load)
      : d_(data), p_(pos), source_(std::move(source)), load_(std::move(load)) {}

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
        case 'M': push_int(le(2)); break;
        case 'J': push_int(static_cast<int32_t>(le(4))); break;
        case 0x8a: {  // LONG1
          const size_t n = byte();
          int64_t v = 0;
          for (size_t k = 0; k < n && k < 8; ++k) v |= static_cast<int64_t>(static_cast<uint8_t>(d_[p_ + k])) << (8 * k);
          if (n > 0 && n < 8 && (static_cast<uint8_t>(d_[p_ + n - 1]) & 0x80)) v -= int64_t(1) << (8 * n);
          take(n);
          push_int(v);
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(d_[p_ + static_cast<size_t>(k)]);
          take(8);
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
          auto o = make(PyObj::kGlobal);
          o->s = line();
          o->name = line();
          stack_.push_back(o);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          auto o = make(PyObj::kGlobal);
          o->s = module->s;
          o->name = name->s;
          stack_.push_back(o);
          break;
        }
        case 't': {
          auto o = make(PyObj::kTuple);
          o->items = pop_mark();
          stack_.push_back(o);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          auto o = make(PyObj::kTuple);
          need(n);
          o->items.assign(stack_.end() - static_cast<long>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          stack_.push_back(o);
          break;
        }
        case 'l': {
          auto o = make(PyObj::kList);
          o->items = pop_mark();
          stack_.push_back(o);
          break;
        }
        case 'd': {
          auto o = make(PyObj::kDict);
          auto items = pop_mark();
          for (size_t k = 0; k + 1 < items.size(); k += 2) o->dict.emplace_back(items[k], items[k + 1]);
          stack_.push_back(o);
          break;
        }
        case 'a': {
          auto v = pop();
          top()->items.push_back(v);
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto& l = top()->items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case 's': {
          auto v = pop(), k = pop();
          top()->dict.emplace_back(k, v);
          break;
        }
        case 'u': {
          auto items = pop_mark();
          auto t = top();
          for (size_t k = 0; k + 1 < items.size(); k += 2) t->dict.emplace_back(items[k], items[k + 1]);
          break;
        }
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': stack_.push_back(top()); break;
        case 'Q': stack_.push_back(load_(pop())); break;  // BINPERSID
        case 'R': {                                        // REDUCE
          auto args = pop(), fn = pop();
          stack_.push_back(reduce(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          auto args = pop(), cls = pop();
          auto o = make(PyObj::kOther);
          o->s = cls->s;
          o->name = cls->name;
          stack_.push_back(o);
          break;
        }
        case 'b': pop(); break;  // BUILD: state of OrderedDict (_metadata) or of objects; not needed
        default: fail("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

  size_t position() const { return p_; }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("'" + source_ + "' is not a readable checkpoint: " + why + " at byte " + std::to_string(p_));
  }
  static std::string hex(uint8_t v) {
    char b[4];
    std::snprintf(b, sizeof b, "%02x", v);
    return b;
  }
  void take(size_t n) {
    if (p_ + n > d_.size()) fail("unexpected end of data (truncated file?)");
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
    std::string s = d_.substr(p_, end - p_);
    p_ = end + 1;
    return s;
  }
  void push_int(int64_t v) {
    auto o = make(PyObj::kInt);
    o->i = v;
    stack_.push_back(o);
  }
  void push_str(PyObj::Kind k, uint64_t n) {
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
  std::vector<Obj> pop_mark() {
    if (marks_.empty()) fail("pickle MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj> items(stack_.begin() + static_cast<long>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Obj memo(uint64_t k) const {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("pickle memo entry missing");
    return it->second;
  }

  Obj reduce(const Obj& fn, const Obj& args) {
    if (fn->kind != PyObj::kGlobal) fail("REDUCE on a non-callable");
    const std::string qual = fn->s + "." + fn->name;
    if (qual == "collections.OrderedDict" || qual == "builtins.dict" || qual == "__builtin__.dict") return make(PyObj::kDict);
    if (qual == "torch._utils._rebuild_tensor_v2" || qual == "torch._utils._rebuild_tensor") {
      const auto& a = args->items;
      if (a.size() < 4 || a[0]->kind != PyObj::kTensor) fail("malformed tensor record");
      std::vector<int64_t> size, stride;
      for (auto& v : a[2]->items) size.push_back(v->i);
      for (auto& v : a[3]->items) stride.push_back(v->i);
      auto t = make(PyObj::kTensor);
      const auto& storage = a[0]->tensor;
      int64_t extent = 1;
      for (size_t k = 0; k < size.size(); ++k) extent += (size[k] - 1) * stride[k];
      if (std::find(size.begin(), size.end(), 0) == size.end() && a[1]->i + extent > storage.numel())
        fail("tensor exceeds its storage");
      t->tensor = storage.as_strided(size, stride, a[1]->i);
      return t;
    }
    if (qual == "torch._utils._rebuild_parameter" || qual == "torch._utils._rebuild_parameter_with_state") {
      if (args->items.empty() || args->items[0]->kind != PyObj::kTensor) fail("malformed parameter record");
      return args->items[0];
    }
    auto o = make(PyObj::kOther);
    o->s = fn->s;
    o->name = fn->name;
    return o;
  }

  const std::string& d_;
  size_t p_;
  std::string source_;
  PersistentLoad load_;
  std::vector<Obj> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Obj> memo_;
};

torch::ScalarType storage_dtype(const std::string& name, const std::string& source) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"FloatStorage", torch::kFloat},   {"DoubleStorage", torch::kDouble}, {"HalfStorage", torch::kHalf},
      {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kLong}, {"IntStorage", torch::kInt},
      {"ShortStorage", torch::kShort},   {"CharStorage", torch::kChar},     {"ByteStorage", torch::kByte},
      {"BoolStorage", torch::kBool}};
  auto it = types.find(name);
  if (it == types.end()) throw std::runtime_error("'" + source + "': unsupported storage type '" + name + "'");
  return it->second;
}

std::string read_all(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("weights file '" + path + "' does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read weights file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Pulls the tensors out of an unpickled checkpoint (dict, or a dict under 'state_dict'/'model').
std::map<std::string, torch::Tensor> tensors_of(const Obj& root, const std::string& source) {
  if (root->kind != PyObj::kDict)
    throw std::runtime_error("'" + source + "' does not hold a state dict (its top-level object is not a dict)");
  for (const char* wrapper : {"state_dict", "model", "model_ema", "module"}) {
    for (auto& kv : root->dict)
      if (kv.first->kind == PyObj::kStr && kv.first->s == wrapper) {
        if (kv.second->kind == PyObj::kDict) return tensors_of(kv.second, source);
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

Obj storage_obj(torch::Tensor t) {
  auto o = make(PyObj::kTensor);
  o->tensor = std::move(t);
  return o;
}

std::map<std::string, torch::Tensor> read_torch_zip(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  std::string pkl;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    at::DataPtr ptr;
    size_t size;
    std::tie(ptr, size) = reader->getRecord("data.pkl");
    pkl.assign(static_cast<const char*>(ptr.get()), size);
  } catch (const c10::Error& e) {
    throw std::runtime_error("'" + path + "' is not a readable PyTorch zip checkpoint (truncated?): " +
                             std::string(e.what_without_backtrace()).substr(0, 200));
  }
  std::map<std::string, torch::Tensor> storages;
  Unpickler up(pkl, 0, path, [&](const Obj& pid) -> Obj {
    const auto& a = pid->items;
    if (pid->kind != PyObj::kTuple || a.size() < 5 || a[0]->s != "storage")
      throw std::runtime_error("'" + path + "': unexpected persistent id");
    const auto dtype = storage_dtype(a[1]->name, path);
    const std::string key = a[2]->s;
    auto it = storages.find(key);
    if (it == storages.end()) {
      try {
        at::DataPtr ptr;
        size_t size;
        std::tie(ptr, size) = reader->getRecord("data/" + key);
        const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
        auto t = torch::empty({static_cast<int64_t>(size) / elem}, torch::TensorOptions().dtype(dtype));
        std::memcpy(t.data_ptr(), ptr.get(), size);
        it = storages.emplace(key, t).first;
      } catch (const c10::Error& e) {
        throw std::runtime_error("'" + path + "': storage data/" + key + " is missing or truncated");
      }
    }
    return storage_obj(it->second);
  });
  return tensors_of(up.run(), path);
}

std::map<std::string, torch::Tensor> read_torch_legacy(const std::string& path, const std::string& data) {
  // Pre-1.6 torch.save: pickles of (magic number, protocol version, sys info, object, storage
  // keys), then for each storage key its element count (int64 LE) and raw bytes.
  size_t pos = 0;
  auto none = [&](const Obj&) -> Obj { throw std::runtime_error("'" + path + "': unexpected persistent id"); };
  Unpickler magic(data, pos, path, none);
  const Obj m = magic.run();
  pos = magic.position();
  Unpickler protocol(data, pos, path, none);
  const Obj version = protocol.run();
  pos = protocol.position();
  if (m->kind != PyObj::kInt || version->kind != PyObj::kInt || version->i != 1001)
    throw std::runtime_error("'" + path + "' is not a PyTorch checkpoint (no torch.save header)");
  Unpickler sys_info(data, pos, path, none);
  sys_info.run();
  pos = sys_info.position();
  struct Pending {
    torch::ScalarType dtype;
    int64_t numel;
    torch::Tensor tensor;
  };
  std::map<std::string, Pending> storages;
  std::vector<std::pair<Obj, std::string>> tensor_refs;
  Unpickler body(data, pos, path, [&](const Obj& pid) -> Obj {
    const auto& a = pid->items;
    if (pid->kind != PyObj::kTuple || a.size() < 5 || a[0]->s != "storage")
      throw std::runtime_error("'" + path + "': unexpected persistent id");
    const std::string key = a[2]->s;
    auto& st = storages[key];
    st.dtype = storage_dtype(a[1]->name, path);
    st.numel = a[4]->i;
    if (!st.tensor.defined()) st.tensor = torch::empty({st.numel}, torch::TensorOptions().dtype(st.dtype));
    torch::Tensor view = st.tensor;
    if (a.size() > 5 && a[5]->kind == PyObj::kTuple && a[5]->items.size() >= 3)
      view = st.tensor.narrow(0, a[5]->items[1]->i, a[5]->items[2]->i);  // (view key, offset, size)
    return storage_obj(view);
  });
  Obj root = body.run();
  pos = body.position();
  Unpickler keys_up(data, pos, path, none);
  Obj keys = keys_up.run();
  pos = keys_up.position();
  for (const auto& k : keys->items) {
    auto it = storages.find(k->s);
    if (it == storages.end()) throw std::runtime_error("'" + path + "': storage '" + k->s + "' is not referenced");
    if (pos + 8 > data.size()) throw std::runtime_error("'" + path + "' is truncated (storage " + k->s + ")");
    int64_t n;
    std::memcpy(&n, data.data() + pos, 8);
    pos += 8;
    const size_t bytes = static_cast<size_t>(n) * c10::elementSize(it->second.dtype);
    if (n != it->second.numel || pos + bytes > data.size())
      throw std::runtime_error("'" + path + "' is truncated or corrupt (storage " + k->s + ")");
    std::memcpy(it->second.tensor.data_ptr(), data.data() + pos, bytes);
    pos += bytes;
  }
  return tensors_of(root, path);
}

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path, const std::string& data) {
  uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  if (8 + n > data.size()) throw std::runtime_error("'" + path + "' is truncated (safetensors header)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.substr(8, n));
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "': invalid safetensors header: " + e.what());
  }
  static const std::map<std::string, torch::ScalarType> types = {
      {"F32", torch::kFloat}, {"F16", torch::kHalf}, {"BF16", torch::kBFloat16}, {"F64", torch::kDouble},
      {"I64", torch::kLong},  {"I32", torch::kInt},  {"I16", torch::kShort},     {"I8", torch::kChar},
      {"U8", torch::kByte},   {"BOOL", torch::kBool}};
  const size_t base = 8 + n;
  std::map<std::string, torch::Tensor> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& e = it.value();
    auto type = types.find(e.at("dtype").get<std::string>());
    if (type == types.end())
      throw std::runtime_error("'" + path + "': tensor '" + it.key() + "' has unsupported dtype " + e.at("dtype").dump());
    auto shape = e.at("shape").get<std::vector<int64_t>>();
    auto offsets = e.at("data_offsets").get<std::vector<uint64_t>>();
    int64_t numel = 1;
    for (auto s : shape) numel *= s;
    const uint64_t bytes = static_cast<uint64_t>(numel) * c10::elementSize(type->second);
    if (offsets.size() != 2 || offsets[1] - offsets[0] != bytes || base + offsets[1] > data.size())
      throw std::runtime_error("'" + path + "' is truncated or corrupt (tensor '" + it.key() + "')");
    auto t = torch::empty(shape, torch::TensorOptions().dtype(type->second));
    std::memcpy(t.data_ptr(), data.data() + base + offsets[0], bytes);
    out[it.key()] = t;
  }
  if (out.empty()) throw std::runtime_error("'" + path + "' holds no tensors");
  return out;
}

std::map<std::string, torch::Tensor> strip_module_prefix(std::map<std::string, torch::Tensor> in) {
  std::map<std::string, torch::Tensor> out;
  for (auto& kv : in) {
    std::string k = kv.first;
    while (k.rfind("module.", 0) == 0) k = k.substr(7);
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

bool is_dropped_head(const std::string& key) {
  return key.rfind("classifier.", 0) == 0 || key.rfind("head.", 0) == 0 || key.rfind("norm.", 0) == 0 ||
         key.rfind("fc.", 0) == 0;
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
  o << ", skipped " << skipped.size();
  if (!skipped.empty()) o << " [" << skipped.front() << (skipped.size() > 1 ? ", …]" : "]");
  o << ", left at init " << missing.size();
  if (!missing.empty()) o << " [" << missing.front() << (missing.size() > 1 ? ", …]" : "]");
  return o.str();
}

namespace {

std::map<std::string, torch::Tensor> read_any(const std::string& path, std::string& format) {
  const std::string data = read_all(path);
  if (data.size() < 8) throw std::runtime_error("'" + path + "' is too short to be a weights file");
  if (data.compare(0, 4, "PK\x03\x04") == 0) {
    format = "torch-zip";
    return strip_module_prefix(read_torch_zip(path));
  }
  uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  if (n > 1 && n < data.size() && data[8] == '{') {
    format = "safetensors";
    return strip_module_prefix(read_safetensors(path, data));
  }
  if (static_cast<uint8_t>(data[0]) == 0x80) {
    format = "torch-legacy";
    return strip_module_prefix(read_torch_legacy(path, data));
  }
  throw std::runtime_error("'" + path + "' is not a PyTorch checkpoint or a .safetensors file");
}

}  // namespace

std::map<std::string, torch::Tensor> read_state_dict(const std::string& path) {
  std::string format;
  return read_any(path, format);
}

LoadReport load_state_dict(torch::nn::Module& module, std::map<std::string, torch::Tensor> state,
                           const std::string& source, const LoadWeightsOptions& options) {
  LoadReport report;
  report.layout = "direct";
  bool timm = false;
  for (auto& kv : state)
    if (kv.first.rfind("stem.", 0) == 0 || kv.first.find(".blocks.") != std::string::npos) timm = true;
  if (timm) {
    report.layout = "timm-convnextv2";
    std::map<std::string, torch::Tensor> mapped;
    for (auto& kv : state) mapped[timm_to_official(kv.first)] = kv.second;
    state.swap(mapped);
  }
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
                                 shape_str(kv.second.sizes()) + ")");
      report.missing.push_back(kv.first);
      continue;
    }
    torch::Tensor src = it->second;
    auto& dst = kv.second;
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
        throw std::runtime_error("'" + source + "': shape mismatch for '" + kv.first + "': file " +
                                 shape_str(it->second.sizes()) + ", model " + shape_str(dst.sizes()));
      }
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
  auto state = read_any(path, format);
  auto report = load_state_dict(module, std::move(state), path, options);
  report.format = format;
  return report;
}

}  // namespace nordf
