// The torch.save reader (pickle_reader.cpp): the files Python users really save
// (tests/data/pickle, written by scripts/make_pickle_fixtures.py), the same results as
// LibTorch's unpickler on the files it can read, one lic::Error for hostile input, and
// `lic import` of a CompressAI-style training checkpoint end to end.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "lic/checkpoint.h"
#include "lic/compressai.h"
#include "lic/error.h"
#include "lic/models.h"
#include "lic/pickle_reader.h"
#include "lic/tensor_io.h"
#include "test_util.h"

using namespace lic;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

const std::string kSource = LIC_SOURCE_DIR;
const std::string kFixtures = kSource + "/tests/data/pickle/";
const std::string kPython = "/usr/bin/python3";

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// (arange(n) - n/2) * 0.125 in `shape`: scripts/make_pickle_fixtures.py's ramp().
torch::Tensor ramp(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return ((torch::arange(n, torch::kFloat64) - n / 2) * 0.125).to(torch::kFloat32).reshape(shape);
}

torch::Tensor get(const TensorDict& d, const std::string& key) {
  for (const auto& kv : d)
    if (kv.first == key) return kv.second;
  ADD_FAILURE() << "missing " << key;
  return torch::zeros({0});
}

std::vector<std::string> keys(const TensorDict& d) {
  std::vector<std::string> k;
  for (const auto& kv : d) k.push_back(kv.first);
  return k;
}

void expect_exact(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(torch::equal(got, want)) << what << ": " << got << " vs " << want;
}

// The tiny net's state_dict() values (make_pickle_fixtures.py: tiny_net), under `prefix`.
void expect_tiny_net(const TensorDict& d, const std::string& prefix) {
  expect_exact(get(d, prefix + "0.weight"), ramp({3, 2, 3, 3}), "0.weight");
  expect_exact(get(d, prefix + "0.bias"), torch::tensor({0.5f, -1.5f, 2.25f}), "0.bias");
  expect_exact(get(d, prefix + "1.weight"), torch::tensor({1.0f, 2.0f, 3.0f}), "1.weight");
  expect_exact(get(d, prefix + "1.bias"), torch::tensor({-0.25f, 0.0f, 0.25f}), "1.bias");
  expect_exact(get(d, prefix + "1.running_mean"), torch::tensor({1.0f, 2.0f, 3.0f}), "running_mean");
  expect_exact(get(d, prefix + "1.running_var"), torch::tensor({0.25f, 0.5f, 4.0f}), "running_var");
  expect_exact(get(d, prefix + "1.num_batches_tracked"), torch::tensor(int64_t{7}), "num_batches_tracked");
}

// --- hand-made archives for hostile input ---------------------------------------------

// A torch.save-style zip holding `pkl` as data.pkl and data/<key> records.
std::vector<char> archive(const std::string& pkl, const std::vector<std::pair<std::string, std::string>>& records = {}) {
  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter w([&](const void* buf, size_t n) {
    out.insert(out.end(), static_cast<const char*>(buf), static_cast<const char*>(buf) + n);
    return n;
  });
  w.writeRecord("data.pkl", pkl.data(), pkl.size());
  for (const auto& [k, v] : records) w.writeRecord("data/" + k, v.data(), v.size());
  w.writeEndOfFile();
  return out;
}

std::string le32(uint32_t v) { return {char(v), char(v >> 8), char(v >> 16), char(v >> 24)}; }
std::string str(const std::string& s) { return "X" + le32(uint32_t(s.size())) + s; }
std::string i32(int64_t v) { return "J" + le32(uint32_t(int32_t(v))); }
std::string ints(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (auto x : v) s += i32(x);
  return s + "t";
}

// _rebuild_tensor_v2 of record data/<key> as torch.save writes it.
std::string tensor(const std::string& key, int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                   const std::vector<int64_t>& stride, const std::string& type = "FloatStorage",
                   const std::string& location = "cpu") {
  return "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") + "ctorch\n" + type + "\n" + str(key) +
         str(location) + i32(numel) + "tQ" + i32(offset) + ints(size) + ints(stride) +
         "\x89" "ccollections\nOrderedDict\n)R" "tR";
}

// {"w": <value pickle>} as a whole data.pkl.
std::string dict_of(const std::string& value) { return "\x80\x02}(" + str("w") + value + "u."; }

std::string floats(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) s.append(reinterpret_cast<const char*>(&f), sizeof f);
  return s;
}

