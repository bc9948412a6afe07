// Hardening (docs/RELIABILITY.md): the decoder against hostile files and the trainer against
// faults, both through the `lic` binary as a user runs it.
//
//   DecoderHardening.DecompressSurvivesMutatedFiles  1,000 mutated .lic files -> `lic decompress`
//   DecoderHardening.*                               crafted headers / symbols, the fuzz seeds
//   TrainerFaults.SigkillAtRandomMomentsAndResume    ten SIGKILLs (some inside a checkpoint write)
//   TrainerFaults.InterruptedRunMatchesUninterrupted SIGTERM / SIGKILL + --resume == straight run
//   TrainerFaults.NanStepsAreSkippedAndCounted       LIC_TEST_INJECT_NAN=5,6,7
//   TrainerFaults.TooManyBadStepsStopWithExitCode3   max_bad_steps from YAML, exit 3, good last.ckpt
//   TrainerFaults.CorruptFilesInDataFolder           10% bad files: warned once, counted
//   TrainerFaults.NoUsableImageIsAClearError
//
// LIC_TEST_JOBS (default 2) sets how many `lic decompress` processes run at once,
// LIC_TEST_MUTANTS (default 1000) how many mutated files are made.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lic/bitstream.h"
#include "lic/checkpoint.h"
#include "lic/codec.h"
#include "lic/error.h"
#include "lic/models.h"
#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;
using namespace lic;

namespace {

using Clock = std::chrono::steady_clock;
double secs_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  const auto s = slurp(p);
  return std::vector<uint8_t>(s.begin(), s.end());
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) v.push_back(l);
  return v;
}

int count_substr(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// --- processes ----------------------------------------------------------------------------

// Starts argv[0] (searched in PATH) with stdin from /dev/null and stdout / stderr to files;
// `env` entries (NAME=VALUE) are added to this process's environment.
pid_t spawn(const std::vector<std::string>& args, const fs::path& out, const fs::path& err,
            const std::vector<std::string>& env = {}) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : envs) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0].c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + args[0]);
  return pid;
}

struct Exit {
  int code = -1;    // exit status, or -1 when killed by a signal
  int signal = 0;   // the signal that killed it
  bool timed_out = false;
  double seconds = 0;
};

Exit decode_status(int st) {
  Exit e;
  if (WIFEXITED(st)) e.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) e.signal = WTERMSIG(st);
  return e;
}

// Waits for pid; past `timeout_s` it is SIGKILLed and reported as timed out.
Exit wait_for(pid_t pid, double timeout_s = 120) {
  const auto t0 = Clock::now();
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      Exit e = decode_status(st);
      e.seconds = secs_since(t0);
      return e;
    }
    if (secs_since(t0) > timeout_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      Exit e;
      e.timed_out = true;
      e.seconds = secs_since(t0);
      return e;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

struct Run {
  Exit exit;
  std::string out, err;
  std::string all() const { return out + err; }
};

Run run_lic_args(const std::vector<std::string>& args, const fs::path& dir, const std::string& tag,
                 const std::vector<std::string>& env = {}, double timeout_s = 120) {
  std::vector<std::string> a = {LIC_BINARY};
  a.insert(a.end(), args.begin(), args.end());
  const auto o = dir / (tag + ".out"), e = dir / (tag + ".err");
  Run r;
  r.exit = wait_for(spawn(a, o, e, env), timeout_s);
  r.out = slurp(o);
  r.err = slurp(e);
  return r;
}

// --- metrics.csv --------------------------------------------------------------------------

struct Metrics {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  size_t col(const std::string& name) const {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) throw std::runtime_error("no column " + name);
    return size_t(it - header.begin());
  }
  // The last train row logged at `step` (a resumed run may log a step again).
  const std::vector<std::string>* train_row(int64_t step) const {
    const std::vector<std::string>* found = nullptr;
    for (const auto& r : rows)
      if (r[1] == "train" && std::stoll(r[0]) == step) found = &r;
    return found;
  }
  int64_t max_step() const {
    int64_t m = 0;
    for (const auto& r : rows) m = std::max<int64_t>(m, std::stoll(r[0]));
    return m;
  }
};

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> v;
  std::string f;
  std::stringstream ss(line);
  while (std::getline(ss, f, ',')) v.push_back(f);
  if (!line.empty() && line.back() == ',') v.push_back("");
  return v;
}

// Every row must have every column: a torn line (a write cut by SIGKILL) fails here.
Metrics read_metrics(const fs::path& p) {
  Metrics m;
  std::ifstream f(p);
  std::string line;
  if (!std::getline(f, line)) return m;
  m.header = split_csv(line);
  while (std::getline(f, line)) {
    auto r = split_csv(line);
    if (r.size() != m.header.size()) throw std::runtime_error(p.string() + ": torn row: " + line);
    m.rows.push_back(r);
  }
  return m;
}

