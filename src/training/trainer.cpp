#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "lic/atomic_file.h"
#include "lic/checkpoint.h"
#include "lic/codec.h"
#include "lic/data.h"
#include "lic/distributed.h"
#include "lic/error.h"
#include "lic/image.h"
#include "lic/metrics.h"
#include "lic/rate_stats.h"
#include "lic/train.h"

namespace fs = std::filesystem;

namespace lic {
namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal = sig; }

const std::vector<std::string> kColumns = {
    "step",      "split",     "loss",      "mse",  "psnr", "ms_ssim", "bpp",          "ce",
    "ce_y",      "ce_z",      "entropy",   "entropy_y", "entropy_z", "kl", "kl_y", "kl_z",
    "aux_loss",  "lr",        "images_per_s", "skipped_steps", "bad_files", "elapsed_s"};

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

// Rate-distortion loss of one forward pass.
struct RdTerms {
  torch::Tensor loss, bpp, mse, ms_ssim;
};

RdTerms rd_loss(const ForwardOutput& o, const torch::Tensor& x, double lambda, const std::string& metric,
                double pixels) {
  RdTerms t;
  t.bpp = torch::zeros({}, x.options());
  for (const auto& [name, l] : o.likelihoods) t.bpp = t.bpp + torch::log(l).sum() / (-std::log(2.0) * pixels);
  t.mse = torch::mse_loss(o.x_hat, x);
  if (metric == "ms-ssim") {
    t.ms_ssim = ms_ssim(o.x_hat, x, 1.0);
    t.loss = lambda * (1 - t.ms_ssim) + t.bpp;
  } else {
    t.loss = lambda * 255 * 255 * t.mse + t.bpp;
  }
  return t;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
}

// CDF tables are derived from the weights (update_tables) and their size varies: they are
// not sent between ranks.
bool is_table_buffer(const std::string& key) {
  for (const char* s : {"_quantized_cdf", "_cdf_length", "_offset"}) {
    const size_t n = std::strlen(s);
    if (key.size() >= n && key.compare(key.size() - n, n, s) == 0) return true;
  }
  return false;
}

// Bytes from rank 0 to every rank (size first).
std::vector<char> broadcast_bytes(Collective& dist, const std::vector<char>& bytes) {
  std::vector<torch::Tensor> n = {torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kLong)};
  dist.broadcast(n);
  const int64_t size = n[0].item<int64_t>();
  std::vector<torch::Tensor> b = {torch::zeros({size}, torch::kByte)};
  if (dist.rank() == 0 && size > 0) std::memcpy(b[0].data_ptr(), bytes.data(), static_cast<size_t>(size));
  dist.broadcast(b);
  const auto* p = static_cast<const char*>(b[0].data_ptr());
  return std::vector<char>(p, p + size);
}

class Trainer {
 public:
  Trainer(const TrainConfig& cfg, Collective* dist) : cfg_(cfg), dist_(dist) {
    // LIC_TEST_INJECT_NAN=5,6,7 makes those steps' loss NaN (tests of the NaN guard).
    if (const char* e = std::getenv("LIC_TEST_INJECT_NAN")) {
      std::stringstream ss(e);
      for (std::string tok; std::getline(ss, tok, ',');)
        if (!tok.empty()) inject_nan_.insert(std::stoll(tok));
    }
    // LIC_TEST_INJECT_DRIFT=K perturbs one weight on the last rank after step K (tests of the
    // drift check); LIC_DIST_SYNC_TIMING=1 puts a barrier before the timed gradient all-reduce
    // so allreduce_s measures the transfer alone, not waiting for the slowest rank.
    if (const char* e = std::getenv("LIC_TEST_INJECT_DRIFT")) inject_drift_ = std::atoll(e);
    if (const char* e = std::getenv("LIC_DIST_SYNC_TIMING")) sync_timing_ = std::string(e) == "1";
    lambda_ = cfg.quality > 0 ? lambda_for_quality(cfg.metric, cfg.quality) : cfg.lambda;
    rank0_ = !dist_ || dist_->rank() == 0;
    world_ = dist_ ? dist_->world_size() : 1;
  }

  TrainResult run();