// Reading `bytes` must throw one lic::Error that names the file and contains `want`.
void expect_error(const std::vector<char>& bytes, const std::string& want) {
  try {
    read_torch_save(bytes, "hostile.pt");
    ADD_FAILURE() << "no error, wanted '" << want << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("hostile.pt: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace

// --- (1) what Python writes -------------------------------------------------------------

TEST(Pickle, OrderedDictStateDictIsExact) {
  const auto d = load_tensor_dict(kFixtures + "state_dict.pt");
  const std::vector<std::string> want = {
      "0.weight",    "0.bias",           "1.weight",    "1.bias",     "1.running_mean", "1.running_var",
      "1.num_batches_tracked", "extra.transposed", "extra.base", "extra.view", "extra.long", "extra.int",
      "extra.short", "extra.char",       "extra.byte",  "extra.bool", "extra.half",     "extra.bfloat16"};
  EXPECT_EQ(keys(d), want);
  expect_tiny_net(d, "");

  const auto tr = get(d, "extra.transposed");
  expect_exact(tr, ramp({3, 4}).t(), "transposed");
  EXPECT_EQ(tr.strides(), (std::vector<int64_t>{1, 4})) << "the saved strides are kept";
  const auto base = get(d, "extra.base"), view = get(d, "extra.view");
  expect_exact(base, torch::arange(10, torch::kFloat64), "base");
  expect_exact(view, torch::tensor({2.0, 4.0, 6.0}, torch::kFloat64), "view");
  EXPECT_EQ(view.data_ptr<double>(), base.data_ptr<double>() + 2) << "a view shares its base's storage";

  expect_exact(get(d, "extra.long"), torch::tensor({-(int64_t{1} << 40), int64_t{-1}, int64_t{0}, int64_t{1} << 62}), "long");
  expect_exact(get(d, "extra.int"), torch::tensor({INT32_MIN, 7}, torch::kInt32), "int");
  expect_exact(get(d, "extra.short"), torch::tensor({-300, 300}, torch::kInt16), "short");
  expect_exact(get(d, "extra.char"), torch::tensor({-128, 127}, torch::kInt8), "char");
  expect_exact(get(d, "extra.byte"), torch::tensor({0, 255}, torch::kUInt8), "byte");
  expect_exact(get(d, "extra.bool"), torch::tensor({true, false, true}), "bool");
  expect_exact(get(d, "extra.half"), torch::tensor({0.5, -2.0, 65504.0, std::ldexp(1.0, -24)}).to(torch::kFloat16), "half");
  expect_exact(get(d, "extra.bfloat16"), torch::tensor({1.5, -3.0e38}).to(torch::kBFloat16), "bfloat16");
}

TEST(Pickle, CompressAICheckpointKeepsOnlyStringKeyedTensors) {
  // epoch, optimizer state (int keys), param_groups (lists), lr_scheduler (floats, inf),
  // argparse.Namespace (NEWOBJ + BUILD) and a set (REDUCE) are all skipped, not errors.
  const auto d = load_tensor_dict(kFixtures + "checkpoint.pt");
  const std::vector<std::string> want = {"state_dict.0.weight",       "state_dict.0.bias",
                                         "state_dict.1.weight",       "state_dict.1.bias",
                                         "state_dict.1.running_mean", "state_dict.1.running_var",
                                         "state_dict.1.num_batches_tracked", "loss"};
  EXPECT_EQ(keys(d), want);
  expect_tiny_net(d, "state_dict.");
  expect_exact(get(d, "loss"), torch::tensor(0.75f), "loss");
  // The "state_dict." wrapper is unwrapped and the checkpoint's loss is not a weight.
  EXPECT_EQ(keys(normalize_compressai_keys(d)),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                      "1.num_batches_tracked"}));
}

// Everything LibTorch's unpickler reads (lic's own files, the CompressAI golden files) reads
// the same: keys in order, dtype, shape, strides and values.
TEST(Pickle, SameAsLibTorchUnpicklerWhereThatWorks) {
  std::vector<std::string> files = {kSource + "/tests/golden/input.pt"};
  for (const char* arch : {"bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"})
    for (const char* f : {"state_dict.pt", "outputs.pt", "train_step.pt"})
      files.push_back(kSource + "/tests/golden/" + arch + "/" + f);
  const TensorDict mine = {{"a", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                           {"b", torch::tensor({true, false})},
                           {"c", torch::tensor(int64_t{5})}};
  test::TempDir dir;
  files.push_back((dir.path / "lic.pt").string());
  save_tensor_dict(files.back(), mine);

  for (const auto& f : files) {
    SCOPED_TRACE(f);
    const auto bytes = read_bytes(f);
    const auto ours = read_torch_save(bytes, f);
    const auto ref = torch::pickle_load(bytes).toGenericDict();
    TensorDict theirs;
    for (const auto& kv : ref)
      if (kv.key().isString() && kv.value().isTensor()) theirs.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
    ASSERT_EQ(keys(ours), keys(theirs));
    ASSERT_FALSE(ours.empty());
    for (size_t i = 0; i < ours.size(); ++i) {
      expect_exact(ours[i].second, theirs[i].second, ours[i].first);
      EXPECT_EQ(ours[i].second.strides(), theirs[i].second.strides()) << ours[i].first;
    }
  }
}

TEST(Pickle, LocationIsIgnoredAndStoragesAreShared) {
  // A checkpoint saved on a GPU names "cuda:0": it still loads, on the CPU.
  const std::string pkl = "\x80\x02}(" + str("a") + tensor("0", 4, 0, {2, 2}, {2, 1}, "FloatStorage", "cuda:0") +
                          str("b") + tensor("0", 4, 1, {2}, {2}, "FloatStorage", "cuda:0") + "u.";
  const auto d = read_torch_save(archive(pkl, {{"0", floats({1, 2, 3, 4})}}), "gpu.pt");
  ASSERT_EQ(d.size(), 2u);
  expect_exact(d[0].second, torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}}), "a");
  expect_exact(d[1].second, torch::tensor({2.0f, 4.0f}), "b");
  EXPECT_EQ(d[1].second.data_ptr<float>(), d[0].second.data_ptr<float>() + 1);
}

