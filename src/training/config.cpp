#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "lic/error.h"
#include "lic/train.h"

namespace lic {

double lambda_for_quality(const std::string& metric, int q) {
  static const double mse[] = {0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800};
  static const double msssim[] = {2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00};
  check(q >= 1 && q <= 8, "quality must be 1..8, got " + std::to_string(q));
  return metric == "ms-ssim" ? msssim[q - 1] : mse[q - 1];
}

void TrainConfig::load_yaml(const std::string& path) {
  check(std::filesystem::is_regular_file(path), "config file not found: " + path);
  YAML::Node y;
  try {
    y = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw Error(path + ": invalid YAML: " + e.what());
  }
  if (y.IsNull()) return;
  check(y.IsMap(), path + ": expected a mapping of settings");
  try {
    for (const auto& kv : y) {
      const auto k = kv.first.as<std::string>();
      const auto& v = kv.second;
      if (k == "model") model = v.as<std::string>();
      else if (k == "N") N = v.as<int64_t>();
      else if (k == "M") M = v.as<int64_t>();
      else if (k == "scale_levels") scale_levels = v.as<int64_t>();
      else if (k == "quality") quality = v.as<int>();
      else if (k == "lambda") lambda = v.as<double>();
      else if (k == "metric") metric = v.as<std::string>();
      else if (k == "data") data = v.as<std::string>();
      else if (k == "val") val = v.as<std::string>();
      else if (k == "out") out = v.as<std::string>();
      else if (k == "steps") steps = v.as<int64_t>();
      else if (k == "batch_size") batch_size = v.as<int64_t>();
      else if (k == "patch") patch = v.as<int64_t>();
      else if (k == "lr") lr = v.as<double>();
      else if (k == "aux_lr") aux_lr = v.as<double>();
      else if (k == "clip_max_norm") clip_max_norm = v.as<double>();
      else if (k == "quantiles") quantiles = v.as<std::string>();
      else if (k == "log_every") log_every = v.as<int64_t>();
      else if (k == "val_every") val_every = v.as<int64_t>();
      else if (k == "ckpt_every") ckpt_every = v.as<int64_t>();
      else if (k == "val_max_images") val_max_images = v.as<int64_t>();
      else if (k == "lr_milestones") lr_milestones = v.as<std::vector<int64_t>>();
      else if (k == "lr_gamma") lr_gamma = v.as<double>();
      else if (k == "plateau_patience") plateau_patience = v.as<int64_t>();
      else if (k == "plateau_factor") plateau_factor = v.as<double>();
      else if (k == "seed") seed = v.as<uint64_t>();
      else if (k == "max_bad_steps") max_bad_steps = v.as<int64_t>();
      else if (k == "prefetch") prefetch = v.as<int>();
      else throw Error(path + ": unknown setting '" + k + "'");
    }
  } catch (const YAML::Exception& e) {
    throw Error(path + ": bad value: " + e.what());
  }
}

void TrainConfig::validate() const {
  canonical_model_name(model);
  check(N > 0 && N <= 1024 && M > 0 && M <= 1024, "N and M must be 1..1024");
  check(scale_levels >= 2 && scale_levels <= 1024, "scale_levels must be 2..1024");
  check(metric == "mse" || metric == "ms-ssim", "metric must be mse or ms-ssim, got '" + metric + "'");
  check(quality >= 0 && quality <= 8, "quality must be 1..8");
  check(quality > 0 || (lambda > 0 && std::isfinite(lambda)), "lambda must be positive, got " + std::to_string(lambda));
  check(!data.empty(), "no training data: give --data DIR or data: in the config");
  check(std::filesystem::is_directory(data), "training data folder not found: " + data);
  check(val.empty() || std::filesystem::is_directory(val), "validation folder not found: " + val);
  check(steps > 0 && steps <= (int64_t(1) << 40), "steps must be positive");
  check(batch_size > 0 && batch_size <= 4096, "batch_size must be 1..4096");
  const int64_t mult = canonical_model_name(model) == "factorized" ? 16 : 64;
  check(patch >= mult && patch <= 4096 && patch % mult == 0,
        "patch must be a multiple of " + std::to_string(mult) + " in " + std::to_string(mult) + "..4096");
  check(lr > 0 && aux_lr > 0 && clip_max_norm > 0, "lr, aux_lr and clip_max_norm must be positive");
  check(quantiles == "aux" || quantiles == "bisection", "quantiles must be aux or bisection");
  check(log_every > 0 && val_every > 0 && ckpt_every > 0, "log_every, val_every and ckpt_every must be positive");
  check(lr_gamma > 0 && lr_gamma <= 1 && plateau_factor > 0 && plateau_factor <= 1,
        "lr_gamma and plateau_factor must be in (0, 1]");
  check(max_bad_steps > 0, "max_bad_steps must be positive");
  check(prefetch >= 1 && prefetch <= 64, "prefetch must be 1..64");
  check(!out.empty(), "--out must not be empty");
}

nlohmann::json TrainConfig::to_json() const {
  return {{"model", model},
          {"N", N},
          {"M", M},
          {"scale_levels", scale_levels},
          {"quality", quality},
          {"lambda", quality > 0 ? lambda_for_quality(metric, quality) : lambda},
          {"metric", metric},
          {"data", data},
          {"val", val},
          {"out", out},
          {"steps", steps},
          {"batch_size", batch_size},
          {"patch", patch},
          {"lr", lr},
          {"aux_lr", aux_lr},
          {"clip_max_norm", clip_max_norm},
          {"quantiles", quantiles},
          {"log_every", log_every},
          {"val_every", val_every},
          {"ckpt_every", ckpt_every},
          {"val_max_images", val_max_images},
          {"lr_milestones", lr_milestones},
          {"lr_gamma", lr_gamma},
          {"plateau_patience", plateau_patience},
          {"plateau_factor", plateau_factor},
          {"seed", seed},
          {"max_bad_steps", max_bad_steps},
          {"prefetch", prefetch}};
}

std::string TrainConfig::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap;
  const auto j = to_json();
  for (const auto& [k, v] : j.items()) {
    e << YAML::Key << k << YAML::Value;
    if (v.is_string()) e << v.get<std::string>();
    else if (v.is_number_integer()) e << v.get<int64_t>();
    else if (v.is_number_unsigned()) e << v.get<uint64_t>();
    else if (v.is_number_float()) e << v.get<double>();
    else if (v.is_array()) e << YAML::Flow << v.get<std::vector<int64_t>>();
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace lic
