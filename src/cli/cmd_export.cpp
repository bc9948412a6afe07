// lic export / import / info: deployable model files, CompressAI state dicts, and a
// description of any file lic reads (checkpoint, exported model, CompressAI state dict,
// .lic bitstream).
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "lic/atomic_file.h"
#include "lic/bitstream.h"
#include "lic/checkpoint.h"
#include "lic/compressai.h"
#include "lic/error.h"
#include "lic/models.h"
#include "lic/tensor_io.h"

namespace fs = std::filesystem;

namespace lic::cli {
namespace {

std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string human_bytes(uintmax_t n) {
  char buf[32];
  if (n < 1024) std::snprintf(buf, sizeof buf, "%ju B", n);
  else if (n < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", n / (1024.0 * 1024.0));
  return buf;
}

uintmax_t file_size_or0(const std::string& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

// Same file (existing or not) after resolving symlinks, "..", relative paths.
bool same_path(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  auto ca = fs::weakly_canonical(a, ec);
  if (ec) return a == b;
  auto cb = fs::weakly_canonical(b, ec);
  if (ec) return a == b;
  return ca == cb;
}

// Refuses to overwrite the input or (without --force) an existing file.
void check_output(const std::string& out, const std::string& in, bool force) {
  check(!out.empty(), "-o/--output is required");
  check(!same_path(out, in), "output " + out + " is the input file; choose another -o");
  std::error_code ec;
  if (fs::exists(out, ec)) {
    check(!fs::is_directory(out, ec), "output " + out + " is a directory");
    check(force, "output " + out + " exists (use --force to overwrite)");
  }
}

// CompressAI's zoo lambdas by quality (compressai.zoo.image: mse / ms-ssim).
double zoo_lambda(int quality, const std::string& metric) {
  static const double mse[] = {0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800};
  static const double msssim[] = {2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00};
  if (quality < 1 || quality > 8) return 0.0;
  return metric == "ms-ssim" ? msssim[quality - 1] : mse[quality - 1];
}

std::string compressai_class(const std::string& name) {
  if (name == "factorized") return "FactorizedPrior";
  if (name == "hyperprior") return "ScaleHyperprior";
  if (name == "mean-scale") return "MeanScaleHyperprior";
  return "";
}

int64_t table_levels(CompressionModel& m) {
  return m.gaussian_conditional ? m.gaussian_conditional->scale_table.size(0) : 0;
}

int64_t parameter_count(CompressionModel& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// The "lic.kind" / "lic.meta" entries of a lic archive (empty kind: not a lic archive).
struct ArchiveInfo {
  std::string kind;
  nlohmann::json meta;
};

ArchiveInfo peek_archive(const std::vector<uint8_t>& raw) {
  ArchiveInfo info;
  c10::IValue v;
  try {
    v = torch::pickle_load(std::vector<char>(raw.begin(), raw.end()));
  } catch (const std::exception&) {
    return info;
  }
  if (!v.isGenericDict()) return info;
  for (const auto& kv : v.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isString()) continue;
    if (kv.key().toStringRef() == "lic.kind") info.kind = kv.value().toStringRef();
    if (kv.key().toStringRef() == "lic.meta")
      info.meta = nlohmann::json::parse(kv.value().toStringRef(), nullptr, false);
  }
  return info;
}

// A torch.save'd dict of tensors, OrderedDicts and training checkpoints included.
TensorDict load_python_dict(const std::string& path, const std::vector<uint8_t>& raw) {
  return parse_tensor_dict(std::vector<char>(raw.begin(), raw.end()), path);
}

// The architecture a normalized CompressAI state dict looks like ("" if unknown).
std::string guess_arch(const TensorDict& d) {
  torch::Tensor ga6, hs4;
  for (const auto& [k, t] : d) {
    if (k == "g_a.6.weight") ga6 = t;
    if (k == "h_s.4.weight") hs4 = t;
  }
  if (!ga6.defined() || ga6.dim() != 4) return "";
  if (!hs4.defined()) return "factorized";
  return hs4.size(0) == 2 * ga6.size(0) ? "mean-scale" : "hyperprior";
}

bool is_lic_weights(const TensorDict& d) {
  for (const auto& kv : d)
    if (kv.first.rfind("state.", 0) == 0) return true;
  return false;
}

// cxxopts needs two characters for a long option: accept --N 8 / --N=8 as -N 8.
std::vector<std::string> short_size_flags(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && (a.rfind("--N", 0) == 0 || a.rfind("--M", 0) == 0) && (a.size() == 3 || a[3] == '=')) {
      args.push_back(a.substr(1, 2));
      if (a.size() > 3) args.push_back(a.substr(4));
    } else {
      args.push_back(a);
    }
  }
  return args;
}

void print_kv(const char* key, const std::string& value) { std::printf("%-20s %s\n", key, value.c_str()); }

}  // namespace

// ---------------------------------------------------------------------------------------
// lic export
// ---------------------------------------------------------------------------------------

int cmd_export(int argc, char** argv) {
  cxxopts::Options opts("lic export", "Write a deployable model (weights, CDF tables, metadata; no optimizer state) "
                                      "or a CompressAI state dict from a checkpoint or an exported model.");
  opts.add_options()("m,model", "checkpoint or exported model to read", cxxopts::value<std::string>())(
      "f,format", "lic or compressai", cxxopts::value<std::string>()->default_value("lic"))(
      "o,output", "output file (compressai: also writes OUTPUT.json)", cxxopts::value<std::string>())(
      "legacy-names", "compressai: CompressAI <= 1.2.6 names (entropy_bottleneck._matrix0, ...)")(
      "force", "overwrite existing output files")("h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(opts, argc, argv, r)) return 0;
  check(r.count("model"), "--model is required");
  check(r.count("output"), "-o/--output is required");
  check(r.unmatched().empty(), "unexpected argument '" + (r.unmatched().empty() ? "" : r.unmatched()[0]) + "'");
  const auto in = r["model"].as<std::string>();
  const auto out = r["output"].as<std::string>();
  const auto format = r["format"].as<std::string>();
  const bool force = r.count("force") > 0;
  const bool legacy = r.count("legacy-names") > 0;
  check(format == "lic" || format == "compressai", "--format must be lic or compressai, got '" + format + "'");
  check(!legacy || format == "compressai", "--legacy-names only applies to --format compressai");

  check_output(out, in, force);
  const std::string sidecar = out + ".json";
  if (format == "compressai") check_output(sidecar, in, force);

  ModelMeta meta;
  auto model = load_model(in, &meta);
  const auto in_size = file_size_or0(in);

  if (format == "lic") {
    export_model(out, *model, meta);
    std::printf("exported %s model (N=%" PRId64 ", M=%" PRId64 ", fingerprint %s) to %s: %s (input %s)\n",
                meta.name.c_str(), meta.N, meta.M, hex64(meta.fingerprint).c_str(), out.c_str(),
                human_bytes(file_size_or0(out)).c_str(), human_bytes(in_size).c_str());
    return 0;
  }

  auto sd = to_compressai(*model, legacy);
  save_tensor_dict(out, sd);
  nlohmann::json side = {{"architecture", compressai_name(meta.name)},
                         {"compressai_class", compressai_class(meta.name)},
                         {"lic_model", meta.name},
                         {"N", meta.N},
                         {"M", meta.M},
                         {"lambda", meta.lambda},
                         {"quality", meta.quality},
                         {"metric", meta.metric},
                         {"scale_table_levels", table_levels(*model)},
                         {"key_names", legacy ? "legacy" : "current"},
                         {"lic_fingerprint", hex64(meta.fingerprint)}};
  write_file_atomic(sidecar, side.dump(2) + "\n");
  std::printf("exported %s as CompressAI %s (%s, N=%" PRId64 ", M=%" PRId64 ", %zu tensors, %s key names) to %s (%s) + %s\n",
              meta.name.c_str(), compressai_name(meta.name).c_str(), compressai_class(meta.name).c_str(), meta.N,
              meta.M, sd.size(), legacy ? "legacy" : "current", out.c_str(), human_bytes(file_size_or0(out)).c_str(),
              sidecar.c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------
// lic import
// ---------------------------------------------------------------------------------------

int cmd_import(int argc, char** argv) {
  cxxopts::Options opts("lic import", "Read a CompressAI state dict (torch.save(net.state_dict(), ...)) into a lic "
                                      "model file. The scale table stored in the file is kept.");
  opts.add_options()("f,format", "input format (compressai)", cxxopts::value<std::string>()->default_value("compressai"))(
      "a,arch", "architecture: bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean (or lic names)",
      cxxopts::value<std::string>())("N", "transform width, -N or --N (default: from the weights)", cxxopts::value<int64_t>())(
      "M", "latent channels, -M or --M (default: from the weights)", cxxopts::value<int64_t>())(
      "o,output", "lic model file to write", cxxopts::value<std::string>())(
      "lambda", "rate-distortion lambda the model was trained with (metadata)", cxxopts::value<double>())(
      "quality", "CompressAI quality 1..8 (metadata; sets lambda when --lambda is absent)", cxxopts::value<int>())(
      "metric", "mse or ms-ssim (metadata)", cxxopts::value<std::string>()->default_value("mse"))(
      "force", "overwrite an existing output file")("input", "CompressAI state dict (.pt)",
                                                    cxxopts::value<std::vector<std::string>>())(
      "h,help", "show this help");
  opts.parse_positional({"input"});
  opts.positional_help("IN.pt");
  auto args = short_size_flags(argc, argv);
  std::vector<char*> argp;
  for (auto& a : args) argp.push_back(a.data());
  cxxopts::ParseResult r;
  if (!parse_or_help(opts, static_cast<int>(argp.size()), argp.data(), r)) return 0;
  const auto format = r["format"].as<std::string>();
  check(format == "compressai", "--format must be compressai, got '" + format + "'");
  check(r.count("arch"), "--arch is required (bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean)");
  check(r.count("input") == 1 && r["input"].as<std::vector<std::string>>().size() == 1,
        "expected exactly one input file (IN.pt)");
  check(r.count("output"), "-o/--output is required");
  const auto in = r["input"].as<std::vector<std::string>>()[0];
  const auto out = r["output"].as<std::string>();
  const auto arch = canonical_model_name(r["arch"].as<std::string>());
  const auto metric = r["metric"].as<std::string>();
  check(metric == "mse" || metric == "ms-ssim", "--metric must be mse or ms-ssim, got '" + metric + "'");
  int64_t N = r.count("N") ? r["N"].as<int64_t>() : 0, M = r.count("M") ? r["M"].as<int64_t>() : 0;
  check(!r.count("N") || (N > 0 && N <= 4096), "--N must be 1..4096");
  check(!r.count("M") || (M > 0 && M <= 4096), "--M must be 1..4096");
  int quality = r.count("quality") ? r["quality"].as<int>() : 0;
  check(!r.count("quality") || (quality >= 1 && quality <= 8), "--quality must be 1..8");
  double lambda = r.count("lambda") ? r["lambda"].as<double>() : zoo_lambda(quality, metric);
  check(lambda >= 0.0 && std::isfinite(lambda), "--lambda must be >= 0");
  check_output(out, in, r.count("force") > 0);

  auto sd = load_python_dict(in, read_file(in));
  check(!sd.empty(), in + ": no tensors in the file (not a CompressAI state dict)");
  const auto norm = normalize_compressai_keys(sd);
  bool has_ga = false;
  for (const auto& kv : norm) has_ga |= kv.first == "g_a.0.weight";
  check(has_ga || !is_lic_weights(sd), in + ": is a lic model or checkpoint, not a CompressAI state dict (use it directly)");

  ModelPtr model;
  try {
    model = model_from_compressai(sd, arch, N, M);
  } catch (const Error& e) {
    const auto guess = guess_arch(norm);
    throw Error(in + " does not fit --arch " + compressai_name(arch) +
                (!guess.empty() && guess != arch ? " (its keys look like " + compressai_name(guess) + ")" : "") +
                ": " + e.what());
  }
  model->eval();

  // The Gaussian scale table must be the file's (CompressAI: 64 levels), not lic's default.
  if (model->gaussian_conditional) {
    torch::Tensor file_table;
    for (const auto& kv : norm)
      if (kv.first == "gaussian_conditional.scale_table") file_table = kv.second;
    check(file_table.defined() &&
              torch::equal(model->gaussian_conditional->scale_table, file_table.to(torch::kFloat32).reshape(-1)),
          in + ": the model's scale table does not match the file's");
  }

  ModelMeta meta;
  meta.name = arch;
  meta.N = model->N();
  meta.M = model->M();
  meta.scale_levels = model->gaussian_conditional ? table_levels(*model) : 64;
  meta.lambda = lambda;
  meta.quality = quality;
  meta.metric = metric;
  export_model(out, *model, meta);
  ModelMeta written;
  load_model(out, &written);  // read back: a file that does not reload is an error now, not later
  check(written.fingerprint == model->fingerprint(), out + ": written model does not reload identically");
  std::printf("imported %s (%s, N=%" PRId64 ", M=%" PRId64 ", %zu tensors%s) to %s (fingerprint %s)\n", in.c_str(),
              compressai_name(arch).c_str(), meta.N, meta.M, sd.size(),
              model->gaussian_conditional
                  ? (", scale table " + std::to_string(meta.scale_levels) + " levels").c_str()
                  : "",
              out.c_str(), hex64(written.fingerprint).c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------
// lic info
// ---------------------------------------------------------------------------------------

namespace {

nlohmann::json info_bitstream(const std::string& path, const std::vector<uint8_t>& raw) {
  LicFile f;
  try {
    f = parse(raw);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  const auto& h = f.header;
  nlohmann::json streams = nlohmann::json::array();
  const char* names[] = {"y", "z", "s2", "s3"};
  uint64_t payload = 0;
  for (size_t i = 0; i < f.streams.size(); ++i) {
    streams.push_back({{"name", names[i]}, {"bytes", f.streams[i].size()}});
    payload += f.streams[i].size();
  }
  const double pixels = static_cast<double>(h.height) * h.width;
  return {{"file", path},
          {"kind", "bitstream"},
          {"format_version", kFormatVersion},
          {"model", h.model},
          {"N", h.N},
          {"M", h.M},
          {"fingerprint", hex64(h.fingerprint)},
          {"height", h.height},
          {"width", h.width},
          {"channels", h.channels},
          {"streams", streams},
          {"payload_bytes", payload},
          {"header_bytes", header_overhead(f)},
          {"total_bytes", raw.size()},
          {"bpp", pixels > 0 ? raw.size() * 8.0 / pixels : 0.0}};
}

nlohmann::json info_model(const std::string& path, const ArchiveInfo& a) {
  ModelMeta meta;
  auto model = load_model(path, &meta);
  nlohmann::json j = {{"file", path},
                      {"kind", a.kind == "checkpoint" ? "checkpoint" : "model"},
                      {"model", meta.name},
                      {"compressai_architecture", compressai_name(meta.name)},
                      {"N", meta.N},
                      {"M", meta.M},
                      {"lambda", meta.lambda},
                      {"quality", meta.quality},
                      {"metric", meta.metric},
                      {"scale_table_levels", model->gaussian_conditional ? nlohmann::json(table_levels(*model))
                                                                         : nlohmann::json(nullptr)},
                      {"parameters", parameter_count(*model)},
                      {"fingerprint", hex64(meta.fingerprint)},
                      {"bytes", file_size_or0(path)}};
  if (a.kind == "checkpoint") j["step"] = a.meta.value("step", int64_t{0});
  const uint64_t stored = a.meta.value("fingerprint", uint64_t{0});
  if (stored != 0 && stored != meta.fingerprint) j["stored_fingerprint"] = hex64(stored);
  return j;
}

nlohmann::json info_compressai(const std::string& path, const TensorDict& sd) {
  const auto d = normalize_compressai_keys(sd);
  auto [N, M] = infer_sizes(d);
  torch::Tensor table;
  bool legacy = false;
  for (const auto& [k, t] : d)
    if (k == "gaussian_conditional.scale_table") table = t;
  for (const auto& kv : sd) legacy |= kv.first.find("entropy_bottleneck._matrix") != std::string::npos;
  const std::string arch = guess_arch(d);
  int64_t params = 0;
  for (const auto& kv : d) {
    const auto& k = kv.first;
    const bool buffer = k.find("_quantized_cdf") != std::string::npos || k.find("_cdf_length") != std::string::npos ||
                        k.find("_offset") != std::string::npos || k.find("scale_table") != std::string::npos ||
                        k.find("scale_bound") != std::string::npos || k.find(".bound") != std::string::npos ||
                        k.find(".pedestal") != std::string::npos || k.find(".target") != std::string::npos;
    if (!buffer) params += kv.second.numel();
  }
  return {{"file", path},
          {"kind", "compressai-state-dict"},
          {"tensors", d.size()},
          {"architecture_guess", compressai_name(arch)},
          {"N", N},
          {"M", M},
          {"key_names", legacy ? "legacy" : "current"},
          {"scale_table_levels", table.defined() ? nlohmann::json(table.numel()) : nlohmann::json(nullptr)},
          {"parameters", params},
          {"bytes", file_size_or0(path)}};
}

void print_info(const nlohmann::json& j) {
  auto str = [&](const char* k) -> std::string {
    const auto& v = j.at(k);
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "-";
    if (v.is_number_float()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", v.get<double>());
      return buf;
    }
    return v.dump();
  };
  const auto kind = j.at("kind").get<std::string>();
  print_kv("file", str("file"));
  if (kind == "bitstream") {
    print_kv("kind", ".lic bitstream (format " + str("format_version") + ")");
    print_kv("model", str("model"));
    print_kv("N, M", str("N") + ", " + str("M"));
    print_kv("fingerprint", str("fingerprint"));
    print_kv("image", str("width") + "x" + str("height") + ", " + str("channels") + " channel(s)");
    for (const auto& s : j.at("streams"))
      print_kv(("stream " + s.at("name").get<std::string>()).c_str(), s.at("bytes").dump() + " bytes");
    print_kv("header + CRC", str("header_bytes") + " bytes");
    print_kv("total", str("total_bytes") + " bytes (" + str("bpp") + " bpp)");
    return;
  }
  if (kind == "compressai-state-dict") {
    print_kv("kind", "CompressAI state dict (" + str("key_names") + " key names), " + str("tensors") + " tensors");
    print_kv("architecture", str("architecture_guess") + " (guessed from the keys; import with --arch)");
    print_kv("N, M", str("N") + ", " + str("M"));
    print_kv("scale-table levels", str("scale_table_levels"));
    print_kv("parameters", str("parameters"));
    return;
  }
  print_kv("kind", kind == "checkpoint" ? "training checkpoint" : "exported model");
  print_kv("model", str("model") + " (CompressAI " + str("compressai_architecture") + ")");
  print_kv("N, M", str("N") + ", " + str("M"));
  print_kv("lambda", str("lambda"));
  print_kv("quality", j.at("quality").get<int>() > 0 ? str("quality") : "- (lambda given directly)");
  print_kv("metric", str("metric"));
  print_kv("scale-table levels", str("scale_table_levels"));
  if (j.contains("step")) print_kv("step", str("step"));
  print_kv("parameters", str("parameters"));
  print_kv("fingerprint", str("fingerprint"));
  if (j.contains("stored_fingerprint"))
    print_kv("stored fingerprint", str("stored_fingerprint") + " (differs: the tables were rebuilt on load)");
  print_kv("size", human_bytes(j.at("bytes").get<uintmax_t>()));
}

}  // namespace

int cmd_info(int argc, char** argv) {
  cxxopts::Options opts("lic info", "Describe a checkpoint, an exported model, a CompressAI state dict or a .lic file.");
  opts.add_options()("json", "print one JSON object")("file", "file to describe",
                                                      cxxopts::value<std::vector<std::string>>())(
      "h,help", "show this help");
  opts.parse_positional({"file"});
  opts.positional_help("FILE");
  cxxopts::ParseResult r;
  if (!parse_or_help(opts, argc, argv, r)) return 0;
  check(r.count("file") == 1 && r["file"].as<std::vector<std::string>>().size() == 1, "expected exactly one FILE");
  const auto path = r["file"].as<std::vector<std::string>>()[0];
  const auto raw = read_file(path);

  nlohmann::json j;
  if (raw.size() >= 4 && std::equal(kLicMagic.begin(), kLicMagic.end(), raw.begin())) {
    j = info_bitstream(path, raw);
  } else {
    const auto a = peek_archive(raw);
    if (!a.kind.empty()) {
      j = info_model(path, a);
    } else {
      const auto sd = load_python_dict(path, raw);
      check(!sd.empty(), path + ": a torch.save file without tensors (not a model)");
      try {
        j = info_compressai(path, sd);
      } catch (const Error& e) {
        throw Error(path + ": not a lic model, checkpoint, .lic file or CompressAI state dict");
      }
    }
  }
  if (r.count("json")) std::printf("%s\n", j.dump(2).c_str());
  else print_info(j);
  return 0;
}

}  // namespace lic::cli