 private:
  void setup();
  void log_window(bool final);
  void reduce_rate();
  void check_drift();
  void sync_schedule();
  void validate();
  void save(const std::string& file);
  void write_row(const nlohmann::json& row);
  nlohmann::json train_state() const;

  TrainConfig cfg_;
  Collective* dist_;
  double lambda_ = 0;
  bool rank0_ = true;
  int world_ = 1;
  fs::path out_;
  torch::Device device_{torch::kCPU};
  ModelPtr model_;
  ModelMeta meta_;
  std::unique_ptr<torch::optim::Adam> opt_, aux_opt_;
  std::shared_ptr<ImageFolder> data_;
  std::unique_ptr<BatchLoader> loader_;
  std::vector<torch::Tensor> val_images_;
  int64_t step_ = 0;
  double lr_ = 0, best_loss_ = INFINITY, plateau_best_ = INFINITY;
  int64_t plateau_wait_ = 0, skipped_ = 0, bad_run_ = 0;
  // logging window
  RateAccumulator window_rate_;
  double w_loss_ = 0, w_mse_ = 0, w_bpp_ = 0, w_msssim_ = 0, w_aux_ = 0;
  int64_t w_steps_ = 0, w_images_ = 0;
  std::chrono::steady_clock::time_point w_start_, run_start_;
  int64_t run_start_step_ = 0;
  double last_window_loss_ = 0;
  std::set<int64_t> inject_nan_;
  // distributed
  double w_allreduce_s_ = 0;
  int stop_signal_ = 0;  // signal seen by any rank (agreed at every step)
  int64_t inject_drift_ = -1;
  bool sync_timing_ = false;
};

