#include <spdlog/spdlog.h>

#include "commands.h"
#include "lic/error.h"
#include "lic/train.h"

namespace lic::cli {

int cmd_train(int argc, char** argv) {
  cxxopts::Options o("lic train", "Train a learned image codec end to end on a rate-distortion loss.\n"
                                  "Settings: defaults < --config YAML < flags. Writes OUT/metrics.csv, OUT/metrics.jsonl,\n"
                                  "OUT/config.yaml, OUT/last.ckpt and OUT/best.ckpt.\n");
  // clang-format off
  o.add_options()
    ("config", "YAML configuration (configs/*.yaml)", cxxopts::value<std::string>())
    ("model", "factorized | hyperprior | mean-scale", cxxopts::value<std::string>())
    ("N-channels", "--N: transform channels", cxxopts::value<int64_t>())
    ("M-channels", "--M: latent channels", cxxopts::value<int64_t>())
    ("scale-levels", "Gaussian scale-table entries", cxxopts::value<int64_t>())
    ("data", "training image folder (recursive)", cxxopts::value<std::string>())
    ("val", "validation image folder", cxxopts::value<std::string>())
    ("out", "run folder", cxxopts::value<std::string>())
    ("steps", "training steps", cxxopts::value<int64_t>())
    ("batch-size", "images per step (per process)", cxxopts::value<int64_t>())
    ("patch", "random crop size", cxxopts::value<int64_t>())
    ("lambda", "rate-distortion trade-off", cxxopts::value<double>())
    ("quality", "1..8: lambda from the standard table", cxxopts::value<int>())
    ("metric", "mse | ms-ssim", cxxopts::value<std::string>())
    ("lr", "learning rate", cxxopts::value<double>())
    ("aux-lr", "quantile (aux) learning rate", cxxopts::value<double>())
    ("quantiles", "aux | bisection", cxxopts::value<std::string>())
    ("lr-milestones", "steps where lr *= lr-gamma (comma list)", cxxopts::value<std::vector<int64_t>>())
    ("log-every", "steps per logging window", cxxopts::value<int64_t>())
    ("val-every", "steps between validations", cxxopts::value<int64_t>())
    ("ckpt-every", "steps between checkpoints", cxxopts::value<int64_t>())
    ("seed", "random seed (repeatable runs on CPU)", cxxopts::value<uint64_t>())
    ("resume", "continue from OUT/last.ckpt")
    ("force", "start over in an OUT that already holds a run");
  // clang-format on
  add_runtime_options(o);
  cxxopts::ParseResult r;
  if (!parse_or_help(o, argc, argv, r)) return 0;
  check(r.unmatched().empty(), "unexpected argument '" + (r.unmatched().empty() ? "" : r.unmatched()[0]) + "'");

  TrainConfig c;
  if (r.count("config")) c.load_yaml(r["config"].as<std::string>());
  auto set = [&r](const char* k, auto& field) {
    if (r.count(k)) field = r[k].as<std::remove_reference_t<decltype(field)>>();
  };
  set("model", c.model);
  set("N-channels", c.N);
  set("M-channels", c.M);
  set("scale-levels", c.scale_levels);
  set("data", c.data);
  set("val", c.val);
  set("out", c.out);
  set("steps", c.steps);
  set("batch-size", c.batch_size);
  set("patch", c.patch);
  set("metric", c.metric);
  set("lr", c.lr);
  set("aux-lr", c.aux_lr);
  set("quantiles", c.quantiles);
  set("lr-milestones", c.lr_milestones);
  set("log-every", c.log_every);
  set("val-every", c.val_every);
  set("ckpt-every", c.ckpt_every);
  set("seed", c.seed);
  if (r.count("lambda")) {
    c.lambda = r["lambda"].as<double>();
    c.quality = 0;
  }
  set("quality", c.quality);
  c.resume = r.count("resume") > 0;
  c.force = r.count("force") > 0;
  c.device = setup_runtime(r).str();
  auto res = train(c);
  if (res.exit_code == 0) spdlog::info("done: {} steps, checkpoints in {}", res.step, c.out);
  return res.exit_code;
}

}  // namespace lic::cli
