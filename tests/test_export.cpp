// Model files and CompressAI interoperability: export_model / load_model round trips,
// CompressAI state dicts in both key styles, the `lic export / import / info` commands,
// a Python (torch.load / torch.save) round trip, and one-line errors for bad input.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lic/bitstream.h"
#include "lic/checkpoint.h"
#include "lic/compressai.h"
#include "lic/error.h"
#include "lic/models.h"
#include "lic/tensor_io.h"

using namespace lic;
namespace fs = std::filesystem;

namespace {

const std::string kLic = LIC_BINARY;
const std::string kSource = LIC_SOURCE_DIR;
const std::string kPython = "/usr/bin/python3";
constexpr int64_t kN = 8, kM = 12;

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (auto& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    path = fs::temp_directory_path() /
           ("lic_export_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Run {
  int rc = -1;
  std::string out, err;
  int err_lines() const {
    int n = 0;
    for (char c : err) n += c == '\n';
    return n;
  }
};

// Runs shell command lines at the same time (the binaries' start-up dominates), each with
// its stdout / stderr captured in `dir`; returns when all have finished.
std::vector<Run> run_all(const TempDir& dir, const std::vector<std::string>& cmds) {
  static std::atomic<int> counter{0};
  std::vector<std::pair<std::string, std::string>> files;
  std::vector<pid_t> pids;
  for (const auto& cmd : cmds) {
    const int id = counter++;
    files.emplace_back(dir / ("stdout" + std::to_string(id) + ".txt"), dir / ("stderr" + std::to_string(id) + ".txt"));
    const std::string line = cmd + " >" + quote(files.back().first) + " 2>" + quote(files.back().second);
    const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
    pid_t pid = -1;
    if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) pid = -1;
    pids.push_back(pid);
  }
  std::vector<Run> runs(cmds.size());
  for (size_t i = 0; i < cmds.size(); ++i) {
    int status = 0;
    if (pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status)) runs[i].rc = WEXITSTATUS(status);
    runs[i].out = slurp(files[i].first);
    runs[i].err = slurp(files[i].second);
  }
  return runs;
}

Run run(const TempDir& dir, const std::string& cmd) { return run_all(dir, {cmd})[0]; }

std::string lic_cmd(const std::string& args) { return quote(kLic) + " " + args; }
Run run_lic(const TempDir& dir, const std::string& args) { return run(dir, lic_cmd(args)); }

// A small model with every parameter moved off its initial value, so nothing is trivially
// equal; hyperprior models get a finer scale table than CompressAI's 64 levels.
ModelPtr make_model(const std::string& arch, int64_t levels = 64, uint64_t seed = 7) {
  torch::manual_seed(seed);
  ModelOptions o;
  o.name = arch;
  o.N = kN;
  o.M = kM;
  o.scale_levels = levels;
  auto m = create_model(o);
  torch::NoGradGuard ng;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.01);
  m->eval();
  m->update_tables();
  return m;
}

ModelMeta meta_of(CompressionModel& m, double lambda = 0.013, int quality = 4) {
  ModelMeta meta;
  meta.name = m.name();
  meta.N = m.N();
  meta.M = m.M();
  meta.scale_levels = m.gaussian_conditional ? m.gaussian_conditional->scale_table.size(0) : 64;
  meta.lambda = lambda;
  meta.quality = quality;
  return meta;
}

// Same keys in the same order, every tensor equal in dtype, shape and value.
void expect_same_state(CompressionModel& a, CompressionModel& b) {
  auto sa = state_dict(a), sb = state_dict(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    ASSERT_EQ(sa[i].first, sb[i].first);
    EXPECT_EQ(sa[i].second.scalar_type(), sb[i].second.scalar_type()) << sa[i].first;
    EXPECT_TRUE(sa[i].second.sizes() == sb[i].second.sizes() && torch::equal(sa[i].second, sb[i].second))
        << sa[i].first << " differs";
  }
}

bool has_key(const TensorDict& d, const std::string& k) {
  for (const auto& kv : d)
    if (kv.first == k) return true;
  return false;
}