void Trainer::setup() {
  out_ = cfg_.out;
  const auto last = out_ / "last.ckpt";
  if (rank0_) {
    std::error_code ec;
    fs::create_directories(out_, ec);
    check(fs::is_directory(out_), "cannot create output folder " + out_.string());
    check(cfg_.resume || cfg_.force || !fs::exists(last),
          out_.string() + " already holds a run (last.ckpt): use --resume to continue it, --force to start over, or another --out");
  }
  data_ = std::make_shared<ImageFolder>(cfg_.data);
  meta_.name = canonical_model_name(cfg_.model);
  meta_.N = cfg_.N;
  meta_.M = cfg_.M;
  meta_.scale_levels = cfg_.scale_levels;
  meta_.lambda = lambda_;
  meta_.quality = cfg_.quality;
  meta_.metric = cfg_.metric;
  meta_.bisection_quantiles = cfg_.quantiles == "bisection";
  lr_ = cfg_.lr;

  Checkpoint ck;
  // Rank 0 alone reads the checkpoint and sends the others what they need (weights,
  // optimizer state, counters): the ranks need no shared file system.
  bool resuming = rank0_ && cfg_.resume && fs::exists(last);
  if (dist_) {
    std::vector<torch::Tensor> h = {torch::tensor({static_cast<int64_t>(resuming)}, torch::kLong)};
    dist_->broadcast(h);
    resuming = h[0].item<int64_t>() != 0;
  }
  if (cfg_.resume && !resuming && rank0_) spdlog::warn("--resume: no {} yet, starting a new run", last.string());
  if (resuming && rank0_) {
    ck = load_checkpoint(last.string());
    check(ck.meta.name == meta_.name && ck.meta.N == meta_.N && ck.meta.M == meta_.M,
          "checkpoint " + last.string() + " is " + ck.meta.name + " N=" + std::to_string(ck.meta.N) + " M=" +
              std::to_string(ck.meta.M) + " but the configuration asks for " + meta_.name + " N=" +
              std::to_string(meta_.N) + " M=" + std::to_string(meta_.M));
    model_ = ck.model;
    step_ = ck.step;
    const auto& s = ck.train_state;
    lr_ = s.value("lr", cfg_.lr);
    best_loss_ = s.value("best_loss", INFINITY);
    plateau_best_ = s.value("plateau_best", INFINITY);
    plateau_wait_ = s.value("plateau_wait", int64_t{0});
    skipped_ = s.value("skipped_steps", int64_t{0});
    if (ck.torch_rng.defined()) {
      auto gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(ck.torch_rng);
    }
    const int64_t ck_world = s.value("world_size", int64_t{1});
    if (dist_ && ck_world != world_)
      spdlog::info("resuming a run of {} process(es) with {}: the global batch is now {}x{}", ck_world, world_, world_,
                   cfg_.batch_size);
  } else {
    torch::manual_seed(cfg_.seed);
    ModelOptions mo;
    mo.name = meta_.name;
    mo.N = meta_.N;
    mo.M = meta_.M;
    mo.scale_levels = meta_.scale_levels;
    model_ = create_model(mo);
  }
  model_->bisection_quantiles = meta_.bisection_quantiles;
  device_ = torch::Device(cfg_.device);
  model_->to(device_);
  model_->train();
  if (dist_) {  // every rank starts from rank 0's weights and buffers
    std::vector<torch::Tensor> all;
    for (auto& [k, t] : state_dict(*model_))
      if (t.numel() > 0 && !is_table_buffer(k)) all.push_back(t);
    torch::NoGradGuard ng;
    dist_->broadcast(all);
    if (resuming) {  // counters, schedule and RNG of the checkpoint
      std::vector<torch::Tensor> st = {
          torch::tensor({static_cast<double>(step_), lr_, best_loss_, plateau_best_,
                         static_cast<double>(plateau_wait_), static_cast<double>(skipped_)},
                        torch::kDouble),
          at::detail::getDefaultCPUGenerator().get_state()};
      dist_->broadcast(st);
      auto v = st[0].contiguous();
      const double* p = v.data_ptr<double>();
      step_ = static_cast<int64_t>(p[0]);
      lr_ = p[1];
      best_loss_ = p[2];
      plateau_best_ = p[3];
      plateau_wait_ = static_cast<int64_t>(p[4]);
      skipped_ = static_cast<int64_t>(p[5]);
      if (!rank0_) {
        auto gen = at::detail::getDefaultCPUGenerator();
        gen.set_state(st[1]);
      }
      ck.optimizer = broadcast_bytes(*dist_, ck.optimizer);
      ck.aux_optimizer = broadcast_bytes(*dist_, ck.aux_optimizer);
    }
  }
  opt_ = std::make_unique<torch::optim::Adam>(model_->main_parameters(), torch::optim::AdamOptions(lr_));
  aux_opt_ = std::make_unique<torch::optim::Adam>(model_->aux_parameters(), torch::optim::AdamOptions(cfg_.aux_lr));
  if (resuming) {
    load_optimizer_bytes(*opt_, ck.optimizer);
    load_optimizer_bytes(*aux_opt_, ck.aux_optimizer);
    set_lr(*opt_, lr_);
  }

  LoaderOptions lo;
  lo.batch_size = cfg_.batch_size;
  lo.patch = cfg_.patch;
  lo.seed = cfg_.seed;
  lo.rank = dist_ ? dist_->rank() : 0;
  lo.world_size = world_;
  lo.prefetch = cfg_.prefetch;
  loader_ = std::make_unique<BatchLoader>(data_, lo, step_);

  if (!cfg_.val.empty() && rank0_) {
    auto files = list_images(cfg_.val, true);
    for (const auto& f : files) {
      if (static_cast<int64_t>(val_images_.size()) >= cfg_.val_max_images) break;
      try {
        val_images_.push_back(load_image(f).x.to(device_));
      } catch (const std::exception& e) {
        spdlog::warn("skipping unreadable validation file: {}", e.what());
      }
    }
    check(!val_images_.empty(), "no readable image in the validation folder " + cfg_.val);
  }

  if (rank0_) {
    write_file_atomic((out_ / "config.yaml").string(), cfg_.to_yaml());
    const auto csv = out_ / "metrics.csv";
    if (!resuming || !fs::exists(csv)) {
      std::ofstream f(csv, std::ios::trunc);
      for (size_t i = 0; i < kColumns.size(); ++i) f << kColumns[i] << (i + 1 < kColumns.size() ? "," : "\n");
      std::ofstream(out_ / "metrics.jsonl", std::ios::trunc);
    }
  }
  int64_t params = 0;
  for (auto& p : model_->parameters()) params += p.numel();
  if (rank0_)
    spdlog::info("{} N={} M={} ({:.2f} M parameters), lambda={} ({}), {} training images, batch {}x{} patch {}, {} threads{}{}",
                 meta_.name, meta_.N, meta_.M, params / 1e6, lambda_, cfg_.metric, data_->size(), world_,
                 cfg_.batch_size, cfg_.patch, torch::get_num_threads(),
                 dist_ ? fmt::format(" per process x {} processes (global batch {})", world_, world_ * cfg_.batch_size)
                       : std::string(),
                 resuming ? ", resuming at step " + std::to_string(step_) : "");
}

