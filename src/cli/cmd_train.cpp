#include <spdlog/spdlog.h>

#include <cstdlib>
#include <thread>

#include "commands.h"
#include "lic/distributed.h"
#include "lic/error.h"
#include "lic/train.h"

namespace lic::cli {

int cmd_train(int argc, char** argv) {
  cxxopts::Options o("lic train", "Train a learned image codec end to end on a rate-distortion loss.\n"
                                  "Settings: defaults < --config YAML < flags. Writes OUT/metrics.csv, OUT/metrics.jsonl,\n"
                                  "OUT/config.yaml, OUT/last.ckpt and OUT/best.ckpt.\n"
                                  "Data-parallel: start it with torchrun (PyTorch 1.13: torchrun --no_python --standalone\n"
                                  "--nproc_per_node 2 --redirects 2 --tee 2 lic train ...) or pass --world-size/--rank/\n"
                                  "--master-addr/--master-port to each process; the global batch is --batch-size x world\n"
                                  "size (README: Distributed training).\n");
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
  o.add_options("distributed")
    ("world-size", "processes in the job (default: $WORLD_SIZE, else 1)", cxxopts::value<int>())
    ("rank", "this process's rank, 0..world-size-1 (default: $RANK)", cxxopts::value<int>())
    ("local-rank", "GPU index on this node with --device cuda (default: $LOCAL_RANK, else 0)", cxxopts::value<int>())
    ("master-addr", "host of rank 0's TCPStore (default: $MASTER_ADDR, else 127.0.0.1)", cxxopts::value<std::string>())
    ("master-port", "port of rank 0's TCPStore (default: $MASTER_PORT, else 29500)", cxxopts::value<int>())
    ("dist-timeout", "seconds before a dead or hung rank makes the others fail", cxxopts::value<double>()->default_value("120"));
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

  // Distributed: torchrun's environment, overridden by flags; one process without either.
  DistOptions d;
  read_torchrun_env(d);
  if (r.count("world-size")) d.world_size = r["world-size"].as<int>();
  if (r.count("rank")) d.rank = r["rank"].as<int>();
  if (r.count("local-rank")) d.local_rank = r["local-rank"].as<int>();
  if (r.count("master-addr")) d.master_addr = r["master-addr"].as<std::string>();
  if (r.count("master-port")) d.master_port = r["master-port"].as<int>();
  d.timeout_s = r["dist-timeout"].as<double>();
  check(d.world_size >= 1, "--world-size must be at least 1");
  check(d.timeout_s > 0, "--dist-timeout must be positive");
  std::unique_ptr<DistCollective> dist;
  if (d.enabled()) {
    check(d.rank >= 0 && d.rank < d.world_size,
          "--rank " + std::to_string(d.rank) + " is outside 0.." + std::to_string(d.world_size - 1));
    if (c.device.rfind("cuda", 0) == 0) {
      // One GPU per process, chosen by the local rank; NCCL between them.
      const int n = static_cast<int>(torch::cuda::device_count());
      check(n > 0, "--device cuda: no GPU visible");
      c.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.local_rank % n)).str();
      d.backend = "nccl";
    }
    // Only rank 0 logs (warnings and errors still show on every rank, marked with it).
    if (d.rank != 0) {
      spdlog::set_level(spdlog::level::warn);
      spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%l] %v", d.rank));
    }
    // --threads 0 (all cores) shares the cores among the processes of this node.
    if (!r.count("threads") || r["threads"].as<int>() == 0) {
      int local = 0;
      if (const char* e = std::getenv("LOCAL_WORLD_SIZE")) local = std::atoi(e);
      if (local > 1) torch::set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local));
    }
    c.validate();  // a bad setting fails here, before the other ranks wait for this one
    spdlog::info("rank {}/{}: joining the {} process group at {}:{} (timeout {:g} s)", d.rank, d.world_size,
                 d.backend, d.master_addr, d.master_port, d.timeout_s);
    dist = make_process_group(d, c.device);
  }
  auto res = train(c, dist.get());
  if (res.exit_code == 0) spdlog::info("done: {} steps, checkpoints in {}", res.step, c.out);
  return res.exit_code;
}

}  // namespace lic::cli
