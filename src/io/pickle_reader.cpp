#include "lic/pickle_reader.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <unordered_map>

#include "lic/error.h"

namespace lic {
namespace {

// Limits far above any real state dict or checkpoint, low enough to bound memory and time
// on hostile input.
constexpr size_t kMaxObjects = size_t{1} << 21;  // Python objects built
constexpr size_t kMaxItems = size_t{1} << 24;    // container insertions / flattened entries
constexpr size_t kMaxMarks = 4096;               // open MARKs
constexpr int kMaxDepth = 64;                    // nested dicts
constexpr size_t kMaxDims = 16;
constexpr size_t kMaxKey = 4096;                 // characters of a dotted key or global name
constexpr int64_t kMaxExpanded = int64_t{1} << 24;  // elements of a stride-0 (expanded) view

// The Python objects torch.save writes, reduced to what flattening needs. Everything else
// (optimizers, argparse.Namespace, sets, ...) is kOpaque.
struct Obj {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kTensor, kStorage, kGlobal, kOpaque };
  Kind kind = kNone;
  int64_t i = 0;                                  // kBool, kInt
  std::string s;                                  // kStr, kBytes; kGlobal: "module.name"
  std::vector<Obj*> items;                        // kTuple, kList; kDict: key, value, key, ...
  std::unordered_map<std::string, size_t> index;  // kDict: string key -> its value's position
  torch::Tensor t;                                // kTensor; kStorage: the whole storage, 1-D
};

// Lets PyTorchStreamReader read the file's bytes in place.
class BytesAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BytesAdapter(const std::vector<char>& bytes) : b_(bytes) {}
  size_t size() const override { return b_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= b_.size()) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, b_.size() - pos));
    std::memcpy(buf, b_.data() + pos, n);
    return n;
  }

 private:
  const std::vector<char>& b_;
};