nlohmann::json Trainer::train_state() const {
  return {{"lr", lr_},
          {"best_loss", std::isfinite(best_loss_) ? best_loss_ : 1e300},
          {"plateau_best", std::isfinite(plateau_best_) ? plateau_best_ : 1e300},
          {"plateau_wait", plateau_wait_},
          {"skipped_steps", skipped_},
          {"seed", cfg_.seed},
          {"world_size", world_}};
}

void Trainer::save(const std::string& file) {
  if (!rank0_) return;
  Checkpoint c;
  c.meta = meta_;
  c.model = model_;
  c.step = step_;
  c.train_state = train_state();
  c.optimizer = optimizer_bytes(*opt_);
  c.aux_optimizer = optimizer_bytes(*aux_opt_);
  c.torch_rng = at::detail::getDefaultCPUGenerator().get_state();
  save_checkpoint((out_ / file).string(), c);
}

void Trainer::write_row(const nlohmann::json& row) {
  if (!rank0_) return;
  std::ofstream csv(out_ / "metrics.csv", std::ios::app);
  for (size_t i = 0; i < kColumns.size(); ++i) {
    const auto& v = row.contains(kColumns[i]) ? row[kColumns[i]] : nlohmann::json();
    if (v.is_string()) csv << v.get<std::string>();
    else if (v.is_number_integer()) csv << v.get<int64_t>();
    else if (v.is_number()) csv << fmt::format("{:.6g}", v.get<double>());
    csv << (i + 1 < kColumns.size() ? "," : "\n");
  }
  std::ofstream(out_ / "metrics.jsonl", std::ios::app) << row.dump() << "\n";
}

void Trainer::log_window(bool final) {
  if (w_steps_ == 0) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - w_start_).count();
  // Sum the window over ranks: scalars, then the symbol histograms, so every rank logs
  // the same numbers and kl is computed on the global sample.
  std::vector<double> s = {w_loss_, w_mse_, w_bpp_, w_msssim_, w_aux_, static_cast<double>(w_steps_), w_allreduce_s_};
  if (dist_) {
    std::vector<torch::Tensor> t = {torch::tensor(s, torch::kDouble)};
    dist_->all_reduce_sum(t);
    auto a = t[0].contiguous();
    s.assign(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
    for (auto& v : s) v /= world_;
    reduce_rate();
  }
  const double n = s[5];
  nlohmann::json row;
  row["step"] = step_;
  row["split"] = "train";
  row["loss"] = s[0] / n;
  row["mse"] = s[1] / n;
  row["psnr"] = psnr_from_mse(s[1] / n);
  if (cfg_.metric == "ms-ssim") row["ms_ssim"] = s[3] / n;
  row["bpp"] = s[2] / n;
  const auto& r = window_rate_;
  row["ce"] = r.ce_bpp();
  row["ce_y"] = r.ce_bpp("y");
  row["entropy"] = r.entropy_bpp();
  row["entropy_y"] = r.entropy_bpp("y");
  row["kl"] = r.kl_bpp();
  row["kl_y"] = r.kl_bpp("y");
  if (model_->has_hyperprior()) {
    row["ce_z"] = r.ce_bpp("z");
    row["entropy_z"] = r.entropy_bpp("z");
    row["kl_z"] = r.kl_bpp("z");
  }
  row["aux_loss"] = s[4] / n;
  row["lr"] = lr_;
  row["images_per_s"] = static_cast<double>(w_images_ * world_) / std::max(secs, 1e-9);
  row["skipped_steps"] = skipped_;
  row["bad_files"] = data_->bad_count();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
  row["elapsed_s"] = elapsed;
  if (dist_) {
    row["world_size"] = world_;
    row["allreduce_s"] = s[6] / n;  // gradient all-reduce per step (metrics.jsonl only)
  }
  last_window_loss_ = s[0] / n;
  write_row(row);
  if (rank0_) {
    const double rate = (step_ - run_start_step_) / std::max(elapsed, 1e-9);
    const double eta = (cfg_.steps - step_) / std::max(rate, 1e-9);
    spdlog::info("step {:>7}/{} | loss {:8.4f} | bpp {:6.4f} ce {:6.4f} H {:6.4f} kl {:6.4f} | psnr {:6.2f} | aux {:8.2f} | {:5.1f} img/s{} | eta {}{}",
                 step_, cfg_.steps, s[0] / n, s[2] / n, r.ce_bpp(), r.entropy_bpp(), r.kl_bpp(),
                 psnr_from_mse(s[1] / n), s[4] / n, row["images_per_s"].get<double>(),
                 dist_ ? fmt::format(" | allreduce {:.1f} ms", 1e3 * s[6] / n) : std::string(), fmt_duration(eta),
                 skipped_ ? fmt::format(" | skipped {}", skipped_) : std::string());
  }
  (void)final;
  if (dist_) check_drift();
  window_rate_.reset();
  w_allreduce_s_ = 0;
  w_loss_ = w_mse_ = w_bpp_ = w_msssim_ = w_aux_ = 0;
  w_steps_ = w_images_ = 0;
  w_start_ = std::chrono::steady_clock::now();
}