std::string param_name(const std::string& arch) { return arch == "mean-scale" ? "mean_scale" : arch; }

class ExportRoundTrip : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

}  // namespace

// --- (a) library round trips -------------------------------------------------------------

TEST_P(ExportRoundTrip, LicModelFileKeepsStateAndFingerprint) {
  TempDir dir;
  auto model = make_model(GetParam(), 100);
  auto meta = meta_of(*model, 0.0483, 6);
  meta.metric = "ms-ssim";
  export_model(dir / "m.licm", *model, meta);
  ModelMeta back;
  auto loaded = load_model(dir / "m.licm", &back);
  expect_same_state(*model, *loaded);
  EXPECT_EQ(back.fingerprint, model->fingerprint());
  EXPECT_EQ(loaded->fingerprint(), model->fingerprint());
  EXPECT_EQ(back.name, GetParam());
  EXPECT_EQ(back.N, kN);
  EXPECT_EQ(back.M, kM);
  EXPECT_EQ(back.lambda, 0.0483);
  EXPECT_EQ(back.quality, 6);
  EXPECT_EQ(back.metric, "ms-ssim");
  EXPECT_EQ(back.scale_levels, model->gaussian_conditional ? 100 : 64);
  // no optimizer state: a plain dict of the model's tensors plus the metadata
  auto raw = load_tensor_dict(dir / "m.licm");
  EXPECT_EQ(raw.size(), state_dict(*model).size());
}