// torch.save's storage classes ("torch.FloatStorage") -> element type.
c10::ScalarType storage_dtype(const std::string& name) {
  static const std::pair<const char*, c10::ScalarType> kTypes[] = {
      {"torch.FloatStorage", torch::kFloat32},   {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},    {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},     {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},      {"torch.BoolStorage", torch::kBool},
      {"torch.UntypedStorage", torch::kUInt8}};  // torch 2.x, raw storages saved on their own
  for (const auto& [n, t] : kTypes)
    if (name == n) return t;
  throw Error("unsupported storage type " + name);
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, caffe2::serialize::PyTorchStreamReader& zip, size_t file_size)
      : p_(data), n_(size), zip_(zip), file_size_(file_size) {
    none_ = make(Obj::kNone);
    true_ = make(Obj::kBool);
    true_->i = 1;
    false_ = make(Obj::kBool);
  }

  Obj* run() {
    for (;;) {
      const size_t at = pos_;
      const uint8_t op = take(1)[0];
      switch (op) {
        case 0x80: check(take(1)[0] <= 5, "unsupported pickle protocol"); break;  // PROTO
        case 0x95: take(8); break;  // FRAME: a read-ahead hint, the opcodes follow inline
        case '(':
          check(marks_.size() < kMaxMarks, "too many nested MARKs");
          marks_.push_back(stack_.size());
          break;
        case '.': return pop();  // STOP
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case '}': push(make(Obj::kDict)); break;
        case ']': push(make(Obj::kList)); break;
        case ')': push(make(Obj::kTuple)); break;
        case 't': push(tuple(pop_mark())); break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          std::vector<Obj*> v(op - 0x84);
          for (size_t k = v.size(); k-- > 0;) v[k] = pop();
          push(tuple(v));
          break;
        }
        case 'l': push(add(make(Obj::kList), pop_mark())); break;
        case 'a': { Obj* v = pop(); add(top(), {v}); break; }  // APPEND
        case 'e': { auto v = pop_mark(); add(top(), v); break; }  // APPENDS
        case 'd': push(add(make(Obj::kDict), pop_mark())); break;
        case 's': { Obj* v = pop(); Obj* k = pop(); add(top(), {k, v}); break; }  // SETITEM
        case 'u': { auto kv = pop_mark(); add(top(), kv); break; }  // SETITEMS
        case 'q': put(le(1)); break;
        case 'r': put(le(4)); break;
        case 0x94: put(memo_.size()); break;  // MEMOIZE
        case 'h': get(le(1)); break;
        case 'j': get(le(4)); break;
        case 'N': push(none_); break;
        case 0x88: push(true_); break;
        case 0x89: push(false_); break;
        case 'J': push(integer(static_cast<int32_t>(le(4)))); break;
        case 'K': push(integer(static_cast<int64_t>(le(1)))); break;
        case 'M': push(integer(static_cast<int64_t>(le(2)))); break;
        case 0x8a: push(long1()); break;
        case 'G': take(8); push(make(Obj::kFloat)); break;  // BINFLOAT: values are not kept
        case 'X': case 'T': push(string(Obj::kStr, le(4))); break;  // BINUNICODE, BINSTRING
        case 0x8c: case 'U': push(string(Obj::kStr, le(1))); break;
        case 0x8d: push(string(Obj::kStr, le(8))); break;
        case 'B': push(string(Obj::kBytes, le(4))); break;
        case 'C': push(string(Obj::kBytes, le(1))); break;
        case 'c': { const auto module = line(); push(global(module + "." + line())); break; }
        case 0x93: {  // STACK_GLOBAL
          Obj* name = pop();
          Obj* module = pop();
          check(name->kind == Obj::kStr && module->kind == Obj::kStr, "STACK_GLOBAL without two strings");
          push(global(module->s + "." + name->s));
          break;
        }
        case 'R': { Obj* args = pop(); push(reduce(pop(), args)); break; }
        case 'b': pop(); top(); break;  // BUILD: object state (an OrderedDict's _metadata) is not needed
        case 0x81: pop(); pop(); push(make(Obj::kOpaque)); break;  // NEWOBJ: some Python class
        case 'Q': push(persistent_load(pop())); break;
        default: {
          char buf[64];
          std::snprintf(buf, sizeof buf, "unsupported pickle opcode 0x%02x at byte %zu", op, at);
          throw Error(buf);
        }
      }
    }
  }

 private:
  // --- input -------------------------------------------------------------------------
  const uint8_t* take(size_t k) {
    check(k <= n_ - pos_, "data.pkl is truncated");
    const uint8_t* r = p_ + pos_;
    pos_ += k;
    return r;
  }
  uint64_t le(size_t k) {  // little-endian unsigned
    const uint8_t* b = take(k);
    uint64_t v = 0;
    for (size_t j = 0; j < k; ++j) v |= uint64_t{b[j]} << (8 * j);
    return v;
  }
  std::string line() {  // GLOBAL's newline-terminated module / name
    for (size_t k = pos_; k < n_ && k - pos_ <= kMaxKey; ++k)
      if (p_[k] == '\n') {
        std::string s(reinterpret_cast<const char*>(p_ + pos_), k - pos_);
        pos_ = k + 1;
        return s;
      }
    throw Error("data.pkl is truncated or has an overlong GLOBAL name");
  }

  // --- objects, stack, memo ----------------------------------------------------------
  Obj* make(Obj::Kind kind) {
    check(arena_.size() < kMaxObjects, "too many objects");
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
  }
  Obj* integer(int64_t v) {
    Obj* o = make(Obj::kInt);
    o->i = v;
    return o;
  }
  Obj* long1() {  // little-endian two's complement of 0..255 bytes; wider than int64: opaque
    const size_t k = le(1);
    const uint8_t* b = take(k);
    if (k > 8) return make(Obj::kOpaque);
    uint64_t v = 0;
    for (size_t j = 0; j < k; ++j) v |= uint64_t{b[j]} << (8 * j);
    if (k > 0 && k < 8 && (b[k - 1] & 0x80)) v |= ~uint64_t{0} << (8 * k);  // sign-extend
    return integer(static_cast<int64_t>(v));
  }
  Obj* string(Obj::Kind kind, uint64_t size) {
    check(size <= n_ - pos_, "data.pkl is truncated");
    Obj* o = make(kind);
    o->s.assign(reinterpret_cast<const char*>(take(size)), size);
    return o;
  }
  Obj* global(std::string name) {
    check(name.size() <= kMaxKey, "overlong GLOBAL name");
    Obj* o = make(Obj::kGlobal);
    o->s = std::move(name);
    return o;
  }
  Obj* tuple(std::vector<Obj*> items) {
    count(items.size());
    Obj* o = make(Obj::kTuple);
    o->items = std::move(items);
    return o;
  }
  void count(size_t n) {
    items_ += n;
    check(items_ <= kMaxItems, "too many items");
  }

  // The current MARK is a floor: nothing below it may be popped.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Obj* o) { stack_.push_back(o); }
  Obj* top() {
    check(stack_.size() > floor(), "pickle stack underflow");
    return stack_.back();
  }
  Obj* pop() {
    Obj* o = top();
    stack_.pop_back();
    return o;
  }
  std::vector<Obj*> pop_mark() {
    check(!marks_.empty(), "pickle stack underflow (no MARK)");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj*> v(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return v;
  }
  void put(uint64_t idx) {
    check(memo_.size() < kMaxObjects, "too many memo entries");
    memo_[idx] = top();
  }
  void get(uint64_t idx) {
    auto it = memo_.find(idx);
    check(it != memo_.end(), "memo index " + std::to_string(idx) + " is not defined");
    push(it->second);
  }

  // APPEND(S) on a list, SETITEM(S) / DICT on a dict (key, value pairs). An opaque target
  // (a defaultdict, a list subclass) swallows its items: they are never flattened.
  Obj* add(Obj* c, const std::vector<Obj*>& items) {
    count(items.size());
    if (c->kind == Obj::kOpaque) return c;
    if (c->kind == Obj::kList) {
      c->items.insert(c->items.end(), items.begin(), items.end());
      return c;
    }
    check(c->kind == Obj::kDict, "APPEND or SETITEM on an object that is not a list or dict");
    check(items.size() % 2 == 0, "SETITEMS with an odd number of items");
    for (size_t j = 0; j < items.size(); j += 2) {
      if (items[j]->kind == Obj::kStr) {  // a repeated key replaces the value in place
        auto [it, fresh] = c->index.emplace(items[j]->s, c->items.size() + 1);
        if (!fresh) {
          c->items[it->second] = items[j + 1];
          continue;
        }
      }
      c->items.push_back(items[j]);
      c->items.push_back(items[j + 1]);
    }
    return c;
  }

  // --- torch objects -----------------------------------------------------------------
  Obj* reduce(Obj* f, Obj* args) {
    if (f->kind != Obj::kGlobal || args->kind != Obj::kTuple) return make(Obj::kOpaque);
    const auto& a = args->items;
    if (f->s == "collections.OrderedDict" && a.empty()) return make(Obj::kDict);
    if (f->s == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a);
    // Parameters (and LibTorch's own type tags) wrap the tensor / value in their first argument.
    if ((f->s == "torch._utils._rebuild_parameter" || f->s == "torch._utils._rebuild_parameter_with_state" ||
         f->s == "torch.jit._pickle.restore_type_tag") && !a.empty())
      return a[0];
    return make(Obj::kOpaque);
  }

  static std::vector<int64_t> ints(const Obj* tuple) {
    check(tuple->kind == Obj::kTuple && tuple->items.size() <= kMaxDims, "bad tensor size or stride");
    std::vector<int64_t> v;
    for (const Obj* o : tuple->items) {
      check(o->kind == Obj::kInt && o->i >= 0, "bad tensor size or stride");
      v.push_back(o->i);
    }
    return v;
  }

  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]): a
  // view of the storage, after checking that every element it reaches lies inside it.
  Obj* rebuild_tensor(const std::vector<Obj*>& a) {
    check(a.size() >= 4 && a[0]->kind == Obj::kStorage && a[1]->kind == Obj::kInt,
          "malformed _rebuild_tensor_v2 arguments");
    const auto size = ints(a[2]), stride = ints(a[3]);
    check(size.size() == stride.size(), "tensor size and stride differ in length");
    const int64_t offset = a[1]->i, avail = a[0]->t.numel();
    int64_t numel = 1, last = offset;
    bool overflow = offset < 0;
    for (size_t d = 0; d < size.size(); ++d) {
      int64_t step = 0;
      overflow |= __builtin_mul_overflow(numel, size[d], &numel);
      overflow |= size[d] > 0 && (__builtin_mul_overflow(size[d] - 1, stride[d], &step) ||
                                  __builtin_add_overflow(last, step, &last));
    }
    check(!overflow && (numel == 0 ? offset <= avail : last < avail),
          "tensor of " + std::to_string(numel) + " elements at offset " + std::to_string(offset) +
              " reaches past its storage of " + std::to_string(avail));
    // Overlapping (expanded) views may exceed the storage's size, but only so far.
    check(numel <= std::max(avail, kMaxExpanded), "tensor view of " + std::to_string(numel) + " elements is too large");
    Obj* o = make(Obj::kTensor);
    o->t = a[0]->t.as_strided(size, stride, offset);
    return o;
  }

  // BINPERSID ('storage', storage_type, key, location, numel): record data/<key>. The
  // location (e.g. "cuda:0") is ignored: everything loads on the CPU.
  Obj* persistent_load(Obj* pid) {
    const auto& a = pid->items;
    check(pid->kind == Obj::kTuple && a.size() == 5 && a[0]->kind == Obj::kStr && a[0]->s == "storage" &&
              a[1]->kind == Obj::kGlobal && a[2]->kind == Obj::kStr && a[4]->kind == Obj::kInt,
          "malformed persistent id (expected ('storage', type, key, location, numel))");
    const auto dtype = storage_dtype(a[1]->s);
    const std::string& key = a[2]->s;
    auto it = storages_.find(key);
    if (it != storages_.end()) {  // several tensors share one storage
      check(it->second->t.scalar_type() == dtype, "storage " + key + " is read with two element types");
      return it->second;
    }
    check(key.size() <= 64, "overlong storage key");
    const std::string name = "data/" + key;
    check(zip_.hasRecord(name), "missing storage record " + name);
    const int64_t numel = a[4]->i;
    const auto esize = static_cast<int64_t>(c10::elementSize(dtype));
    check(numel >= 0 && numel <= static_cast<int64_t>(file_size_ / esize), "storage " + name + " is larger than the file");
    auto [data, bytes] = zip_.getRecord(name);
    check(static_cast<uint64_t>(numel * esize) <= bytes,
          "storage record " + name + " holds " + std::to_string(bytes) + " bytes, fewer than its " +
              std::to_string(numel) + " elements need");
    auto t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (numel > 0) std::memcpy(t.data_ptr(), data.get(), static_cast<size_t>(numel * esize));
    if (dtype == torch::kBool) t = t.view(torch::kUInt8).ne(0);  // only 0 / 1 are valid bools
    Obj* o = make(Obj::kStorage);
    o->t = t;
    storages_.emplace(key, o);
    return o;
  }

  const uint8_t* p_;
  size_t n_, pos_ = 0;
  caffe2::serialize::PyTorchStreamReader& zip_;
  size_t file_size_;
  std::deque<Obj> arena_;  // owns every object: no recursive destruction, cycles are harmless
  Obj *none_, *true_, *false_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Obj*> memo_;
  std::unordered_map<std::string, Obj*> storages_;
  size_t items_ = 0;
};