// Sums the window's symbol histograms over the ranks (all-gather done as a sum of padded
// rows), so ce / entropy / kl are those of the global sample.
void Trainer::reduce_rate() {
  const auto raw = window_rate_.raw();
  const int64_t L = static_cast<int64_t>(raw.size()), W = world_, me = dist_->rank();
  std::vector<std::string> names;
  for (const auto& kv : raw) names.push_back(kv.first);
  // Per rank and latent: histogram length; per latent: ce bits; and the pixel count.
  auto sizes = torch::zeros({W, std::max<int64_t>(L, 1)}, torch::kLong);
  auto bits = torch::zeros({L + 1}, torch::kDouble);
  for (int64_t l = 0; l < L; ++l) {
    sizes[me][l] = static_cast<int64_t>(raw.at(names[l]).keys.size());
    bits[l] = raw.at(names[l]).ce_bits;
  }
  bits[L] = window_rate_.pixels();
  std::vector<torch::Tensor> head = {sizes, bits};
  dist_->all_reduce_sum(head);
  sizes = head[0].contiguous();
  bits = head[1].contiguous();
  std::vector<torch::Tensor> rows;  // per latent: keys [W, max], counts [W, max]
  for (int64_t l = 0; l < L; ++l) {
    const int64_t len = sizes.select(1, l).max().item<int64_t>();
    auto keys = torch::zeros({W, len}, torch::kLong), counts = torch::zeros({W, len}, torch::kLong);
    const auto& r = raw.at(names[l]);
    const int64_t n = static_cast<int64_t>(r.keys.size());
    if (n > 0) {
      std::memcpy(keys[me].data_ptr<int64_t>(), r.keys.data(), n * sizeof(int64_t));
      std::memcpy(counts[me].data_ptr<int64_t>(), r.counts.data(), n * sizeof(int64_t));
    }
    rows.push_back(keys);
    rows.push_back(counts);
  }
  dist_->all_reduce_sum(rows);
  RateAccumulator merged;
  for (int64_t l = 0; l < L; ++l) {
    auto keys = rows[2 * l].contiguous(), counts = rows[2 * l + 1].contiguous();
    for (int64_t q = 0; q < W; ++q) {
      const int64_t n = sizes[q][l].item<int64_t>();
      const int64_t* kp = keys[q].data_ptr<int64_t>();
      const int64_t* cp = counts[q].data_ptr<int64_t>();
      merged.merge_counts(names[l], std::vector<int64_t>(kp, kp + n), std::vector<int64_t>(cp, cp + n),
                          q == 0 ? bits[l].item<double>() : 0.0);
    }
  }
  merged.add_pixels(bits[L].item<double>());
  window_rate_ = std::move(merged);
}