bool all_params_finite(CompressionModel& m) {
  for (const auto& p : m.parameters())
    if (!torch::isfinite(p).all().item<bool>()) return false;
  return true;
}

bool same_params(CompressionModel& a, CompressionModel& b) {
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (const auto& kv : pa)
    if (!pb.contains(kv.key()) || !torch::equal(kv.value(), pb[kv.key()])) return false;
  return true;
}

// The tiny training setup of the brief, one thread so runs are repeatable.
std::vector<std::string> tiny_train_args(const std::string& data, const fs::path& out, int64_t steps,
                                         uint64_t seed = 3) {
  return {"train",        "--model",       "hyperprior",        "--N",         "8",
          "--M",          "12",            "--patch",           "64",          "--batch-size",
          "2",            "--ckpt-every",  "5",                 "--log-every", "5",
          "--lr",         "1e-3",          "--steps",           std::to_string(steps),
          "--seed",       std::to_string(seed), "--data",       data,          "--out",
          out.string(),   "--threads",     "1"};
}

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// Checkpoint temporaries (last.ckpt.tmp.PID.N) in a run folder, of one process (pid > 0) or
// of any.
std::vector<fs::path> temp_files(const fs::path& dir, pid_t pid = 0) {
  const std::string prefix = "last.ckpt.tmp." + (pid > 0 ? std::to_string(pid) + "." : std::string());
  std::vector<fs::path> v;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().rfind(prefix, 0) == 0) v.push_back(it->path());
  return v;
}

// --- .lic files for the decoder tests -----------------------------------------------------

constexpr int64_t kN = 8, kM = 12;

ModelPtr tiny_model(const std::string& name, uint64_t seed) {
  torch::manual_seed(seed);
  ModelOptions o;
  o.name = name;
  o.N = kN;
  o.M = kM;
  o.scale_levels = 64;
  auto m = create_model(o);
  m->eval();
  m->update_tables(true);
  return m;
}

torch::Tensor image_tensor(int h, int w, unsigned seed) {
  const cv::Mat bgr = test::synthetic_image(h, w, seed);
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  auto t = torch::from_blob(rgb.data, {h, w, 3}, torch::kUInt8).permute({2, 0, 1}).unsqueeze(0);
  return t.to(torch::kFloat32).div(255).contiguous();
}

// Size of the header (magic .. stream count) of a serialized file.
size_t header_size(const std::vector<uint8_t>& b) { return size_t(b[5]) | (size_t(b[6]) << 8); }

void fix_crc(std::vector<uint8_t>& b) {
  if (b.size() < 8) return;
  const uint32_t c = crc32(b.data(), b.size() - 4);
  for (int i = 0; i < 4; ++i) b[b.size() - 4 + i] = uint8_t(c >> (8 * i));
}

void put_le32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i));
}

struct Mutant {
  std::string what;
  std::vector<uint8_t> bytes;
};