TEST_P(ExportRoundTrip, CompressAIStateDictBothKeyStyles) {
  TempDir dir;
  auto model = make_model(GetParam(), 100);
  for (bool legacy : {false, true}) {
    SCOPED_TRACE(legacy ? "legacy names" : "current names");
    save_tensor_dict(dir / "sd.pt", to_compressai(*model, legacy));
    auto sd = load_tensor_dict(dir / "sd.pt");
    EXPECT_EQ(has_key(sd, "entropy_bottleneck._matrix0"), legacy);
    EXPECT_EQ(has_key(sd, "entropy_bottleneck.matrices.0"), !legacy);
    EXPECT_EQ(has_key(sd, "entropy_bottleneck.factors.3"), !legacy);
    EXPECT_EQ(has_key(sd, "gaussian_conditional.scale_table"), !model->gaussian_conditional.is_empty());
    auto back = model_from_compressai(sd, compressai_name(GetParam()));
    EXPECT_EQ(back->name(), GetParam());
    EXPECT_EQ(back->N(), kN);
    EXPECT_EQ(back->M(), kM);
    expect_same_state(*model, *back);
    if (model->gaussian_conditional) EXPECT_EQ(back->gaussian_conditional->scale_table.size(0), 100);
    EXPECT_EQ(back->fingerprint(), model->fingerprint());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ExportRoundTrip, ::testing::Values("factorized", "hyperprior", "mean-scale"),
                         [](const auto& info) { return param_name(info.param); });

// --- lic export / info -------------------------------------------------------------------

TEST(ExportCli, CheckpointToModelIsSmallerAndIdentical) {
  TempDir dir;
  auto model = make_model("hyperprior", 64, 11);
  model->train();
  torch::optim::Adam opt(model->main_parameters(), torch::optim::AdamOptions(1e-4));
  torch::optim::Adam aux(model->aux_parameters(), torch::optim::AdamOptions(1e-3));
  auto out = model->forward(torch::rand({1, 3, 64, 64}));
  (out.x_hat.square().mean() + out.likelihoods[0].second.mean()).backward();
  opt.step();
  model->aux_loss().backward();
  aux.step();
  model->eval();
  Checkpoint ck;
  ck.meta = meta_of(*model);
  ck.model = model;
  ck.step = 1234;
  ck.optimizer = optimizer_bytes(opt);
  ck.aux_optimizer = optimizer_bytes(aux);
  save_checkpoint(dir / "ck.pt", ck);

  const auto first = run_all(dir, {lic_cmd("export --model " + quote(dir / "ck.pt") + " --format lic -o " +
                                           quote(dir / "m.licm")),
                                   lic_cmd("info --json " + quote(dir / "ck.pt"))});
  auto r = first[0];
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_LT(fs::file_size(dir / "m.licm"), fs::file_size(dir / "ck.pt"));
  ModelMeta meta;
  auto loaded = load_model(dir / "m.licm", &meta);
  expect_same_state(*model, *loaded);
  EXPECT_EQ(meta.fingerprint, model->fingerprint());
  EXPECT_EQ(meta.lambda, 0.013);
  EXPECT_EQ(meta.quality, 4);
  EXPECT_THROW(load_checkpoint(dir / "m.licm"), Error);  // an export is not a checkpoint

  r = first[1];
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "checkpoint");
  EXPECT_EQ(j["step"], 1234);
  EXPECT_EQ(j["model"], "hyperprior");
  EXPECT_EQ(j["N"], kN);
  EXPECT_EQ(j["M"], kM);
  EXPECT_EQ(j["lambda"], 0.013);
  EXPECT_EQ(j["quality"], 4);
  EXPECT_EQ(j["metric"], "mse");
  EXPECT_EQ(j["scale_table_levels"], 64);
  int64_t params = 0;
  for (auto& p : model->parameters()) params += p.numel();
  EXPECT_EQ(j["parameters"], params);
  char hex[24];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(model->fingerprint()));
  EXPECT_EQ(j["fingerprint"], hex);

  r = run_lic(dir, "info " + quote(dir / "m.licm"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("exported model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(hex), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("step"), std::string::npos) << r.out;
}

TEST(ExportCli, CompressAIExportWritesSidecarAndRefusesOverwrite) {
  TempDir dir;
  auto model = make_model("mean-scale");
  export_model(dir / "m.licm", *model, meta_of(*model, 0.0067, 3));
  const auto cmd = "export --model " + quote(dir / "m.licm") + " --format compressai -o " + quote(dir / "sd.pt");
  // the output is the input: refused even with --force (checked while the export runs)
  const auto before = slurp(dir / "m.licm");
  const auto first = run_all(dir, {lic_cmd(cmd + " --legacy-names"),
                                   lic_cmd("export --model " + quote(dir / "m.licm") + " -o " +
                                           quote(dir / "." + "/m.licm") + " --force")});
  auto r = first[1];
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find("is the input"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(dir / "m.licm"), before);

  r = first[0];
  ASSERT_EQ(r.rc, 0) << r.err;
  auto side = nlohmann::json::parse(slurp(dir / "sd.pt.json"));
  EXPECT_EQ(side["architecture"], "mbt2018-mean");
  EXPECT_EQ(side["lic_model"], "mean-scale");
  EXPECT_EQ(side["N"], kN);
  EXPECT_EQ(side["M"], kM);
  EXPECT_EQ(side["lambda"], 0.0067);
  EXPECT_EQ(side["quality"], 3);
  EXPECT_EQ(side["metric"], "mse");
  EXPECT_EQ(side["scale_table_levels"], 64);
  EXPECT_EQ(side["key_names"], "legacy");
  EXPECT_TRUE(has_key(load_tensor_dict(dir / "sd.pt"), "entropy_bottleneck._bias4"));

  r = run_lic(dir, cmd);  // exists
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_EQ(r.err.rfind("lic export: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;

  r = run_lic(dir, cmd + " --force");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(dir / "sd.pt.json"))["key_names"], "current");
  EXPECT_TRUE(has_key(load_tensor_dict(dir / "sd.pt"), "entropy_bottleneck.biases.4"));

  r = run_lic(dir, "info --json " + quote(dir / "sd.pt"));
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "compressai-state-dict");
  EXPECT_EQ(j["architecture_guess"], "mbt2018-mean");
}

TEST(ExportCli, InfoDescribesBitstream) {
  TempDir dir;
  LicFile f;
  f.header.model = "hyperprior";
  f.header.N = 128;
  f.header.M = 192;
  f.header.fingerprint = 0x0123456789abcdefull;
  f.header.height = 48;
  f.header.width = 80;
  f.streams = {std::vector<uint8_t>(100, 7), std::vector<uint8_t>(20, 9)};
  const auto bytes = serialize(f);
  std::ofstream(dir / "x.lic", std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::ofstream(dir / "bad.lic", std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), 30);
  const auto runs = run_all(dir, {lic_cmd("info --json " + quote(dir / "x.lic")), lic_cmd("info " + quote(dir / "x.lic")),
                                  lic_cmd("info " + quote(dir / "bad.lic"))});
  auto r = runs[0];
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "bitstream");
  EXPECT_EQ(j["model"], "hyperprior");
  EXPECT_EQ(j["fingerprint"], "0123456789abcdef");
  EXPECT_EQ(j["width"], 80);
  EXPECT_EQ(j["height"], 48);
  EXPECT_EQ(j["streams"][0]["bytes"], 100);
  EXPECT_EQ(j["streams"][1]["bytes"], 20);
  EXPECT_EQ(j["total_bytes"], bytes.size());
  r = runs[1];
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("stream z"), std::string::npos) << r.out;
  r = runs[2];
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
}