// All ranks apply the same averaged gradients, so their weights must stay equal: compare a
// checksum of every parameter with rank 0's and stop everywhere if any rank drifted.
void Trainer::check_drift() {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> sums;
  for (auto& p : model_->parameters()) {
    auto d = p.detach().to(torch::kCPU, torch::kDouble);
    sums.push_back(torch::stack({d.sum(), d.abs().sum(), (d * d).sum()}));
  }
  auto mine = torch::stack(sums);  // [P, 3]: sum, sum |p|, sum p^2
  std::vector<torch::Tensor> ref = {mine.clone()};
  dist_->broadcast(ref);
  // Relative to the magnitude (sum |p|, sum p^2), so rounding in a sum near 0 is no alarm.
  auto scale = torch::stack({ref[0].select(1, 1), ref[0].select(1, 1), ref[0].select(1, 2)}, 1).abs() + 1e-30;
  const double diff = ((mine - ref[0]).abs() / scale).max().item<double>();
  const bool drifted = !(diff <= 1e-6);
  std::vector<torch::Tensor> agg = {torch::tensor({drifted ? 1.0 : 0.0, drifted ? diff : 0.0}, torch::kDouble)};
  dist_->all_reduce_sum(agg);
  const double ndrift = agg[0][0].item<double>();
  if (ndrift > 0)
    throw Error(fmt::format(
        "parameters differ between ranks at step {}: {} of {} rank(s) no longer match rank 0 (relative checksum "
        "difference {:.3g} on average). The ranks must run the same build, data and settings; stopping (last.ckpt keeps "
        "the last checkpointed step)",
        step_, static_cast<int>(ndrift), world_, agg[0][1].item<double>() / ndrift));
}

// Rank 0 validated (plateau scheduler, best loss): every rank takes its schedule.
void Trainer::sync_schedule() {
  std::vector<torch::Tensor> t = {
      torch::tensor({lr_, best_loss_, plateau_best_, static_cast<double>(plateau_wait_)}, torch::kDouble)};
  dist_->broadcast(t);
  auto v = t[0].contiguous();
  const double* p = v.data_ptr<double>();
  if (p[0] != lr_) set_lr(*opt_, p[0]);
  lr_ = p[0];
  best_loss_ = p[1];
  plateau_best_ = p[2];
  plateau_wait_ = static_cast<int64_t>(p[3]);
}

void Trainer::validate() {
  if (val_images_.empty() || !rank0_) return;
  model_->eval();
  model_->update_tables();
  RateAccumulator rate;
  double loss = 0, mse = 0, bpp = 0, msssim = 0;
  {
    torch::NoGradGuard ng;
    for (const auto& x0 : val_images_) {
      const int64_t H = x0.size(2), W = x0.size(3);
      auto out = model_->forward(pad_for_codec(x0));
      using torch::indexing::Slice;
      out.x_hat = out.x_hat.index({Slice(), Slice(), Slice(0, H), Slice(0, W)});
      auto t = rd_loss(out, x0, lambda_, cfg_.metric, static_cast<double>(H * W));
      loss += t.loss.item<double>();
      mse += t.mse.item<double>();
      bpp += t.bpp.item<double>();
      msssim += (t.ms_ssim.defined() ? t.ms_ssim : ms_ssim(out.x_hat.clamp(0, 1), x0)).item<double>();
      rate.add(model_->coded_symbols(out), static_cast<double>(H * W));
    }
  }
  model_->train();
  const double n = static_cast<double>(val_images_.size());
  nlohmann::json row = {{"step", step_},
                        {"split", "val"},
                        {"loss", loss / n},
                        {"mse", mse / n},
                        {"psnr", psnr_from_mse(mse / n)},
                        {"ms_ssim", msssim / n},
                        {"bpp", bpp / n},
                        {"ce", rate.ce_bpp()},
                        {"ce_y", rate.ce_bpp("y")},
                        {"entropy", rate.entropy_bpp()},
                        {"entropy_y", rate.entropy_bpp("y")},
                        {"kl", rate.kl_bpp()},
                        {"kl_y", rate.kl_bpp("y")},
                        {"lr", lr_},
                        {"skipped_steps", skipped_},
                        {"bad_files", data_->bad_count()}};
  if (model_->has_hyperprior()) {
    row["ce_z"] = rate.ce_bpp("z");
    row["entropy_z"] = rate.entropy_bpp("z");
    row["kl_z"] = rate.kl_bpp("z");
  }
  write_row(row);
  spdlog::info("val  {:>7}/{} | loss {:8.4f} | bpp {:6.4f} ce {:6.4f} H {:6.4f} kl {:6.4f} | psnr {:6.2f} | ms-ssim {:.4f} ({} images)",
               step_, cfg_.steps, loss / n, bpp / n, rate.ce_bpp(), rate.entropy_bpp(), rate.kl_bpp(),
               psnr_from_mse(mse / n), msssim / n, val_images_.size());
  const double vloss = loss / n;
  if (vloss < best_loss_) {
    best_loss_ = vloss;
    save("best.ckpt");
  }
  if (cfg_.plateau_patience > 0) {
    if (vloss < plateau_best_ * (1 - 1e-4)) {
      plateau_best_ = vloss;
      plateau_wait_ = 0;
    } else if (++plateau_wait_ > cfg_.plateau_patience) {
      lr_ *= cfg_.plateau_factor;
      set_lr(*opt_, lr_);
      plateau_wait_ = 0;
      spdlog::info("validation loss on a plateau: learning rate -> {:g}", lr_);
    }
  }
}