// 1,000 hostile variants of `good` (encoded with model A) and `other` (model B).
std::vector<Mutant> make_mutants(const std::vector<std::vector<uint8_t>>& good,
                                 const std::vector<std::vector<uint8_t>>& other, const LicFile& good_parsed,
                                 const LicFile& other_parsed, int count, uint32_t seed) {
  std::mt19937 rng(seed);
  auto uni = [&rng](size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi)(rng); };
  std::vector<Mutant> out;
  // Fixed cases first.
  out.push_back({"unchanged", good[0]});
  out.push_back({"empty file", {}});
  out.push_back({"magic only", {'L', 'I', 'C', '1'}});
  out.push_back({"png bytes", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13}});
  {
    std::vector<uint8_t> junk(1000);
    for (auto& c : junk) c = uint8_t(rng());
    out.push_back({"random bytes", junk});
  }
  {  // valid CRC, image far above --max-pixels
    LicFile f = good_parsed;
    f.header.height = f.header.width = 60000;
    out.push_back({"huge header, valid CRC", serialize(f)});
  }
  {  // valid CRC, a large image (within the limit) whose streams are far too short
    LicFile f = good_parsed;
    f.header.height = 4096;
    f.header.width = 3000;
    out.push_back({"large header, short streams, valid CRC", serialize(f)});
  }
  {  // valid CRC: streams of the other model under this model's header, and the reverse
    LicFile f = good_parsed;
    f.streams = other_parsed.streams;
    out.push_back({"other model's streams, valid CRC", serialize(f)});
    LicFile g = other_parsed;
    g.streams = good_parsed.streams;
    out.push_back({"other model's header, valid CRC", serialize(g)});
  }
  {  // stream count / order
    LicFile f = good_parsed;
    std::swap(f.streams[0], f.streams[1]);
    out.push_back({"streams swapped, valid CRC", serialize(f)});
    f = good_parsed;
    f.streams.pop_back();
    out.push_back({"one stream missing, valid CRC", serialize(f)});
    f = good_parsed;
    f.streams.push_back(f.streams[0]);
    out.push_back({"extra stream, valid CRC", serialize(f)});
  }

  while (static_cast<int>(out.size()) < count) {
    const int kind = static_cast<int>(out.size() % 9);
    const auto& base = good[uni(0, good.size() - 1)];
    std::vector<uint8_t> b = base;
    const size_t hs = header_size(b);
    std::string what;
    switch (kind) {
      case 0: {  // bit flips anywhere
        const size_t n = uni(1, 4);
        for (size_t i = 0; i < n; ++i) b[uni(0, b.size() - 1)] ^= uint8_t(1u << uni(0, 7));
        what = std::to_string(n) + " bit flip(s)";
        break;
      }
      case 1: {  // bit flip in the header
        b[uni(0, hs - 1)] ^= uint8_t(1u << uni(0, 7));
        what = "header bit flip";
        break;
      }
      case 2: {  // byte changes
        const size_t n = uni(1, 6);
        for (size_t i = 0; i < n; ++i) b[uni(0, b.size() - 1)] = uint8_t(rng());
        what = std::to_string(n) + " byte change(s)";
        break;
      }
      case 3: {  // truncation
        b.resize(uni(0, b.size() - 1));
        what = "truncated to " + std::to_string(b.size());
        break;
      }
      case 4: {  // extension: junk, zeros or a copy of the file
        const int how = int(uni(0, 2));
        const size_t n = uni(1, 300);
        if (how == 0)
          for (size_t i = 0; i < n; ++i) b.push_back(uint8_t(rng()));
        else if (how == 1)
          b.insert(b.end(), n, 0);
        else
          b.insert(b.end(), base.begin(), base.end());
        what = "extended (" + std::to_string(how) + ")";
        break;
      }
      case 5: {  // header of a file from another model spliced onto this body
        const auto& o = other[uni(0, other.size() - 1)];
        const size_t ohs = header_size(o);
        std::vector<uint8_t> s(o.begin(), o.begin() + ohs);
        s.insert(s.end(), b.begin() + hs, b.end());
        b = s;
        const bool fix = uni(0, 1);
        if (fix) fix_crc(b);
        what = std::string("other model's header spliced") + (fix ? ", CRC fixed" : "");
        break;
      }
      case 6:
      case 7: {  // changes inside the streams with a valid CRC: reaches the rANS decoder
        const size_t n = uni(1, 3);
        for (size_t i = 0; i < n; ++i) {
          const size_t at = uni(hs, b.size() - 5);
          if (uni(0, 1)) b[at] ^= uint8_t(1u << uni(0, 7));
          else b[at] = uint8_t(rng());
        }
        fix_crc(b);
        what = std::to_string(n) + " stream byte change(s), CRC fixed";
        break;
      }
      case 8: {  // header fields with a valid CRC
        const size_t name_len = b[7];
        const size_t h_at = 8 + name_len + 16, w_at = h_at + 4, ch_at = w_at + 4, ns_at = ch_at + 1;
        const int field = int(uni(0, 4));
        const uint32_t vals[] = {0, 1, 63, 64, 65, 4096, 65535, 0x7fffffff, 0xffffffff, uint32_t(rng())};
        const uint32_t v = vals[uni(0, 9)];
        if (field == 0) put_le32(b, h_at, v);
        else if (field == 1) put_le32(b, w_at, v);
        else if (field == 2) b[ch_at] = uint8_t(v);
        else if (field == 3) b[ns_at] = uint8_t(v);
        else put_le32(b, ns_at + 1, v);  // first stream length
        fix_crc(b);
        what = "header field " + std::to_string(field) + " = " + std::to_string(v) + ", CRC fixed";
        break;
      }
    }
    out.push_back({what, std::move(b)});
  }
  return out;
}

}  // namespace

// -------------------------------------------------------------------------------------------
// Decoder
// -------------------------------------------------------------------------------------------