// --- (b) Python: torch.load of lic's export, torch.save back, lic import -------------------

TEST(PythonInterop, ExportCheckResaveImportIsIdentical) {
  if (::access(kPython.c_str(), X_OK) != 0) GTEST_SKIP() << kPython << " not found: Python interop not tested";
  torch::set_num_threads(1);
  TempDir dir;
  struct Case {
    std::string arch;
    bool legacy;
    ModelPtr model;
  };
  std::vector<Case> cases = {{"factorized", false, nullptr}, {"hyperprior", true, nullptr}, {"mean-scale", false, nullptr}};
  std::vector<std::string> exports, checks, imports;
  for (auto& c : cases) {
    c.model = make_model(c.arch, c.arch == "factorized" ? 64 : 100);
    const auto base = dir / c.arch;
    export_model(base + ".licm", *c.model, meta_of(*c.model));
    exports.push_back(lic_cmd("export --model " + quote(base + ".licm") + " --format compressai -o " +
                              quote(base + ".pt") + (c.legacy ? " --legacy-names" : "")));
    checks.push_back(quote(kPython) + " " + quote(kSource + "/scripts/check_compressai_export.py") + " " +
                     quote(base + ".pt") + " " + compressai_name(c.arch) + " " + std::to_string(kN) + " " +
                     std::to_string(kM) + (c.legacy ? " --legacy" : "") + " --resave " + quote(base + ".py.pt"));
    imports.push_back(lic_cmd("import --format compressai --arch " + compressai_name(c.arch) + " " +
                              quote(base + ".py.pt") + " -o " + quote(base + ".imported.licm") + " --N " +
                              std::to_string(kN) + " --M=" + std::to_string(kM) + " --lambda 0.013 --quality 4"));
  }
  // What CompressAI users write: torch.save(net.state_dict()), a collections.OrderedDict.
  checks.push_back(quote(kPython) + " -c " +
                   quote("import collections, sys, torch; "
                         "torch.save(collections.OrderedDict(torch.load(sys.argv[1])), sys.argv[2])") +
                   " " + quote(dir / "hyperprior.pt") + " " + quote(dir / "ordered.pt"));
  imports.push_back(lic_cmd("import --arch bmshj2018-hyperprior " + quote(dir / "ordered.pt") + " -o " +
                            quote(dir / "ordered.licm")));

  auto r = run_all(dir, exports);
  for (size_t i = 0; i < cases.size(); ++i) ASSERT_EQ(r[i].rc, 0) << cases[i].arch << ": " << r[i].err;

  r = run_all(dir, checks);
  ASSERT_EQ(r.back().rc, 0) << r.back().out << r.back().err;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (r[i].rc == 77) GTEST_SKIP() << "python3-torch is not installed: " << r[i].out;
    ASSERT_EQ(r[i].rc, 0) << cases[i].arch << ": " << r[i].out << r[i].err;
    EXPECT_EQ(r[i].out.rfind("OK: ", 0), 0u) << r[i].out;
  }

  r = run_all(dir, imports);
  for (size_t i = 0; i < cases.size(); ++i) {
    auto& c = cases[i];
    SCOPED_TRACE(c.arch + (c.legacy ? " (legacy names)" : " (current names)"));
    ASSERT_EQ(r[i].rc, 0) << r[i].err;
    EXPECT_EQ(r[i].err, "");
    ModelMeta meta;
    auto back = load_model(dir / (c.arch + ".imported.licm"), &meta);
    expect_same_state(*c.model, *back);
    EXPECT_EQ(meta.fingerprint, c.model->fingerprint());
    EXPECT_EQ(meta.name, c.arch);
    EXPECT_EQ(meta.lambda, 0.013);
    EXPECT_EQ(meta.quality, 4);
    EXPECT_EQ(meta.metric, "mse");
    if (c.model->gaussian_conditional) {  // the file's scale table, not the 64-level default
      EXPECT_EQ(meta.scale_levels, 100);
      EXPECT_EQ(back->gaussian_conditional->scale_table.size(0), 100);
    }
  }
  // The OrderedDict (LibTorch's own unpickler cannot read it) imports exactly like the plain dict.
  const auto& od = r.back();
  ASSERT_EQ(od.rc, 0) << od.err;
  EXPECT_EQ(od.err, "");
  expect_same_state(*cases[1].model, *load_model(dir / "ordered.licm"));
}