// String-keyed tensors of nested dicts, in insertion order. The depth and entry limits also
// stop a dict that contains itself, or a chain of dicts that reference one another twice.
void flatten(const Obj* d, const std::string& prefix, int depth, size_t& visits, TensorDict& out) {
  check(depth <= kMaxDepth, "dicts nested deeper than " + std::to_string(kMaxDepth) + " levels");
  for (size_t j = 0; j + 1 < d->items.size(); j += 2) {
    const Obj* k = d->items[j];
    const Obj* v = d->items[j + 1];
    if (k->kind != Obj::kStr) continue;
    check(++visits <= kMaxItems, "too many entries");
    const std::string key = prefix.empty() ? k->s : prefix + "." + k->s;
    check(key.size() <= kMaxKey, "overlong key");
    if (v->kind == Obj::kTensor) out.emplace_back(key, v->t);
    else if (v->kind == Obj::kDict) flatten(v, key, depth + 1, visits, out);
  }
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

TensorDict read_torch_save(const std::vector<char>& bytes, const std::string& what) {
  try {
    caffe2::serialize::PyTorchStreamReader zip(std::make_shared<BytesAdapter>(bytes));
    check(zip.hasRecord("data.pkl"), "no data.pkl record (not a torch.save file)");
    auto [pkl, size] = zip.getRecord("data.pkl");
    Unpickler u(static_cast<const uint8_t*>(pkl.get()), size, zip, bytes.size());
    const Obj* root = u.run();
    check(root->kind == Obj::kDict, "expected a dict of tensors");
    TensorDict out;
    size_t visits = 0;
    flatten(root, "", 0, visits, out);
    return out;
  } catch (const Error& e) {
    throw Error(what + ": " + e.what());
  } catch (const c10::Error& e) {
    throw Error(what + ": not a readable torch.save file (truncated or foreign: " +
                first_line(e.what_without_backtrace()) + ")");
  } catch (const std::exception& e) {
    throw Error(what + ": not a readable torch.save file (truncated or foreign: " + first_line(e.what()) + ")");
  }
}

}  // namespace lic