// Every run of `lic decompress` on a mutated file either decodes (exit 0, an image written)
// or exits 1 with one line on stderr; none is killed by a signal or runs past 10 s.
TEST(DecoderHardening, DecompressSurvivesMutatedFiles) {
  test::TempDir dir;
  auto a = tiny_model("hyperprior", 11);
  auto b = tiny_model("hyperprior", 12);  // same architecture, other weights
  auto c = tiny_model("mean-scale", 13);  // other architecture
  ModelMeta meta;
  meta.name = "hyperprior";
  meta.N = kN;
  meta.M = kM;
  meta.scale_levels = 64;
  const auto model_a = (dir.path / "a.model").string();
  export_model(model_a, *a, meta);

  std::vector<std::vector<uint8_t>> good, other;
  const int sizes[][2] = {{64, 64}, {50, 37}, {96, 128}};
  unsigned k = 0;
  for (const auto& s : sizes) {
    good.push_back(serialize(encode_image(*a, image_tensor(s[0], s[1], 500 + k), uint8_t(k == 1 ? 1 : 3))));
    other.push_back(serialize(encode_image(*(k % 2 ? c : b), image_tensor(s[0], s[1], 600 + k), 3)));
    ++k;
  }
  const char* count_env = std::getenv("LIC_TEST_MUTANTS");
  const int count = std::max(20, count_env ? std::atoi(count_env) : 1000);
  const auto mutants = make_mutants(good, other, parse(good[0]), parse(other[0]), count, 12345);
  ASSERT_EQ(mutants.size(), size_t(count));
  for (size_t i = 0; i < mutants.size(); ++i) write_bytes(dir.path / (std::to_string(i) + ".lic"), mutants[i].bytes);

  const char* jobs_env = std::getenv("LIC_TEST_JOBS");
  const int jobs = std::max(1, jobs_env ? std::atoi(jobs_env) : 2);
  std::map<pid_t, std::pair<size_t, Clock::time_point>> running;
  std::vector<Exit> exits(mutants.size());
  const auto t0 = Clock::now();
  size_t next = 0;
  while (next < mutants.size() || !running.empty()) {
    while (next < mutants.size() && static_cast<int>(running.size()) < jobs) {
      const auto base = dir.path / std::to_string(next);
      const pid_t pid = spawn({"timeout", "10", LIC_BINARY, "decompress", base.string() + ".lic", "-m", model_a,
                               "-o", base.string() + ".png", "--threads", "1"},
                              base.string() + ".out", base.string() + ".err");
      running[pid] = {next++, Clock::now()};
    }
    int st = 0;
    const pid_t pid = waitpid(-1, &st, 0);
    ASSERT_GT(pid, 0) << "waitpid failed";
    auto it = running.find(pid);
    if (it == running.end()) continue;
    Exit e = decode_status(st);
    e.seconds = secs_since(it->second.second);
    exits[it->second.first] = e;
    running.erase(it);
  }
  const double total = secs_since(t0);
  struct rusage ru {};
  getrusage(RUSAGE_CHILDREN, &ru);
  const double cpu = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);

  int decoded = 0, rejected = 0, failures = 0;
  double slowest = 0;
  std::map<std::string, int> reasons;
  std::string report;
  for (size_t i = 0; i < mutants.size(); ++i) {
    const auto base = dir.path / std::to_string(i);
    const auto& e = exits[i];
    const auto err_lines = lines_of(slurp(base.string() + ".err"));
    slowest = std::max(slowest, e.seconds);
    std::string problem;
    if (e.signal) problem = "killed by signal " + std::to_string(e.signal);
    else if (e.code == 124) problem = "timed out (10 s)";
    else if (e.code == 0) {
      if (!fs::exists(base.string() + ".png")) problem = "exit 0 without an image";
      ++decoded;
    } else if (e.code != 1) {
      problem = "exit code " + std::to_string(e.code);
    } else if (err_lines.size() != 1 || err_lines[0].rfind("lic decompress: error: ", 0) != 0) {
      problem = "stderr is not one error line: " + slurp(base.string() + ".err");
    } else {
      ++rejected;
      // Histogram of reasons: the message after the file name, first words.
      auto msg = err_lines[0].substr(err_lines[0].find(".lic: ") == std::string::npos
                                         ? 23
                                         : err_lines[0].find(".lic: ") + 6);
      std::string key;  // digits folded to '#', so "stream 0 length 123" and "... 9" agree
      for (char ch : msg)
        if (!std::isdigit(static_cast<unsigned char>(ch))) key += ch;
        else if (key.empty() || key.back() != '#') key += '#';
      reasons[key.substr(0, std::min<size_t>(key.size(), 44))]++;
    }
    if (!problem.empty()) {
      ++failures;
      if (failures <= 10) report += "  #" + std::to_string(i) + " (" + mutants[i].what + "): " + problem + "\n";
    }
  }
  std::printf("%zu files in %.1f s (%d at a time, slowest %.2f s, %.2f CPU s per run): %d decoded, %d rejected\n",
              mutants.size(), total, jobs, slowest, cpu / double(mutants.size()), decoded, rejected);
  for (const auto& [r, n] : reasons) std::printf("  %4d  %s\n", n, r.c_str());
  EXPECT_EQ(failures, 0) << report;
  EXPECT_EQ(exits[0].code, 0) << "the unmodified file must decode";
  EXPECT_LT(slowest, 10.0);
  // The corpus reached every layer: container checks, the model check and the rANS decoder.
  auto seen = [&](const std::string& what) {
    for (const auto& [r, n] : reasons)
      if (r.find(what) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(seen("CRC mismatch"));
  EXPECT_TRUE(seen("truncated"));
  EXPECT_TRUE(seen("file was encoded with model"));
  EXPECT_TRUE(seen("rANS"));
  EXPECT_TRUE(seen("image too large"));
}

// Streams a real encoder never writes (every symbol escaped to +-2^30) still decode to
// finite pixels in [0, 1], or are refused; never NaN / Inf handed to the image writer.
TEST(DecoderHardening, ExtremeSymbolsGiveValidPixelsOrAnError) {
  for (const char* name : {"factorized", "hyperprior"}) {
    auto m = tiny_model(name, 21);
    LicFile f = encode_image(*m, image_tensor(64, 64, 7), 3);
    for (int32_t v : {1 << 30, -(1 << 30), 1 << 20}) {
      auto& eb = *m->entropy_bottleneck;
      LicFile g = f;
      if (m->has_hyperprior()) {
        // z all v; y all v, coded with the indexes the decoder derives from that z.
        torch::NoGradGuard ng;
        g.streams[1] = eb.encode(torch::full({1, kN, 1, 1}, v, torch::kInt32), eb.indexes({1, kN, 1, 1}));
        auto z_hat = eb.decompress(g.streams[1], 1, 1);
        auto* h_s = m->named_children()["h_s"]->as<torch::nn::SequentialImpl>();
        ASSERT_NE(h_s, nullptr);
        auto idx = m->gaussian_conditional->build_indexes(h_s->forward(z_hat));
        g.streams[0] = m->gaussian_conditional->encode(torch::full(idx.sizes(), v, torch::kInt32), idx);
      } else {
        g.streams[0] = eb.encode(torch::full({1, kM, 4, 4}, v, torch::kInt32), eb.indexes({1, kM, 4, 4}));
      }
      const auto bytes = serialize(g);
      torch::Tensor x;
      try {
        x = decode_image(*m, parse(bytes));
      } catch (const lic::Error& e) {
        continue;  // refused with a clear error: fine
      }
      EXPECT_TRUE(torch::isfinite(x).all().item<bool>()) << name << " v=" << v << ": NaN/Inf pixels decoded";
      EXPECT_GE(x.min().item<float>(), 0.f) << name << " v=" << v;
      EXPECT_LE(x.max().item<float>(), 1.f) << name << " v=" << v;
    }
  }
}

// The committed fuzz seeds are valid .lic files of the fuzzer's tiny models.
TEST(DecoderHardening, FuzzSeedCorpusParses) {
  const fs::path corpus = fs::path(LIC_SOURCE_DIR) / "tests" / "fuzz" / "corpus";
  int n = 0;
  for (const auto& e : fs::directory_iterator(corpus)) {
    if (e.path().extension() != ".lic") continue;
    ++n;
    const auto bytes = read_bytes(e.path());
    EXPECT_LT(bytes.size(), 4096u) << e.path() << ": seeds must be small (fuzz.sh uses -max_len=4096)";
    LicFile f;
    ASSERT_NO_THROW(f = parse(bytes)) << e.path();
    EXPECT_EQ(f.header.N, kN);
    EXPECT_EQ(f.header.M, kM);
  }
  EXPECT_GE(n, 5);
}

// -------------------------------------------------------------------------------------------
// Trainer
// -------------------------------------------------------------------------------------------

// Ten SIGKILLs, half at random moments and half while a checkpoint is being written (the
// process is stopped while its temporary file exists, then killed), each followed by
// --resume. Every checkpoint stays loadable, every resume starts from it, and the step
// count never goes back by more than the checkpoint interval.
TEST(TrainerFaults, SigkillAtRandomMomentsAndResume) {
  test::TempDir dir;
  const auto data = test::make_image_folder(dir.path / "data", 4, 96, 80);
  const auto out = dir.path / "run";
  const int64_t ckpt_every = 5;
  std::mt19937 rng(777);
  int64_t ckpt_step = -1;  // step of last.ckpt after the previous kill (-1: none yet)
  int killed_in_write = 0;
  const auto t_all = Clock::now();
  for (int round = 0; round < 10; ++round) {
    auto args = tiny_train_args(data, out, 100000);
    if (round > 0) args.push_back("--resume");
    const auto o = dir.path / ("r" + std::to_string(round) + ".out"), e = dir.path / ("r" + std::to_string(round) + ".err");
    const size_t rows_before = fs::exists(out / "metrics.csv") ? read_metrics(out / "metrics.csv").rows.size() : 0;
    const pid_t pid = spawn(with({LIC_BINARY}, args), o, e);
    const auto t0 = Clock::now();
    const bool in_write = round % 2 == 1;
    bool stopped_in_write = false;
    if (in_write) {
      // Poll for this process's checkpoint temporaries; at the 1st..3rd write seen, SIGSTOP
      // freezes the writer; if the temporary is still there, the write is in progress:
      // SIGKILL it now. Else go on to the next write.
      const size_t nth = std::uniform_int_distribution<size_t>(1, 3)(rng);
      std::set<std::string> seen;
      while (secs_since(t0) < 60 && !stopped_in_write) {
        for (const auto& t : temp_files(out, pid)) seen.insert(t.string());
        if (seen.size() >= nth && !temp_files(out, pid).empty()) {
          kill(pid, SIGSTOP);
          if (!temp_files(out, pid).empty()) {
            stopped_in_write = true;
            break;
          }
          kill(pid, SIGCONT);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    } else {
      // Random moment: from inside the start-up to ~50 steps after it.
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 2500)(rng)));
    }
    kill(pid, SIGKILL);
    const Exit ex = wait_for(pid);
    // A resume that failed would have exited by itself before the kill.
    ASSERT_EQ(ex.signal, SIGKILL) << "round " << round << ": the run ended on its own:\n" << slurp(o) << slurp(e);
    const bool killed_mid_write = stopped_in_write && !temp_files(out, pid).empty();
    if (killed_mid_write) ++killed_in_write;
    const auto log = slurp(o) + slurp(e);
    EXPECT_EQ(log.find("error"), std::string::npos) << "round " << round << ":\n" << log;
    // Once past its set-up, the process says where it resumed: at the last checkpoint.
    if (ckpt_step > 0 && log.find(" training images") != std::string::npos)
      EXPECT_NE(log.find("resuming at step " + std::to_string(ckpt_step)), std::string::npos)
          << "round " << round << ":\n" << log;

    // What the killed process reached (its logged steps) vs the checkpoint it left.
    const auto metrics = read_metrics(out / "metrics.csv");  // throws on a torn row
    const int64_t reached = metrics.max_step();
    // Rows this process logged continue from the checkpoint it resumed (no restart at 0).
    for (size_t i = rows_before; i < metrics.rows.size(); ++i)
      EXPECT_GT(std::stoll(metrics.rows[i][0]), std::max<int64_t>(ckpt_step, 0))
          << "round " << round << ": logged a step at or before the checkpoint it resumed";
    if (fs::exists(out / "last.ckpt")) {
      Checkpoint ck;
      ASSERT_NO_THROW(ck = load_checkpoint((out / "last.ckpt").string())) << "round " << round;
      EXPECT_GE(ck.step, ckpt_step) << "round " << round << ": checkpoint went backwards";
      EXPECT_GE(ck.step, reached - ckpt_every) << "round " << round << ": lost more than one checkpoint interval";
      EXPECT_EQ(ck.step % ckpt_every, 0);
      EXPECT_TRUE(all_params_finite(*ck.model));
      ckpt_step = ck.step;
    } else {  // no checkpoint yet: a restart from step 0 loses at most one interval
      EXPECT_LE(reached, ckpt_every) << "round " << round << ": steps logged but no checkpoint";
    }
    std::printf("round %d: %s after %.2f s, reached step %lld, last.ckpt step %lld\n", round,
                in_write ? (killed_mid_write ? "killed inside a checkpoint write" : "killed (no write caught)")
                         : "killed at a random moment",
                secs_since(t0), static_cast<long long>(reached), static_cast<long long>(ckpt_step));
  }
  EXPECT_GE(killed_in_write, 3) << "the kills were meant to land inside checkpoint writes";
  EXPECT_GT(ckpt_step, 0);

  // A final resume runs to completion.
  const int64_t target = ckpt_step + 7;
  auto r = run_lic_args(with(tiny_train_args(data, out, target), {"--resume"}), dir.path, "final");
  ASSERT_EQ(r.exit.code, 0) << r.all();
  EXPECT_NE(r.all().find("resuming at step " + std::to_string(ckpt_step)), std::string::npos) << r.all();
  auto ck = load_checkpoint((out / "last.ckpt").string());
  EXPECT_EQ(ck.step, target);
  std::printf("10 kills + final resume in %.1f s; %d kills inside a checkpoint write; %zu stale temporaries left\n",
              secs_since(t_all), killed_in_write, temp_files(out).size());
}

