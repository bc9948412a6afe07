// lic eval: rate / distortion / timings of models and classic codecs on an image folder.
// lic bd-rate: Bjontegaard deltas between the RD curves of eval reports.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <opencv2/core/version.hpp>
#include <string>

#include "commands.h"
#include "lic/atomic_file.h"
#include "lic/bd_rate.h"
#include "lic/checkpoint.h"
#include "lic/classic_codecs.h"
#include "lic/error.h"
#include "lic/evaluate.h"
#include "lic/image.h"

namespace lic::cli {

namespace fs = std::filesystem;

namespace {

// "image 5/24  2.1 img/s  ETA 0:07" on stderr: rewritten in place on a terminal, a line
// every ~15 s (and at the end) otherwise.
class Progress {
 public:
  explicit Progress(std::string what) : what_(std::move(what)), tty_(::isatty(2) == 1) {}
  void operator()(size_t done, size_t total) {
    const auto now = std::chrono::steady_clock::now();
    const double el = std::chrono::duration<double>(now - t0_).count();
    const bool last = done == total;
    if (!tty_ && !last && std::chrono::duration<double>(now - last_print_).count() < 15.0) return;
    last_print_ = now;
    const double rate = el > 0 ? double(done) / el : 0.0;
    const double eta = rate > 0 ? double(total - done) / rate : 0.0;
    const int bar = 20, fill = total ? int(bar * done / total) : bar;
    std::fprintf(stderr, "%s%s [%s%s] image %zu/%zu  %.2f img/s  %s %s%s", tty_ ? "\r" : "", what_.c_str(),
                 std::string(fill, '#').c_str(), std::string(bar - fill, ' ').c_str(), done, total, rate,
                 last ? "took" : "ETA", clock(last ? el : eta).c_str(), tty_ && !last ? "   " : "\n");
    std::fflush(stderr);
  }

