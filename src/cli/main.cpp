// lic: learned image compression. One subcommand per job, like cwebp / dwebp.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "lic/error.h"

namespace lic::cli {

void add_runtime_options(cxxopts::Options& opts) {
  opts.add_options("runtime")("threads", "intra-op threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))(
      "device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))("h,help", "show this help");
}

torch::Device setup_runtime(const cxxopts::ParseResult& r) {
  int threads = r["threads"].as<int>();
  check(threads >= 0 && threads <= 1024, "--threads must be 0..1024");
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  const auto dev = r["device"].as<std::string>();
  if (dev == "cpu") return torch::kCPU;
  if (dev == "cuda" || dev.rfind("cuda:", 0) == 0) {
    check(torch::cuda::is_available(), "--device " + dev +
                                           ": this LibTorch build has no CUDA (or no GPU is visible); use --device cpu");
    return torch::Device(dev);
  }
  throw Error("--device must be cpu or cuda, got '" + dev + "'");
}

bool parse_or_help(cxxopts::Options& opts, int argc, char** argv, cxxopts::ParseResult& out) {
  // cxxopts needs two letters in a long option; the papers' --N / --M are spelled
  // --N-channels / --M-channels internally.
  std::vector<std::string> args(argv, argv + argc);
  for (auto& a : args)
    for (const char* k : {"--N", "--M"})
      if (a == k || a.rfind(std::string(k) + "=", 0) == 0) a.insert(3, "-channels");
  std::vector<char*> ptrs;
  for (auto& a : args) ptrs.push_back(a.data());
  out = opts.parse(static_cast<int>(ptrs.size()), ptrs.data());
  if (out.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return false;
  }
  return true;
}

}  // namespace lic::cli

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"train", lic::cli::cmd_train, "train a model on an image folder (rate-distortion loss)"},
    {"compress", lic::cli::cmd_compress, "encode an image to a .lic file"},
    {"decompress", lic::cli::cmd_decompress, "decode a .lic file to an image"},
    {"eval", lic::cli::cmd_eval, "rate, PSNR, MS-SSIM and timings on a folder (models or JPEG/WebP/JPEG 2000)"},
    {"bd-rate", lic::cli::cmd_bd_rate, "Bjontegaard delta rate / PSNR between two RD curves"},
    {"export", lic::cli::cmd_export, "write a deployable model or a CompressAI state dict"},
    {"import", lic::cli::cmd_import, "read a CompressAI state dict into a lic model"},
    {"bench", lic::cli::cmd_bench, "time training steps and the codec"},
    {"info", lic::cli::cmd_info, "describe a model, checkpoint or .lic file"},
};

void usage(FILE* f) {
  std::fprintf(f, "lic: learned image compression (CompressAI-class models in C++)\n\nusage: lic <command> [options]\n\n");
  for (const auto& c : kCommands) std::fprintf(f, "  %-11s %s\n", c.name, c.summary);
  std::fprintf(f, "\n`lic <command> --help` explains each command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const lic::Error& e) {
      std::fprintf(stderr, "lic %s: error: %s\n", c.name, e.what());
    } catch (const cxxopts::exceptions::exception& e) {
      std::fprintf(stderr, "lic %s: error: %s (see lic %s --help)\n", c.name, e.what(), c.name);
    } catch (const c10::Error& e) {
      std::fprintf(stderr, "lic %s: error: %s\n", c.name, e.what_without_backtrace());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lic %s: error: %s\n", c.name, e.what());
    }
    return 1;
  }
  std::fprintf(stderr, "lic: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
