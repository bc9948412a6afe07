#include "lic/evaluate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "lic/bitstream.h"
#include "lic/classic_codecs.h"
#include "lic/codec.h"
#include "lic/error.h"
#include "lic/metrics.h"

namespace lic {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 8-bit versions of both images as float32 NCHW in [0, 255] (exact; CompressAI computes
// its metrics in float32 too; mse() accumulates in double, ms_ssim in float32 is ~4x faster).
std::pair<torch::Tensor, torch::Tensor> as_8bit(const torch::Tensor& x, const torch::Tensor& x_hat) {
  auto a = to_uint8_hwc(x).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
  auto b = to_uint8_hwc(x_hat).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
  return {a.contiguous(), b.contiguous()};
}

void set_distortion(ImageRecord& r, const torch::Tensor& x, const torch::Tensor& x_hat) {
  auto [a, b] = as_8bit(x, x_hat);
  r.set("psnr-rgb", psnr(a, b, 255.0));
  r.set("ms-ssim-rgb", ms_ssim(a, b, 255.0).item<double>());
}

std::string relative_name(const std::string& path, const std::string& root) {
  if (root.empty()) return path;
  auto rel = fs::path(path).lexically_relative(fs::path(root));
  if (rel.empty() || rel.native().rfind("..", 0) == 0) return fs::path(path).filename().string();
  return rel.string();
}

std::string fmt(double v, const char* f) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Records and reports
// ---------------------------------------------------------------------------------------

void ImageRecord::set(const std::string& key, double v) {
  for (auto& kv : values)
    if (kv.first == key) {
      kv.second = v;
      return;
    }
  values.emplace_back(key, v);
}

double ImageRecord::get(const std::string& key) const {
  for (const auto& kv : values)
    if (kv.first == key) return kv.second;
  return kNaN;
}

bool ImageRecord::has(const std::string& key) const {
  for (const auto& kv : values)
    if (kv.first == key) return true;
  return false;
}

double EvalPoint::mean(const std::string& key) const {
  double sum = 0;
  size_t n = 0;
  for (const auto& r : images)
    if (r.has(key)) {
      sum += r.get(key);
      ++n;
    }
  return n ? sum / double(n) : kNaN;
}

std::vector<std::string> EvalReport::keys() const {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& p : points)
    for (const auto& r : p.images)
      for (const auto& kv : r.values)
        if (seen.insert(kv.first).second) out.push_back(kv.first);
  return out;
}

nlohmann::ordered_json EvalReport::to_json() const {
  nlohmann::ordered_json j;
  j["name"] = name;
  j["description"] = description;
  nlohmann::ordered_json results = nlohmann::ordered_json::object();
  if (classic) {
    results["quality"] = nlohmann::ordered_json::array();
    for (const auto& p : points) results["quality"].push_back(p.quality);
  } else {
    results["model"] = nlohmann::ordered_json::array();
    for (const auto& p : points) results["model"].push_back(p.label);
  }
  const auto ks = keys();
  // Per-latent details stay in per_image; results hold the headline metrics.
  auto headline = [](const std::string& k) {
    auto ends = [&k](const char* suf) { return k.size() > 2 && k.compare(k.size() - 2, 2, suf) == 0; };
    return !ends("_y") && !ends("_z") && k != "decoded_matches_forward";
  };
  for (const auto& k : ks) {
    if (!headline(k)) continue;
    auto arr = nlohmann::ordered_json::array();
    for (const auto& p : points) arr.push_back(p.mean(k));
    results[k] = arr;
  }
  j["results"] = results;
  auto per = nlohmann::ordered_json::array();
  for (const auto& p : points)
    for (const auto& r : p.images) {
      nlohmann::ordered_json e;
      e["image"] = r.image;
      if (classic)
        e["quality"] = p.quality;
      else
        e["model"] = p.label;
      e["height"] = r.height;
      e["width"] = r.width;
      for (const auto& kv : r.values) e[kv.first] = kv.second;
      per.push_back(e);
    }
  j["per_image"] = per;
  return j;
}

nlohmann::ordered_json reports_to_json(const std::vector<EvalReport>& reports) {
  if (reports.size() == 1) return reports[0].to_json();
  auto a = nlohmann::ordered_json::array();
  for (const auto& r : reports) a.push_back(r.to_json());
  return a;
}

std::string reports_to_csv(const std::vector<EvalReport>& reports) {
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const auto& rep : reports)
    for (const auto& k : rep.keys())
      if (seen.insert(k).second) keys.push_back(k);
  std::ostringstream os;
  os << "name,point,quality,image,height,width";
  for (const auto& k : keys) os << ',' << csv_field(k);
  os << '\n';
  for (const auto& rep : reports)
    for (const auto& p : rep.points)
      for (const auto& r : p.images) {
        os << csv_field(rep.name) << ',' << csv_field(p.label) << ',';
        if (rep.classic) os << p.quality;
        os << ',' << csv_field(r.image) << ',' << r.height << ',' << r.width;
        for (const auto& k : keys) {
          os << ',';
          if (r.has(k)) os << fmt(r.get(k), "%.9g");
        }
        os << '\n';
      }
  return os.str();
}