// --- (2) hostile input: one lic::Error each ---------------------------------------------

TEST(Pickle, HostileInputIsOneError) {
  const auto storage = std::vector<std::pair<std::string, std::string>>{{"0", floats({1, 2, 3, 4})}};
  expect_error({'n', 'o', 't', ' ', 'a', ' ', 'z', 'i', 'p'}, "not a readable torch.save file");
  expect_error(archive("\x80\x02}I1\n."), "unsupported pickle opcode 0x49 at byte 3");
  expect_error(archive("\x80\x02}(" + str("w") + "h\x05u."), "memo index 5 is not defined");
  expect_error(archive("\x80\x02}(" + str("w") + "j\xff\xff\xff\xffu."), "memo index 4294967295");
  expect_error(archive("\x80\x02s."), "stack underflow");
  expect_error(archive("\x80\x02}(0."), "stack underflow");  // POP may not reach below the MARK
  expect_error(archive("\x80\x02u."), "no MARK");
  expect_error(archive("\x80\x02]."), "expected a dict of tensors");
  expect_error(archive("\x80\x02}"), "truncated");
  expect_error(archive("\x80\x02}(" + std::string("X\xff\xff\xff\x7f") + "abc"), "truncated");
  expect_error(archive("\x80\x02}(" + str("w") + "K\x01K\x02u."), "odd number");
  expect_error(archive("\x80\x02}(K\x01" + str("w") + "a."), "not a list or dict");
  // Tensors must stay inside their storage (4 floats here).
  expect_error(archive(dict_of(tensor("0", 4, 0, {2, 3}, {3, 1})), storage), "reaches past its storage of 4");
  expect_error(archive(dict_of(tensor("0", 4, 3, {2}, {1})), storage), "reaches past");
  expect_error(archive(dict_of(tensor("0", 4, 5, {0}, {1})), storage), "reaches past");
  expect_error(archive(dict_of(tensor("0", 4, 0, {2, 2}, {1 << 30, 1 << 30})), storage), "reaches past");
  expect_error(archive(dict_of(tensor("0", 4, -1, {1}, {1})), storage), "reaches past");
  expect_error(archive(dict_of(tensor("0", 4, 0, {-1}, {1})), storage), "bad tensor size or stride");
  expect_error(archive(dict_of(tensor("0", 4, 0, {2, 2}, {1})), storage), "differ in length");
  expect_error(archive(dict_of(tensor("0", 4, 0, {1 << 20, 1 << 20}, {0, 0})), storage), "too large");
  // Storages must exist, be big enough and of a known type.
  expect_error(archive(dict_of(tensor("7", 4, 0, {4}, {1})), storage), "missing storage record data/7");
  expect_error(archive(dict_of(tensor("0", 5, 0, {5}, {1})), storage), "holds 16 bytes, fewer than its 5 elements");
  expect_error(archive(dict_of(tensor("0", 1 << 30, 0, {4}, {1})), storage), "larger than the file");
  expect_error(archive(dict_of(tensor("0", 4, 0, {4}, {1}, "ComplexFloatStorage")), storage),
               "unsupported storage type torch.ComplexFloatStorage");
  expect_error(archive(dict_of("(" + str("storage") + "tQ")), "malformed persistent id");
  expect_error(archive(dict_of("ctorch._utils\n_rebuild_tensor_v2\n(K\x01tR")), "malformed _rebuild_tensor_v2");
  // Nesting: dicts 100 deep, a dict that contains itself, too many open MARKs.
  std::string deep = "\x80\x02";
  for (int i = 0; i < 100; ++i) deep += "}(" + str("k");
  deep += "}" + std::string(100, 'u') + ".";
  expect_error(archive(deep), "nested deeper than 64");
  expect_error(archive("\x80\x02}q\x00("s + str("self") + "h\x00u."s), "nested deeper than 64");
  expect_error(archive("\x80\x02" + std::string(5000, '(') + "}."), "too many nested MARKs");
}