 private:
  static std::string clock(double s) {
    const long t = std::lround(s);
    char buf[32];
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
      std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
    return buf;
  }
  std::string what_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now(), last_print_ = t0_;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<int> default_qualities(const std::string& codec) {
  if (codec == "jpeg2000") return {1, 2, 4, 8, 16};  // ~0.24 * q bpp target sizes
  return {10, 30, 50, 70, 90};
}

std::string describe_model(const ModelMeta& m, const std::string& path) {
  std::ostringstream os;
  os << "lic " << m.name << " N=" << m.N << " M=" << m.M;
  if (m.quality) os << " quality=" << m.quality;
  if (m.lambda > 0) os << " lambda=" << m.lambda;
  os << " metric=" << m.metric << " (" << path << "), rANS-coded";
  return os.str();
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  cxxopts::Options o(
      "lic eval",
      "Rate, distortion and timings on an image folder, with real entropy coding.\n\n"
      "Curves: every --model is its own report (one point), named by --name (in order) or the\n"
      "model file's stem; a single --name with several models makes them ONE curve (one point\n"
      "per model). Every --codec is one report with one point per --qualities entry (default\n"
      "10,30,50,70,90; jpeg2000: 1,2,4,8,16). Lists may be comma-separated or repeated.\n"
      "--json writes one report object when there is exactly one curve, otherwise an array of\n"
      "report objects (CompressAI layout: name, description, results {metric: [mean per point]},\n"
      "per_image). --csv writes one row per image per point.");
  o.add_options()("m,model", "model file(s) (lic export or checkpoint)", cxxopts::value<std::vector<std::string>>())(
      "codec", "classic codec(s): jpeg, webp, jpeg2000", cxxopts::value<std::vector<std::string>>())(
      "d,data", "image folder (searched recursively)", cxxopts::value<std::string>())(
      "qualities", "classic codec qualities (1..100)", cxxopts::value<std::vector<int>>())(
      "json", "write the report(s) as JSON", cxxopts::value<std::string>())(
      "csv", "write per-image results as CSV", cxxopts::value<std::string>())(
      "name", "report name(s) for the models", cxxopts::value<std::vector<std::string>>())(
      "limit", "only the first K images (0 = all)", cxxopts::value<int>()->default_value("0"))(
      "no-progress", "no progress bar");
  add_runtime_options(o);
  cxxopts::ParseResult r;
  if (!parse_or_help(o, argc, argv, r)) return 0;
  check(r.unmatched().empty(), "unexpected argument '" + (r.unmatched().empty() ? "" : r.unmatched()[0]) + "'");

  std::vector<std::string> models, codecs, names;
  if (r.count("model")) models = r["model"].as<std::vector<std::string>>();
  if (r.count("codec")) codecs = r["codec"].as<std::vector<std::string>>();
  if (r.count("name")) names = r["name"].as<std::vector<std::string>>();
  check(!models.empty() || !codecs.empty(), "give at least one --model or --codec");
  check(r.count("data") == 1, "--data DIR is required");
  check(names.empty() || names.size() == 1 || names.size() == models.size(),
        "--name: give one name per --model (" + std::to_string(models.size()) + "), or one name for a single curve");
  check(!(names.size() > 0 && models.empty()), "--name applies to --model reports (codecs are named by the codec)");
  for (const auto& c : codecs) {
    bool known = false;
    for (const auto& k : classic_codec_names()) known |= k == c;
    check(known, "unknown codec '" + c + "' (expected jpeg, webp or jpeg2000)");
    check(classic_codec_available(c), "codec " + c + " is not available in this OpenCV build");
  }
  std::vector<int> qualities;
  if (r.count("qualities")) {
    check(!codecs.empty(), "--qualities applies to --codec");
    qualities = r["qualities"].as<std::vector<int>>();
    for (int q : qualities) check(q >= 1 && q <= 100, "--qualities: " + std::to_string(q) + " is not in 1..100");
  }
  const int limit = r["limit"].as<int>();
  check(limit >= 0, "--limit must be >= 0");
  const auto data = r["data"].as<std::string>();
  const auto json_path = r.count("json") ? r["json"].as<std::string>() : std::string();
  const auto csv_path = r.count("csv") ? r["csv"].as<std::string>() : std::string();
  const auto device = setup_runtime(r);

  auto images = list_images(data);
  check(!images.empty(), "no images in " + data + " (png, jpg, jpeg, webp, bmp, tif, tiff, ppm, pgm)");
  if (limit > 0 && images.size() > size_t(limit)) images.resize(size_t(limit));
  const bool show = !r.count("no-progress");

  std::vector<EvalReport> reports;
  // Models: load all first so a bad path fails before any work.
  std::vector<ModelPtr> loaded;
  std::vector<ModelMeta> metas;
  for (const auto& p : models) {
    ModelMeta meta;
    loaded.push_back(load_model(p, &meta));
    loaded.back()->to(device);
    metas.push_back(meta);
  }
  if (!models.empty() && names.size() == 1 && models.size() > 1) {
    std::vector<CompressionModel*> ms;
    for (auto& m : loaded) ms.push_back(m.get());
    Progress prog(names[0]);
    auto rep = evaluate_models(ms, models, images, data, show ? EvalProgress(std::ref(prog)) : EvalProgress());
    rep.name = names[0];
    rep.description = "lic curve of " + std::to_string(models.size()) + " models: " + describe_model(metas[0], models[0]);
    for (size_t k = 1; k < models.size(); ++k) rep.description += "; " + describe_model(metas[k], models[k]);
    reports.push_back(std::move(rep));
  } else {
    for (size_t k = 0; k < models.size(); ++k) {
      const std::string name = names.empty() ? fs::path(models[k]).stem().string() : names[k];
      Progress prog(name);
      auto rep = evaluate_models({loaded[k].get()}, {models[k]}, images, data,
                                 show ? EvalProgress(std::ref(prog)) : EvalProgress());
      rep.name = name;
      rep.description = describe_model(metas[k], models[k]);
      reports.push_back(std::move(rep));
    }
  }
  for (const auto& c : codecs) {
    Progress prog(c);
    auto rep = evaluate_classic(c, qualities.empty() ? default_qualities(c) : qualities, images, data,
                                show ? EvalProgress(std::ref(prog)) : EvalProgress());
    rep.description = std::string("OpenCV ") + CV_VERSION + " " + c;
    reports.push_back(std::move(rep));
  }

  std::printf("%zu image(s) from %s\n%s", images.size(), data.c_str(), reports_table(reports).c_str());
  if (!json_path.empty()) {
    write_file_atomic(json_path, reports_to_json(reports).dump(2) + "\n");
    std::printf("wrote %s\n", json_path.c_str());
  }
  if (!csv_path.empty()) {
    write_file_atomic(csv_path, reports_to_csv(reports));
    std::printf("wrote %s\n", csv_path.c_str());
  }
  return 0;
}

namespace {

using Curve = std::pair<std::string, std::vector<RdPoint>>;

nlohmann::json read_json(const std::string& path) {
  const auto bytes = read_file(path);
  try {
    return nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
}

// The curves of one file: reports with the same name are merged (in order of appearance).
std::vector<Curve> file_curves(const std::string& path, const std::string& metric) {
  std::vector<Curve> out;
  for (auto& [name, pts] : rd_curves_from_json(read_json(path), path, metric)) {
    auto it = std::find_if(out.begin(), out.end(), [&](const Curve& c) { return c.first == name; });
    if (it == out.end())
      out.emplace_back(name, pts);
    else
      it->second.insert(it->second.end(), pts.begin(), pts.end());
  }
  return out;
}

// All points of all reports in the files: one curve (named after the first report).
Curve merged_curve(const std::vector<std::string>& files, const std::string& metric) {
  Curve c;
  for (const auto& f : files)
    for (auto& [name, pts] : file_curves(f, metric)) {
      if (c.first.empty()) c.first = name;
      c.second.insert(c.second.end(), pts.begin(), pts.end());
    }
  return c;
}

}  // namespace

int cmd_bd_rate(int argc, char** argv) {
  cxxopts::Options o(
      "lic bd-rate",
      "Bjontegaard delta rate (%) and delta quality (dB) of test curves against an anchor, from\n"
      "`lic eval --json` reports (an object or an array of objects; points are results.bpp and\n"
      "results.psnr-rgb).\n\n"
      "  lic bd-rate ANCHOR.json TEST.json [TEST2.json ...]\n"
      "      the anchor file must hold one curve (reports with the same name are one curve; pick\n"
      "      one with --anchor-name); every curve of every test file is compared.\n"
      "  lic bd-rate --anchor a1.json,a2.json --test t1.json,t2.json\n"
      "      all points of the listed files form one anchor / one test curve (e.g. one file per\n"
      "      model); extra positional files are further tests.\n"
      "Negative BD-rate = the test needs fewer bits for the same quality.");
  o.add_options()("anchor", "anchor report file(s), merged into one curve",
                  cxxopts::value<std::vector<std::string>>())(
      "test", "test report file(s), merged into one curve", cxxopts::value<std::vector<std::string>>())(
      "anchor-name", "the curve of the anchor file to use", cxxopts::value<std::string>())(
      "metric", "quality metric: psnr-rgb or ms-ssim-rgb (in dB)",
      cxxopts::value<std::string>()->default_value("psnr-rgb"))(
      "files", "report files", cxxopts::value<std::vector<std::string>>())("h,help", "show this help");
  o.parse_positional({"files"});
  o.positional_help("ANCHOR.json TEST.json [...]");
  cxxopts::ParseResult r;
  if (!parse_or_help(o, argc, argv, r)) return 0;
  const auto metric = r["metric"].as<std::string>();
  check(metric == "psnr-rgb" || metric == "ms-ssim-rgb", "--metric must be psnr-rgb or ms-ssim-rgb");
  std::vector<std::string> files;
  if (r.count("files")) files = r["files"].as<std::vector<std::string>>();

  Curve anchor;
  std::string anchor_src;
  if (r.count("anchor")) {
    const auto af = r["anchor"].as<std::vector<std::string>>();
    anchor = merged_curve(af, metric);
    for (const auto& f : af) anchor_src += (anchor_src.empty() ? "" : ",") + f;
  } else {
    check(!files.empty(), "no anchor given (lic bd-rate ANCHOR.json TEST.json, or --anchor FILES)");
    anchor_src = files.front();
    auto curves = file_curves(files.front(), metric);
    files.erase(files.begin());
    if (r.count("anchor-name")) {
      const auto want = r["anchor-name"].as<std::string>();
      auto it = std::find_if(curves.begin(), curves.end(), [&](const Curve& c) { return c.first == want; });
      check(it != curves.end(), anchor_src + " has no curve named '" + want + "'");
      anchor = *it;
    } else {
      std::string all;
      for (const auto& c : curves) all += (all.empty() ? "" : ", ") + c.first;
      check(curves.size() == 1, anchor_src + " holds several curves (" + all + "): choose one with --anchor-name");
      anchor = curves.front();
    }
  }
  std::vector<Curve> tests;
  if (r.count("test")) tests.push_back(merged_curve(r["test"].as<std::vector<std::string>>(), metric));
  for (const auto& f : files)
    for (auto& c : file_curves(f, metric)) tests.push_back(std::move(c));
  check(!tests.empty(), "no test curve given");

  const std::string qname = metric == "psnr-rgb" ? "BD-PSNR" : "BD-MS-SSIM";
  std::printf("anchor: %s (%zu points, %s), quality: %s\n", anchor.first.c_str(), anchor.second.size(),
              anchor_src.c_str(), metric.c_str());
  size_t w = 4;
  for (const auto& t : tests) w = std::max(w, t.first.size());
  std::printf("%-*s  %10s  %12s\n", int(w), "test", "BD-rate", qname.c_str());
  std::vector<std::string> failures;
  for (const auto& t : tests) {
    try {
      const double rate = bd_rate(anchor.second, t.second);
      const double dq = bd_psnr(anchor.second, t.second);
      std::printf("%-*s  %+9.2f%%  %+9.3f dB\n", int(w), t.first.c_str(), rate, dq);
    } catch (const Error& e) {
      if (tests.size() == 1) throw Error(t.first + " vs " + anchor.first + ": " + e.what());
      std::printf("%-*s  %10s  %12s  (%s)\n", int(w), t.first.c_str(), "n/a", "n/a", e.what());
      failures.push_back(t.first);
    }
  }
  if (!failures.empty()) {
    std::fflush(stdout);
    std::fprintf(stderr, "lic bd-rate: error: %zu of %zu comparisons failed\n", failures.size(), tests.size());
    return 1;
  }
  return 0;
}

}  // namespace lic::cli
