// `lic bench`: speed measurements for docs/BENCHMARKS.md (never asserted in tests).
#include <spdlog/spdlog.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lic/checkpoint.h"
#include "lic/codec.h"
#include "lic/data.h"
#include "lic/image.h"
#include "lic/bitstream.h"
#include "lic/error.h"
#include "lic/models.h"
#include "lic/rate_stats.h"

namespace lic::cli {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// One training step as `lic train` runs it (forward, RD loss, backward, clipping, Adam,
// aux step, rate accounting), on random data so that I/O is not measured.
int bench_train(const cxxopts::ParseResult& r) {
  ModelOptions mo;
  mo.name = r["model"].as<std::string>();
  mo.N = r["N-channels"].as<int64_t>();
  mo.M = r["M-channels"].as<int64_t>();
  mo.scale_levels = 256;
  const int64_t B = r["batch-size"].as<int64_t>(), P = r["patch"].as<int64_t>();
  const int steps = r["steps"].as<int>(), warmup = 3;
  const bool stats = !r.count("no-stats");
  check(B > 0 && P >= 64 && P % 64 == 0 && steps > 0, "bad bench sizes");
  auto dev = setup_runtime(r);
  torch::manual_seed(0);
  auto model = create_model(mo);
  model->to(dev);
  model->train();
  torch::optim::Adam opt(model->main_parameters(), torch::optim::AdamOptions(1e-4));
  torch::optim::Adam aux_opt(model->aux_parameters(), torch::optim::AdamOptions(1e-3));
  auto x = torch::rand({B, 3, P, P}).to(dev);
  std::vector<int64_t> pos(B);
  RateAccumulator acc;
  double total = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    for (int64_t b = 0; b < B; ++b) pos[b] = i * B + b;
    auto t0 = std::chrono::steady_clock::now();
    Noise n;
    n.y = sample_noise({B, mo.M, P / 16, P / 16}, pos, 0, 1).to(dev);
    if (model->has_hyperprior()) n.z = sample_noise({B, mo.N, P / 64, P / 64}, pos, 0, 2).to(dev);
    opt.zero_grad();
    auto out = model->forward(x, &n);
    auto bpp = torch::zeros({}, x.options());
    for (auto& [k, l] : out.likelihoods) bpp = bpp + torch::log(l).sum() / (-std::log(2.0) * B * P * P);
    auto loss = 0.013 * 255 * 255 * torch::mse_loss(out.x_hat, x) + bpp;
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->main_parameters(), 1.0);
    opt.step();
    aux_opt.zero_grad();
    model->aux_loss().backward();
    aux_opt.step();
    if (stats) {
      model->update_tables();
      acc.add(model->coded_symbols(out), double(B * P * P));
    }
    (void)loss.item<double>();
    const double s = seconds_since(t0);
    if (i >= warmup) total += s;
  }
  const double per_step = total / steps;
  nlohmann::json j = {{"bench", "train"}, {"model", mo.name}, {"N", mo.N}, {"M", mo.M}, {"batch", B},
                      {"patch", P}, {"threads", torch::get_num_threads()}, {"device", dev.str()},
                      {"rate_stats", stats}, {"s_per_step", per_step}, {"it_per_s", 1.0 / per_step},
                      {"images_per_s", B / per_step}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// Encode / decode of one image with a model file, split into network and rANS time.
int bench_codec(const cxxopts::ParseResult& r) {
  check(r.count("image"), "lic bench codec needs --image FILE and --model MODEL_FILE");
  auto dev = setup_runtime(r);
  (void)dev;
  ModelMeta meta;
  auto model = load_model(r["model"].as<std::string>(), &meta);
  auto img = load_image(r["image"].as<std::string>());
  const int reps = std::max(1, r["repeat"].as<int>());
  torch::InferenceMode im;
  auto file = encode_image(*model, img, meta);  // warm-up
  (void)decode_image(*model, file);
  double enc = 0, dec = 0, enc_ec = 0, dec_ec = 0;
  int64_t symbols = 0;
  for (int i = 0; i < reps; ++i) {
    CodingClock::reset();
    auto t0 = std::chrono::steady_clock::now();
    file = encode_image(*model, img, meta);
    enc += seconds_since(t0);
    enc_ec += CodingClock::encode_s;
    symbols = CodingClock::symbols;
    t0 = std::chrono::steady_clock::now();
    (void)decode_image(*model, file);
    dec += seconds_since(t0);
    dec_ec += CodingClock::decode_s;
  }
  enc /= reps, dec /= reps, enc_ec /= reps, dec_ec /= reps;
  const auto bytes = serialize(file).size();
  nlohmann::json j = {{"bench", "codec"},
                      {"model", meta.name},
                      {"N", meta.N},
                      {"M", meta.M},
                      {"image", r["image"].as<std::string>()},
                      {"height", img.x.size(2)},
                      {"width", img.x.size(3)},
                      {"threads", torch::get_num_threads()},
                      {"bytes", bytes},
                      {"encode_s", enc},
                      {"encode_network_s", enc - enc_ec},
                      {"encode_rans_s", enc_ec},
                      {"decode_s", dec},
                      {"decode_network_s", dec - dec_ec},
                      {"decode_rans_s", dec_ec},
                      {"symbols", symbols},
                      {"rans_encode_symbols_per_s", symbols / std::max(enc_ec, 1e-12)},
                      {"rans_decode_symbols_per_s", symbols / std::max(dec_ec, 1e-12)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  cxxopts::Options o("lic bench", "Time the training step (lic bench train) or the codec (lic bench codec).\n");
  // clang-format off
  o.add_options()
    ("what", "train | codec", cxxopts::value<std::string>())
    ("model", "model name (train) or model file (codec)", cxxopts::value<std::string>()->default_value("hyperprior"))
    ("N-channels", "--N", cxxopts::value<int64_t>()->default_value("128"))
    ("M-channels", "--M", cxxopts::value<int64_t>()->default_value("192"))
    ("batch-size", "images per step", cxxopts::value<int64_t>()->default_value("8"))
    ("patch", "crop size", cxxopts::value<int64_t>()->default_value("256"))
    ("steps", "timed steps (after 3 warm-up steps)", cxxopts::value<int>()->default_value("10"))
    ("no-stats", "leave out the per-step rate accounting (ce / entropy / kl)")
    ("image", "image for the codec benchmark", cxxopts::value<std::string>())
    ("repeat", "codec repetitions", cxxopts::value<int>()->default_value("3"));
  // clang-format on
  o.parse_positional({"what"});
  o.positional_help("train|codec");
  add_runtime_options(o);
  cxxopts::ParseResult r;
  if (!parse_or_help(o, argc, argv, r)) return 0;
  check(r.count("what"), "say what to time: lic bench train | lic bench codec");
  const auto what = r["what"].as<std::string>();
  if (what == "train") return bench_train(r);
  if (what == "codec") return bench_codec(r);
  throw Error("unknown benchmark '" + what + "' (train or codec)");
}

}  // namespace lic::cli