// data.pkl and the storage records of a fixture, to rebuild the archive around a changed pickle.
struct Parts {
  std::string pkl;
  std::vector<std::pair<std::string, std::string>> records;
};
Parts parts_of(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader zip(path);
  Parts p;
  auto [pkl, size] = zip.getRecord("data.pkl");
  p.pkl.assign(static_cast<const char*>(pkl.get()), size);
  for (const auto& name : zip.getAllRecords())
    if (name.rfind("data/", 0) == 0) {
      auto [data, n] = zip.getRecord(name);
      p.records.emplace_back(name.substr(5), std::string(static_cast<const char*>(data.get()), n));
    }
  return p;
}

TEST(Pickle, EveryTruncationOfARealPickleIsOneError) {
  const auto p = parts_of(kFixtures + "checkpoint.pt");
  ASSERT_NO_THROW(read_torch_save(archive(p.pkl, p.records), "whole.pt"));
  for (size_t n = 0; n < p.pkl.size(); ++n) {
    try {
      read_torch_save(archive(p.pkl.substr(0, n), p.records), "cut.pt");
      ADD_FAILURE() << "cut at " << n << " read without error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("cut.pt: ", 0), 0u) << e.what();
    }
  }
}

TEST(Pickle, MutatedPicklesReadOrFailCleanly) {
  // Random byte changes in a real data.pkl: each one reads, or is one lic::Error; nothing
  // else escapes and nothing crashes (tensors that do read stay inside their storage).
  std::mt19937 rng(1234);
  for (const char* fixture : {"state_dict.pt", "checkpoint.pt"}) {
    const auto p = parts_of(kFixtures + fixture);
    int errors = 0;
    for (int i = 0; i < 1500; ++i) {
      std::string pkl = p.pkl;
      for (int k = 1 + int(rng() % 3); k-- > 0;) pkl[rng() % pkl.size()] = char(rng());
      try {
        for (const auto& [key, t] : read_torch_save(archive(pkl, p.records), "mutated.pt"))
          EXPECT_TRUE(t.sum().defined()) << key;  // touches every element
      } catch (const Error&) {
        ++errors;
      }
    }
    EXPECT_GT(errors, 100) << fixture;
  }
}

// --- (3) lic import of a CompressAI training checkpoint -----------------------------------

TEST(PickleImport, CompressAICheckpointImportsExactly) {
  if (::access(kPython.c_str(), X_OK) != 0) GTEST_SKIP() << kPython << " not found";
  torch::set_num_threads(1);
  torch::manual_seed(11);
  ModelOptions o;
  o.name = "hyperprior";
  o.N = 8;
  o.M = 12;
  auto model = create_model(o);
  {
    torch::NoGradGuard ng;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.01);
  }
  model->eval();
  test::TempDir dir;
  const auto plain = (dir.path / "plain.pt").string(), ckpt = (dir.path / "checkpoint.pth.tar").string(),
             out = (dir.path / "imported.licm").string();
  save_tensor_dict(plain, to_compressai(*model));
  const auto wrap = test::run_lic(kSource + "/scripts/make_pickle_fixtures.py --wrap " + plain + " " + ckpt, kPython);
  if (wrap.exit_code == 77) GTEST_SKIP() << "python3-torch is not installed";
  ASSERT_EQ(wrap.exit_code, 0) << wrap.out << wrap.err;

  const auto r = test::run_lic("import --arch bmshj2018-hyperprior " + ckpt + " -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  auto back = load_model(out);
  const auto a = state_dict(*model), b = state_dict(*back);
  ASSERT_EQ(keys(a), keys(b));
  for (size_t i = 0; i < a.size(); ++i) expect_exact(b[i].second, a[i].second, a[i].first);
  EXPECT_EQ(back->fingerprint(), model->fingerprint());
}