// Fixed seed on CPU: a run interrupted by SIGTERM (it saves and exits 143) or by SIGKILL just
// after a checkpoint, then resumed, logs the same losses as an uninterrupted run from the
// first full logging window after the resume, and ends with bit-identical weights.
TEST(TrainerFaults, InterruptedRunMatchesUninterrupted) {
  test::TempDir dir;
  const auto data = test::make_image_folder(dir.path / "data", 3, 80, 72);
  const int64_t steps = 30;
  auto straight = run_lic_args(tiny_train_args(data, dir.path / "a", steps), dir.path, "a");
  ASSERT_EQ(straight.exit.code, 0) << straight.all();
  const auto ma = read_metrics(dir.path / "a" / "metrics.csv");
  auto ref = load_checkpoint((dir.path / "a" / "last.ckpt").string());
  ASSERT_EQ(ref.step, steps);

  for (int sig : {SIGTERM, SIGKILL}) {
    const auto out = dir.path / (sig == SIGTERM ? "term" : "kill");
    const auto args = tiny_train_args(data, out, steps);
    const pid_t pid = spawn(with({LIC_BINARY}, args), out.string() + ".out", out.string() + ".err");
    const auto t0 = Clock::now();
    // SIGTERM once step 10 is logged; SIGKILL once a checkpoint at step >= 10 exists.
    while (secs_since(t0) < 120) {
      bool go = false;
      if (sig == SIGTERM) {
        try {
          go = read_metrics(out / "metrics.csv").max_step() >= 10;
        } catch (const std::exception&) {
        }
      } else if (fs::exists(out / "last.ckpt")) {
        try {
          go = load_checkpoint((out / "last.ckpt").string()).step >= 10;
        } catch (const std::exception&) {
        }
      }
      if (go) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill(pid, sig);
    const Exit ex = wait_for(pid);
    const auto log1 = slurp(out.string() + ".out") + slurp(out.string() + ".err");
    if (sig == SIGTERM) {
      ASSERT_EQ(ex.code, 128 + SIGTERM) << log1;
      EXPECT_NE(log1.find("interrupted at step"), std::string::npos) << log1;
    } else {
      ASSERT_EQ(ex.signal, SIGKILL) << log1;
    }
    const int64_t resumed_at = load_checkpoint((out / "last.ckpt").string()).step;
    ASSERT_GE(resumed_at, 10);
    ASSERT_LT(resumed_at, steps) << "the run finished before it was interrupted";

    auto r = run_lic_args(with(args, {"--resume"}), dir.path, "resume");
    ASSERT_EQ(r.exit.code, 0) << r.all();
    EXPECT_NE(r.all().find("resuming at step " + std::to_string(resumed_at)), std::string::npos) << r.all();
    const auto mb = read_metrics(out / "metrics.csv");
    // The first window after the resume is complete when the resume is on a window boundary.
    int64_t first = (resumed_at / 5 + 1) * 5;
    if (resumed_at % 5 != 0) first += 5;
    int compared = 0;
    for (int64_t s = first; s <= steps; s += 5) {
      const auto* ra = ma.train_row(s);
      const auto* rb = mb.train_row(s);
      ASSERT_TRUE(ra && rb) << "no row for step " << s;
      for (const char* c : {"loss", "mse", "bpp", "ce", "entropy", "kl", "aux_loss"})
        EXPECT_EQ((*ra)[ma.col(c)], (*rb)[mb.col(c)]) << (sig == SIGTERM ? "SIGTERM" : "SIGKILL") << ", step " << s
                                                      << ", " << c;
      ++compared;
    }
    EXPECT_GE(compared, 2);
    auto got = load_checkpoint((out / "last.ckpt").string());
    EXPECT_EQ(got.step, steps);
    EXPECT_TRUE(same_params(*ref.model, *got.model)) << "weights differ from the uninterrupted run";
    std::printf("%s at step %lld: %d logged windows identical to the uninterrupted run\n",
                sig == SIGTERM ? "SIGTERM" : "SIGKILL", static_cast<long long>(resumed_at), compared);
  }
}

// LIC_TEST_INJECT_NAN=5,6,7: those steps are skipped (warned, counted in skipped_steps) and
// the run finishes with finite weights.
TEST(TrainerFaults, NanStepsAreSkippedAndCounted) {
  test::TempDir dir;
  const auto data = test::make_image_folder(dir.path / "data", 3, 80, 72);
  const auto out = dir.path / "run";
  auto r = run_lic_args(tiny_train_args(data, out, 12), dir.path, "nan", {"LIC_TEST_INJECT_NAN=5,6,7"});
  ASSERT_EQ(r.exit.code, 0) << r.all();
  const auto log = r.all();
  for (int s : {5, 6, 7})
    EXPECT_EQ(count_substr(log, "step " + std::to_string(s) + ": non-finite loss or gradient, step skipped"), 1)
        << log;
  EXPECT_EQ(count_substr(log, "non-finite loss"), 3) << log;
  const auto m = read_metrics(out / "metrics.csv");
  ASSERT_FALSE(m.rows.empty());
  EXPECT_EQ(m.rows.back()[m.col("skipped_steps")], "3");
  EXPECT_EQ(m.train_row(5)->at(m.col("skipped_steps")), "1");
  auto ck = load_checkpoint((out / "last.ckpt").string());
  EXPECT_EQ(ck.step, 12);
  EXPECT_EQ(ck.train_state.value("skipped_steps", -1), 3);
  EXPECT_TRUE(all_params_finite(*ck.model));
}

// max_bad_steps (YAML) consecutive bad steps: exit 3, a clear message, and last.ckpt holds
// finite weights from before the problem (identical to a run that stopped at the last good
// step).
TEST(TrainerFaults, TooManyBadStepsStopWithExitCode3) {
  test::TempDir dir;
  const auto data = test::make_image_folder(dir.path / "data", 3, 80, 72);
  std::ofstream(dir.path / "cfg.yaml") << "max_bad_steps: 3\n";
  std::string bad;
  for (int s = 8; s <= 40; ++s) bad += (bad.empty() ? "" : ",") + std::to_string(s);
  const auto out = dir.path / "run";
  auto r = run_lic_args(with(tiny_train_args(data, out, 40), {"--config", (dir.path / "cfg.yaml").string()}), dir.path,
                        "bad", {"LIC_TEST_INJECT_NAN=" + bad});
  ASSERT_EQ(r.exit.code, 3) << r.all();
  const auto log = r.all();
  EXPECT_NE(log.find("3 consecutive steps with NaN/Inf loss or gradients"), std::string::npos) << log;
  EXPECT_NE(log.find("stopping"), std::string::npos) << log;
  EXPECT_EQ(count_substr(log, "non-finite loss"), 2) << log;  // the third stops the run
  auto ck = load_checkpoint((out / "last.ckpt").string());
  // The step counter includes the two skipped steps; the weights are those of step 7.
  EXPECT_GE(ck.step, 7);
  EXPECT_LE(ck.step, 9);
  EXPECT_TRUE(all_params_finite(*ck.model));
  auto good = run_lic_args(tiny_train_args(data, dir.path / "ref", 7), dir.path, "ref");
  ASSERT_EQ(good.exit.code, 0) << good.all();
  auto ref = load_checkpoint((dir.path / "ref" / "last.ckpt").string());
  EXPECT_TRUE(same_params(*ref.model, *ck.model)) << "last.ckpt is not the state of the last good step";
  // The run can be resumed from it (without the fault) and finishes.
  auto res = run_lic_args(with(tiny_train_args(data, out, 12), {"--resume"}), dir.path, "resume");
  EXPECT_EQ(res.exit.code, 0) << res.all();
}

namespace {

// count good PNGs plus one of each kind of bad file; returns the bad files' paths.
std::vector<std::string> make_folder_with_bad_files(const fs::path& dir, int good_count) {
  test::make_image_folder(dir, good_count, 96, 80);
  std::vector<std::string> bad;
  const auto png = read_bytes(dir / "img0.png");
  {  // corrupt: bytes overwritten inside the compressed data (IDAT CRC no longer matches)
    auto b = png;
    for (size_t i = b.size() / 2; i < b.size() / 2 + 64 && i < b.size(); ++i) b[i] ^= 0x5a;
    write_bytes(dir / "corrupt.png", b);
    bad.push_back((dir / "corrupt.png").string());
  }
  {  // truncated
    auto b = png;
    b.resize(b.size() / 3);
    write_bytes(dir / "truncated.png", b);
    bad.push_back((dir / "truncated.png").string());
  }
  std::ofstream(dir / "empty.png").close();  // zero bytes
  bad.push_back((dir / "empty.png").string());
  std::ofstream(dir / "notes.jpg") << "this is not a JPEG\n";  // not an image
  bad.push_back((dir / "notes.jpg").string());
  return bad;
}

}  // namespace

// 10% of the files are bad: training runs, each bad file is warned about once, and the count
// is logged in the bad_files column.
TEST(TrainerFaults, CorruptFilesInDataFolder) {
  test::TempDir dir;
  const auto data = dir.path / "data";
  const auto bad = make_folder_with_bad_files(data, 36);  // 4 of 40
  const auto out = dir.path / "run";
  // 25 steps x 2 images: the first epoch (40 positions) visits every file.
  auto r = run_lic_args(tiny_train_args(data.string(), out, 25), dir.path, "bad");
  ASSERT_EQ(r.exit.code, 0) << r.all();
  const auto log = r.all();
  for (const auto& f : bad) {
    int n = 0;
    for (const auto& l : lines_of(log))
      if (l.find("skipping unreadable training file") != std::string::npos && l.find(f) != std::string::npos) ++n;
    EXPECT_EQ(n, 1) << f << " should be reported exactly once:\n" << log;
  }
  EXPECT_EQ(count_substr(log, "skipping unreadable training file"), 4) << log;
  const auto m = read_metrics(out / "metrics.csv");
  ASSERT_FALSE(m.rows.empty());
  EXPECT_EQ(m.rows.back()[m.col("bad_files")], "4");
  EXPECT_TRUE(all_params_finite(*load_checkpoint((out / "last.ckpt").string()).model));
}

// No usable image at all: a clear error (exit 1, last line says why), no hang, no crash.
TEST(TrainerFaults, NoUsableImageIsAClearError) {
  test::TempDir dir;
  const auto data = dir.path / "data";
  fs::create_directories(data);
  auto bad = make_folder_with_bad_files(data, 1);
  fs::remove(data / "img0.png");
  auto r = run_lic_args(tiny_train_args(data.string(), dir.path / "run", 10), dir.path, "none", {}, 60);
  ASSERT_FALSE(r.exit.timed_out);
  EXPECT_EQ(r.exit.signal, 0);
  EXPECT_EQ(r.exit.code, 1) << r.all();
  const auto err = lines_of(r.err);
  ASSERT_FALSE(err.empty());
  EXPECT_NE(err.back().find("lic train: error: "), std::string::npos) << r.err;
  EXPECT_NE(err.back().find("none of the 4 files in the training folder can be read"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.path / "run" / "last.ckpt"));
}