// --- (c) import errors: non-zero exit, exactly one stderr line ---------------------------

TEST(ExportImportErrors, BadInputsFailWithOneLine) {
  TempDir dir;
  auto model = make_model("hyperprior");
  auto sd = to_compressai(*model);
  save_tensor_dict(dir / "sd.pt", sd);
  export_model(dir / "m.licm", *model, meta_of(*model));
  export_model(dir / "existing.licm", *model, meta_of(*model));
  const auto full = slurp(dir / "sd.pt");
  std::ofstream(dir / "trunc.pt", std::ios::binary).write(full.data(), full.size() / 2);
  TensorDict dropped;
  for (const auto& kv : sd)
    if (kv.first != "h_s.2.bias") dropped.push_back(kv);
  save_tensor_dict(dir / "dropped.pt", dropped);

  const auto import = [&](const std::string& args, const std::string& out = "out.licm") {
    return lic_cmd("import --format compressai " + args + " -o " + quote(dir / out));
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {import("--arch bmshj2018-hyperprior " + quote(dir / "trunc.pt")), "truncated"},
      {import("--arch bmshj2018-hyperprior " + quote(dir / "nope.pt")), "nope.pt"},
      {import("--arch bmshj2018-hyperprior " + quote(dir / "dropped.pt")), "missing (1): h_s.2.bias"},
      {import("--arch bmshj2018-factorized " + quote(dir / "sd.pt")), "unexpected"},
      {import("--arch mbt2018-mean " + quote(dir / "sd.pt")), "wrong shape"},
      {import("--arch cheng2020-anchor " + quote(dir / "sd.pt")), "cheng2020-anchor"},
      {import("--arch bmshj2018-hyperprior --N 16 " + quote(dir / "sd.pt")), "wrong shape"},
      {import("--arch bmshj2018-hyperprior " + quote(dir / "m.licm")), "lic model"},
      {import("--arch bmshj2018-hyperprior " + quote(dir / "sd.pt"), "existing.licm"), "exists"},
  };
  std::vector<std::string> cmds;
  for (const auto& c : cases) cmds.push_back(c.first);
  cmds.push_back(import("--arch bmshj2018-hyperprior " + quote(dir / "sd.pt"), "good.licm"));
  const auto r = run_all(dir, cmds);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].first);
    EXPECT_NE(r[i].rc, 0);
    EXPECT_EQ(r[i].err_lines(), 1) << r[i].err;
    EXPECT_EQ(r[i].err.rfind("lic import: ", 0), 0u) << r[i].err;
    EXPECT_NE(r[i].err.find(cases[i].second), std::string::npos)
        << "expected '" << cases[i].second << "' in: " << r[i].err;
  }
  EXPECT_FALSE(fs::exists(dir / "out.licm"));
  ASSERT_EQ(r.back().rc, 0) << r.back().err;  // and the good file imports
  expect_same_state(*model, *load_model(dir / "good.licm"));
}