std::string reports_table(const std::vector<EvalReport>& reports) {
  struct Row {
    std::string cells[8];
  };
  std::vector<Row> rows;
  rows.push_back({{"name", "point", "bpp", "bpp_est", "psnr", "ms-ssim", "enc s", "dec s"}});
  for (const auto& rep : reports)
    for (const auto& p : rep.points) {
      std::string label = rep.classic ? "q=" + std::to_string(p.quality) : fs::path(p.label).filename().string();
      rows.push_back({{rep.name, label, fmt(p.mean("bpp"), "%.4f"), fmt(p.mean("bpp_estimated"), "%.4f"),
                       fmt(p.mean("psnr-rgb"), "%.2f"), fmt(p.mean("ms-ssim-rgb"), "%.4f"),
                       fmt(p.mean("encoding_time"), "%.3f"), fmt(p.mean("decoding_time"), "%.3f")}});
    }
  size_t width[8] = {};
  for (const auto& r : rows)
    for (int i = 0; i < 8; ++i) width[i] = std::max(width[i], r.cells[i].size());
  std::ostringstream os;
  for (size_t k = 0; k < rows.size(); ++k) {
    for (int i = 0; i < 8; ++i) {
      const auto& c = rows[k].cells[i];
      if (i < 2)  // text: left-aligned
        os << c << std::string(width[i] - c.size(), ' ');
      else
        os << std::string(width[i] - c.size(), ' ') << c;
      os << (i < 7 ? "  " : "\n");
    }
  }
  return os.str();
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

double plugin_entropy_bits(const torch::Tensor& symbols, const torch::Tensor& groups) {
  torch::NoGradGuard ng;
  auto s = symbols.reshape(-1).to(torch::kLong).cpu();
  auto g = groups.reshape(-1).to(torch::kLong).cpu();
  check(s.numel() == g.numel(), "plugin_entropy_bits: symbols and groups differ in length");
  if (s.numel() == 0) return 0.0;
  const int64_t smin = s.min().item<int64_t>();
  const int64_t span = s.max().item<int64_t>() - smin + 1;
  check(g.min().item<int64_t>() >= 0, "plugin_entropy_bits: negative group");
  auto key = g * span + (s - smin);
  auto uniq = at::_unique2(key, /*sorted=*/true, /*return_inverse=*/false, /*return_counts=*/true);
  const auto& ukeys = std::get<0>(uniq);
  auto counts = std::get<2>(uniq).to(torch::kDouble);
  auto ugroup = torch::div(ukeys, span, "floor");
  auto gu = at::_unique2(ugroup, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/false);
  const auto& slot = std::get<1>(gu);
  auto n_g = torch::zeros({std::get<0>(gu).numel()}, torch::kDouble).index_add_(0, slot, counts);
  return (counts * (torch::log2(n_g.index_select(0, slot)) - torch::log2(counts))).sum().item<double>();
}

ImageRecord evaluate_model_image(CompressionModel& m, const Image& img, const std::string& name) {
  torch::NoGradGuard ng;
  const auto& x = img.x;
  check(x.defined() && x.dim() == 4, "evaluate: bad image tensor for " + name);
  ImageRecord r;
  r.image = name;
  r.height = x.size(2);
  r.width = x.size(3);
  const double px = double(r.height) * double(r.width);
  m.update_tables();

  auto t0 = std::chrono::steady_clock::now();
  LicFile f = encode_image(m, img, ModelMeta{});
  const std::vector<uint8_t> bytes = serialize(f);
  const double enc_s = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  LicFile g = parse(bytes);
  torch::Tensor x_hat = decode_image(m, g).to(torch::kCPU);
  const double dec_s = seconds_since(t0);

  // Estimates from the eval-mode forward of the padded image.
  auto out = forward_eval(m, pad_for_codec(x));
  auto x_fwd = crop_to(out.x_hat.clamp(0, 1), r.height, r.width).to(torch::kCPU);
  auto symbols = m.coded_symbols(out);

  size_t payload = 0;
  for (const auto& s : f.streams) payload += s.size();
  r.set("bpp", double(bytes.size()) * 8.0 / px);
  r.set("bpp_payload", double(payload) * 8.0 / px);
  double est = 0;
  std::vector<std::pair<std::string, double>> est_parts;
  for (const auto& [lname, lik] : out.likelihoods) {
    const double b = -torch::log2(lik.to(torch::kFloat64)).sum().item<double>();
    est += b;
    est_parts.emplace_back(lname, b);
  }
  r.set("bpp_estimated", est / px);
  double ce = 0, ent = 0;
  std::vector<std::tuple<std::string, double, double>> sym_parts;
  for (const auto& ls : symbols) {
    const double c = ls.bits.sum().item<double>();
    const double e = plugin_entropy_bits(ls.symbols, ls.groups);
    ce += c;
    ent += e;
    sym_parts.emplace_back(ls.name, c, e);
  }
  r.set("ce", ce / px);
  r.set("entropy", ent / px);
  r.set("kl", (ce - ent) / px);
  set_distortion(r, x, x_hat);
  r.set("encoding_time", enc_s);
  r.set("decoding_time", dec_s);
  // Per latent. Streams are in the model's order, the same as coded_symbols'.
  for (size_t i = 0; i < f.streams.size(); ++i) {
    const std::string lname = i < symbols.size() ? symbols[i].name : "s" + std::to_string(i);
    r.set("bpp_payload_" + lname, double(f.streams[i].size()) * 8.0 / px);
  }
  for (const auto& [lname, b] : est_parts) r.set("bpp_estimated_" + lname, b / px);
  for (const auto& [lname, c, e] : sym_parts) {
    r.set("ce_" + lname, c / px);
    r.set("entropy_" + lname, e / px);
  }
  r.set("decoded_matches_forward", torch::equal(x_fwd, x_hat) ? 1.0 : 0.0);
  return r;
}

ImageRecord evaluate_classic_image(const std::string& codec, int quality, const Image& img, const std::string& name) {
  torch::NoGradGuard ng;
  const auto& x = img.x;
  ImageRecord r;
  r.image = name;
  r.height = x.size(2);
  r.width = x.size(3);
  const double px = double(r.height) * double(r.width);
  auto c = classic_roundtrip(codec, x, quality);
  r.set("bpp", double(c.bytes.size()) * 8.0 / px);
  set_distortion(r, x, c.x_hat);
  r.set("encoding_time", c.encode_s);
  r.set("decoding_time", c.decode_s);
  return r;
}

EvalReport evaluate_models(const std::vector<CompressionModel*>& models, const std::vector<std::string>& labels,
                           const std::vector<std::string>& images, const std::string& root,
                           const EvalProgress& progress) {
  check(!models.empty(), "evaluate: no model");
  check(labels.size() == models.size(), "evaluate: one label per model needed");
  EvalReport rep;
  rep.classic = false;
  for (const auto& l : labels) rep.points.push_back({l, 0, {}});
  for (const auto& path : images) {
    const Image img = load_image(path);
    const auto name = relative_name(path, root);
    for (size_t k = 0; k < models.size(); ++k) {
      rep.points[k].images.push_back(evaluate_model_image(*models[k], img, name));
    }
    if (progress) progress(rep.points[0].images.size(), images.size());
  }
  return rep;
}

EvalReport evaluate_classic(const std::string& codec, const std::vector<int>& qualities,
                            const std::vector<std::string>& images, const std::string& root,
                            const EvalProgress& progress) {
  check(!qualities.empty(), "evaluate: no quality given for " + codec);
  check(classic_codec_available(codec), "codec " + codec + " is not available in this OpenCV build");
  EvalReport rep;
  rep.classic = true;
  rep.name = codec;
  for (int q : qualities) rep.points.push_back({"q=" + std::to_string(q), q, {}});
  for (const auto& path : images) {
    const Image img = load_image(path);
    const auto name = relative_name(path, root);
    for (size_t k = 0; k < qualities.size(); ++k) {
      rep.points[k].images.push_back(evaluate_classic_image(codec, qualities[k], img, name));
    }
    if (progress) progress(rep.points[0].images.size(), images.size());
  }
  return rep;
}

// ---------------------------------------------------------------------------------------
// Reading reports back (bd-rate)
// ---------------------------------------------------------------------------------------

std::vector<std::pair<std::string, std::vector<RdPoint>>> rd_curves_from_json(const nlohmann::json& j,
                                                                              const std::string& what,
                                                                              const std::string& quality_key,
                                                                              const std::string& rate_key) {
  std::vector<const nlohmann::json*> reports;
  if (j.is_array()) {
    for (const auto& e : j) reports.push_back(&e);
  } else {
    reports.push_back(&j);
  }
  check(!reports.empty(), what + ": no report in the file");
  std::vector<std::pair<std::string, std::vector<RdPoint>>> out;
  for (size_t i = 0; i < reports.size(); ++i) {
    const auto& r = *reports[i];
    const std::string where = what + (reports.size() > 1 ? " [" + std::to_string(i) + "]" : "");
    check(r.is_object(), where + ": expected a report object");
    check(r.contains("results") && r["results"].is_object(), where + ": no \"results\" object");
    const auto& res = r["results"];
    for (const auto& k : {rate_key, quality_key})
      check(res.contains(k) && res[k].is_array(), where + ": results has no \"" + k + "\" array");
    const auto& rates = res[rate_key];
    const auto& quals = res[quality_key];
    check(rates.size() == quals.size(), where + ": results \"" + rate_key + "\" and \"" + quality_key +
                                            "\" differ in length");
    std::string name = r.contains("name") && r["name"].is_string() ? r["name"].get<std::string>() : what;
    std::vector<RdPoint> pts;
    for (size_t k = 0; k < rates.size(); ++k) {
      check(rates[k].is_number() && quals[k].is_number(),
            where + ": non-numeric value in results (point " + std::to_string(k) + ")");
      double q = quals[k].get<double>();
      if (quality_key.rfind("ms-ssim", 0) == 0) q = ms_ssim_db(q);
      pts.push_back({rates[k].get<double>(), q});
    }
    out.emplace_back(name, pts);
  }
  return out;
}

}  // namespace lic