TrainResult Trainer::run() {
  setup();
  g_signal = 0;
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  struct Restore {
    decltype(old_int) a, b;
    ~Restore() {
      std::signal(SIGINT, a);
      std::signal(SIGTERM, b);
    }
  } restore{old_int, old_term};

  TrainResult res;
  const double pixels = static_cast<double>(cfg_.batch_size * cfg_.patch * cfg_.patch);
  const bool hyper = model_->has_hyperprior();
  run_start_ = w_start_ = std::chrono::steady_clock::now();
  run_start_step_ = step_;
  auto main_params = model_->main_parameters();
  auto aux_params = model_->aux_parameters();
  // After every step, skipped or not: schedule, logging, validation, checkpoints.
  auto periodic = [this] {
    for (auto m : cfg_.lr_milestones)
      if (m == step_) {
        lr_ *= cfg_.lr_gamma;
        set_lr(*opt_, lr_);
        if (rank0_) spdlog::info("step {}: learning rate -> {:g}", step_, lr_);
      }
    const bool last = step_ == cfg_.steps;
    bool rank0_work = false;  // validation and checkpoints run on rank 0 alone
    if (step_ % cfg_.log_every == 0 || last) log_window(last);
    if (step_ % cfg_.val_every == 0 || last) {
      validate();
      rank0_work = rank0_work || !cfg_.val.empty();
    }
    if (step_ % cfg_.ckpt_every == 0 || last) {
      save("last.ckpt");
      rank0_work = true;
    }
    if (dist_ && rank0_work) {
      if (auto* d = dynamic_cast<DistCollective*>(dist_)) d->wait_for_rank0();
      sync_schedule();
    }
  };
  while (step_ < cfg_.steps) {
    if (dist_ ? stop_signal_ != 0 : g_signal != 0) break;
    auto batch = loader_->next();
    const auto x = batch.x.to(device_);
    const int64_t B = x.size(0), P = cfg_.patch;
    // Noise drawn per sample (not per batch) so any split of a batch over ranks agrees.
    Noise noise;
    noise.y = sample_noise({B, model_->M(), P / 16, P / 16}, batch.positions, cfg_.seed, 1).to(device_);
    if (hyper) noise.z = sample_noise({B, model_->N(), P / 64, P / 64}, batch.positions, cfg_.seed, 2).to(device_);

    opt_->zero_grad();
    auto out = model_->forward(x, &noise);
    auto t = rd_loss(out, x, lambda_, cfg_.metric, pixels);
    t.loss.backward();
    if (dist_) {  // average the gradients over the ranks (flattened buckets)
      std::vector<torch::Tensor> grads;
      for (auto& p : main_params)
        if (p.grad().defined()) grads.push_back(p.grad());
      if (sync_timing_) dist_->barrier();
      const auto t0 = std::chrono::steady_clock::now();
      dist_->all_reduce_mean(grads);
      w_allreduce_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    double norm = torch::nn::utils::clip_grad_norm_(main_params, cfg_.clip_max_norm);
    double loss_v = t.loss.item<double>();
    if (inject_nan_.count(step_ + 1)) loss_v = norm = NAN;  // fault-injection hook for tests
    // NaN/Inf guard: the step is skipped so the weights stay those of the last good step.
    double bad = (!std::isfinite(loss_v) || !std::isfinite(norm)) ? 1.0 : 0.0;
    if (dist_) {  // all ranks must agree to skip, and to stop on a signal any of them got
      const int sig = g_signal.load();
      std::vector<torch::Tensor> b = {
          torch::tensor({bad, sig == SIGINT ? 1.0 : 0.0, sig != 0 && sig != SIGINT ? 1.0 : 0.0}, torch::kDouble)};
      dist_->all_reduce_sum(b);
      auto v = b[0].contiguous();
      bad = v[0].item<double>();
      if (v[1].item<double>() > 0) stop_signal_ = SIGINT;
      else if (v[2].item<double>() > 0) stop_signal_ = SIGTERM;
    }
    if (bad > 0) {
      ++skipped_;
      if (++bad_run_ >= cfg_.max_bad_steps) {
        save("last.ckpt");
        if (rank0_)
          spdlog::error("{} consecutive steps with NaN/Inf loss or gradients at step {}: stopping. last.ckpt holds the weights of step {} (before the problem); lower --lr or check the data.",
                      bad_run_, step_, step_);
        res.exit_code = 3;
        res.step = step_;
        return res;
      }
      if (rank0_) spdlog::warn("step {}: non-finite loss or gradient, step skipped ({} in a row)", step_ + 1, bad_run_);
      ++step_;
      periodic();
      continue;
    }
    bad_run_ = 0;
    opt_->step();

    double aux_v = 0;
    if (!model_->bisection_quantiles) {
      aux_opt_->zero_grad();
      auto aux = model_->aux_loss();
      aux.backward();
      if (dist_) {
        std::vector<torch::Tensor> g;
        for (auto& p : aux_params) g.push_back(p.grad());
        const auto t0 = std::chrono::steady_clock::now();
        dist_->all_reduce_mean(g);
        w_allreduce_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      aux_opt_->step();
      aux_v = aux.item<double>();
    } else {
      torch::NoGradGuard ng;
      aux_v = model_->aux_loss().item<double>();
    }

    // Rate accounting on this batch's coded symbols with the tables the coder would use now.
    model_->update_tables();
    window_rate_.add(model_->coded_symbols(out), pixels);
    w_loss_ += loss_v;
    w_mse_ += t.mse.item<double>();
    w_bpp_ += t.bpp.item<double>();
    if (t.ms_ssim.defined()) w_msssim_ += t.ms_ssim.item<double>();
    w_aux_ += aux_v;
    ++w_steps_;
    w_images_ += B;
    ++step_;
    if (step_ == inject_drift_ && dist_ && dist_->rank() == world_ - 1) {  // fault-injection hook for tests
      torch::NoGradGuard ng;
      main_params[0].view(-1)[0].add_(1e-2);
    }
    periodic();
  }
  // One process stops on its own signal; ranks stop together on the one they agreed on.
  const int sig = dist_ ? stop_signal_ : g_signal.load();
  if (sig) {
    log_window(true);
    save("last.ckpt");
    if (rank0_)
      spdlog::warn("interrupted at step {}: {} saved; continue with --resume", step_, (out_ / "last.ckpt").string());
    res.exit_code = 128 + sig;
  }
  if (cfg_.val.empty() && rank0_ && !sig) {
    // No validation set: the final model is also the best one we know of.
    best_loss_ = last_window_loss_;
    save("best.ckpt");
  }
  res.step = step_;
  res.last_loss = last_window_loss_;
  return res;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, Collective* dist) {
  cfg.validate();
  Trainer t(cfg, dist);
  return t.run();
}

}  // namespace lic
