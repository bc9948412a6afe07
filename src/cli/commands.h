// Subcommands of the `lic` tool. Each parses its own flags (cxxopts), prints --help, and
// returns an exit code; user errors are thrown as lic::Error and reported by main().
#pragma once
#include <string>

#include <cxxopts.hpp>
#include <torch/torch.h>

namespace lic::cli {

int cmd_train(int argc, char** argv);
int cmd_compress(int argc, char** argv);
int cmd_decompress(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_bd_rate(int argc, char** argv);
int cmd_export(int argc, char** argv);
int cmd_import(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_info(int argc, char** argv);

// --threads / --device handling shared by the commands.
void add_runtime_options(cxxopts::Options& opts);
// Sets the intra-op thread count (0 = all cores; LibTorch here starts with 1) and returns
// the device; "cuda" on a build without CUDA is a lic::Error.
torch::Device setup_runtime(const cxxopts::ParseResult& r);
// Parses argv; prints help and returns false when --help was given.
bool parse_or_help(cxxopts::Options& opts, int argc, char** argv, cxxopts::ParseResult& out);

}  // namespace lic::cli
