// Data-parallel training over c10d (Gloo): 2 ranks on 127.0.0.1.
// - 2 ranks x batch 4 end with the weights of 1 rank x batch 8 (torchrun when installed,
//   and the --world-size/--rank/--master-* flags), also across a resume that changes the
//   world size;
// - a rank killed (SIGKILL) or hung (SIGSTOP) makes the other fail within --dist-timeout;
// - SIGTERM on one rank stops both at the same step with a checkpoint;
// - a rank whose weights drift is caught by the checksum check.
// The failure tests start the ranks themselves (not through torchrun, which would tear the
// job down on its own): they test lic's detection, not the launcher's.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fcntl.h>
#include <thread>

#include "lic/checkpoint.h"
#include "lic/distributed.h"
#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;
using namespace lic;
using namespace lic::test;

namespace {

const char* kTorchrun = "/usr/bin/torchrun";

bool have_torchrun() { return ::access(kTorchrun, X_OK) == 0; }

// A TCP port that is free right now (the kernel's choice for port 0).
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string w; is >> w;) out.push_back(w);
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// One `lic train` process with stdout+stderr to `log`; the torchrun variables are cleared
// so an outer launcher cannot leak into the test.
struct Proc {
  pid_t pid = -1;
  fs::path log;
  int status = 0;
  bool done = false;
};

Proc spawn(const std::string& args, const fs::path& log) {
  Proc p;
  p.log = log;
  // Everything is prepared before fork(): the child only redirects and execs.
  auto argv_s = split(std::string(LIC_BINARY) + " " + args);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key != "RANK" && key != "WORLD_SIZE" && key != "LOCAL_RANK" && key != "LOCAL_WORLD_SIZE" &&
        key != "MASTER_ADDR" && key != "MASTER_PORT" && key != "TORCHELASTIC_USE_AGENT_STORE")
      env_s.push_back(kv);
  }
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string log_s = log.string();
  p.pid = ::fork();
  if (p.pid == 0) {
    const int fd = ::open(log_s.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return p;
}

// Waits up to `seconds`; false on timeout.
bool wait_for(Proc& p, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!p.done) {
    const pid_t r = ::waitpid(p.pid, &p.status, WNOHANG);
    if (r == p.pid) {
      p.done = true;
      break;
    }
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

void kill_and_reap(Proc& p) {
  if (p.done || p.pid <= 0) return;
  ::kill(p.pid, SIGKILL);
  ::kill(p.pid, SIGCONT);
  wait_for(p, 10);
}

int exit_code(const Proc& p) { return WIFEXITED(p.status) ? WEXITSTATUS(p.status) : 128 + WTERMSIG(p.status); }

// Both ranks of a job started with the flags (no torchrun); reaped on destruction.
struct Job {
  std::vector<Proc> ranks;
  ~Job() {
    for (auto& p : ranks) kill_and_reap(p);
  }
};

Job spawn_ranks(const std::string& args, const fs::path& dir, int world = 2) {
  Job j;
  const int port = free_port();
  for (int r = 0; r < world; ++r)
    j.ranks.push_back(spawn(args + " --world-size " + std::to_string(world) + " --rank " + std::to_string(r) +
                                " --master-addr 127.0.0.1 --master-port " + std::to_string(port),
                            dir / ("rank" + std::to_string(r) + ".log")));
  return j;
}

// Weights and buffers except the CDF tables (derived from the weights).
std::map<std::string, torch::Tensor> weights(const fs::path& ckpt) {
  auto ck = load_checkpoint(ckpt.string());
  std::map<std::string, torch::Tensor> out;
  for (auto& [k, t] : state_dict(*ck.model))
    if (k.find("_quantized_cdf") == std::string::npos && k.find("_cdf_length") == std::string::npos &&
        k.find("_offset") == std::string::npos)
      out[k] = t.detach().to(torch::kDouble);
  return out;
}

// Column `name` of the train rows of a metrics.csv.
std::vector<double> train_column(const fs::path& csv, const std::string& name) {
  std::ifstream f(csv);
  std::string line;
  std::getline(f, line);
  auto cells = [](const std::string& l) {
    std::vector<std::string> c;
    std::stringstream ss(l);
    for (std::string x; std::getline(ss, x, ',');) c.push_back(x);
    return c;
  };
  const auto head = cells(line);
  const size_t col = std::find(head.begin(), head.end(), name) - head.begin();
  std::vector<double> out;
  while (std::getline(f, line)) {
    auto c = cells(line);
    if (c.size() > col && c[1] == "train") out.push_back(std::stod(c[col]));
  }
  return out;
}

double max_diff(const fs::path& a, const fs::path& b) {
  auto wa = weights(a), wb = weights(b);
  EXPECT_EQ(wa.size(), wb.size());
  double m = 0;
  for (auto& [k, t] : wa) {
    auto it = wb.find(k);
    if (it == wb.end()) {
      ADD_FAILURE() << "missing " << k;
      continue;
    }
    m = std::max(m, (t - it->second).abs().max().item<double>());
  }
  return m;
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!dist_backend_available("gloo")) GTEST_SKIP() << "built without Gloo headers (libgloo-dev)";
    data_ = make_image_folder(tmp_.path / "train", 8, 80, 96);
  }
  // Tiny hyperprior, 8 images, no validation; every run is one or two seconds.
  std::string train_args(const fs::path& out, int64_t steps, int64_t batch) const {
    return "train --model hyperprior --N 8 --M 12 --patch 64 --lr 1e-3 --seed 3 --threads 1 --data " + data_ +
           " --out " + out.string() + " --steps " + std::to_string(steps) + " --batch-size " + std::to_string(batch) +
           " --log-every 1 --val-every 100000 --ckpt-every 100000";
  }
  // Waits until rank 0 has logged a training step in `out` (so the ranks are past the
  // rendezvous and inside the loop); fails the test if it exits or takes over 40 s.
  void wait_until_training(Job& job, const fs::path& out) {
    const auto t_start = std::chrono::steady_clock::now();
    while (slurp(out / "metrics.csv").find("train") == std::string::npos) {
      ASSERT_LT(std::chrono::steady_clock::now() - t_start, std::chrono::seconds(40)) << slurp(job.ranks[0].log);
      ASSERT_FALSE(wait_for(job.ranks[0], 0)) << slurp(job.ranks[0].log);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  TempDir tmp_;
  std::string data_;
};

TEST_F(Distributed, TwoRanksMatchOneRankWithTheGlobalBatch) {
  const int K = 5;
  const auto one = tmp_.path / "one";
  auto r1 = run_lic(train_args(one, K, 8));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;

  // (a) torchrun, as users run it.
  if (have_torchrun()) {
    const auto two = tmp_.path / "two_torchrun";
    // torch 1.13's torchrun spells its flags with underscores, and on Python 3.11 it needs
    // --redirects/--tee set to one stream (the defaults crash it: meta-llama/llama#86).
    auto r2 = run_lic(train_args(two, K, 4), std::string(kTorchrun) +
                                                 " --no_python --standalone --nproc_per_node 2 --redirects 2 --tee 2 " +
                                                 LIC_BINARY);
    ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
    EXPECT_LT(max_diff(one / "last.ckpt", two / "last.ckpt"), 1e-5);
    EXPECT_EQ(load_checkpoint((two / "last.ckpt").string()).step, K);
    // Rank 0 alone wrote the logs: one header + one row per step, with the all-reduce time.
    const auto csv = slurp(two / "metrics.csv");
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), K + 1) << csv;
    EXPECT_NE(slurp(two / "metrics.jsonl").find("\"allreduce_s\""), std::string::npos);
    // The logged metrics are those of the global batch: symbol histograms merged over ranks.
    for (const char* col : {"loss", "bpp", "psnr", "ce", "entropy", "kl", "ce_y", "entropy_y"}) {
      const auto a = train_column(one / "metrics.csv", col), b = train_column(two / "metrics.csv", col);
      ASSERT_EQ(a.size(), static_cast<size_t>(K)) << col;
      ASSERT_EQ(b.size(), a.size()) << col;
      for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * (std::abs(a[i]) + 1e-3)) << col << " row " << i;
    }
    EXPECT_GT(train_column(two / "metrics.csv", "entropy_y").back(), 0);  // histograms are not trivial
  }

  // (b) the launcher-free flags, then (c) a resume of that run in one process: the
  // optimizer state, counters and data position carry over a change of world size.
  const auto two = tmp_.path / "two_flags";
  {
    auto job = spawn_ranks(train_args(two, 3, 4), tmp_.path);
    for (auto& p : job.ranks) {
      ASSERT_TRUE(wait_for(p, 60)) << slurp(p.log);
      ASSERT_EQ(exit_code(p), 0) << slurp(p.log);
    }
  }
  auto r3 = run_lic(train_args(two, K, 8) + " --resume");
  ASSERT_EQ(r3.exit_code, 0) << r3.err;
  EXPECT_EQ(load_checkpoint((two / "last.ckpt").string()).step, K);
  EXPECT_LT(max_diff(one / "last.ckpt", two / "last.ckpt"), 1e-5);
}

TEST_F(Distributed, KilledRankMakesTheOtherFail) {
  auto job = spawn_ranks(train_args(tmp_.path / "run", 1000000, 2) + " --dist-timeout 10", tmp_.path);
  ASSERT_NO_FATAL_FAILURE(wait_until_training(job, tmp_.path / "run"));  // then kill rank 1
  ::kill(job.ranks[1].pid, SIGKILL);
  const auto t_kill = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_for(job.ranks[0], 20)) << "rank 0 still running 20 s after rank 1 was killed";
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_kill).count();
  EXPECT_NE(exit_code(job.ranks[0]), 0);
  EXPECT_LT(secs, 15);
  const auto log = slurp(job.ranks[0].log);
  EXPECT_NE(log.find("another rank exited, crashed or stopped responding"), std::string::npos) << log;
}

TEST_F(Distributed, HungRankMakesTheOtherFailWithinTheTimeout) {
  auto job = spawn_ranks(train_args(tmp_.path / "run", 1000000, 2) + " --dist-timeout 5", tmp_.path);
  ASSERT_NO_FATAL_FAILURE(wait_until_training(job, tmp_.path / "run"));
  ::kill(job.ranks[1].pid, SIGSTOP);  // alive, connected, silent
  const auto t_stop = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_for(job.ranks[0], 25)) << "rank 0 still waiting 25 s after rank 1 hung (timeout 5 s)";
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_stop).count();
  EXPECT_NE(exit_code(job.ranks[0]), 0);
  EXPECT_GE(secs, 3);
  EXPECT_LT(secs, 20);
  const auto log = slurp(job.ranks[0].log);
  EXPECT_NE(log.find("another rank exited, crashed or stopped responding"), std::string::npos) << log;
}

TEST_F(Distributed, SignalOnOneRankStopsBothAtTheSameStep) {
  const auto out = tmp_.path / "run";
  auto job = spawn_ranks(train_args(out, 1000000, 2), tmp_.path);
  ASSERT_NO_FATAL_FAILURE(wait_until_training(job, out));
  ::kill(job.ranks[1].pid, SIGTERM);
  for (auto& p : job.ranks) {
    ASSERT_TRUE(wait_for(p, 20)) << slurp(p.log);
    EXPECT_EQ(exit_code(p), 128 + SIGTERM) << slurp(p.log);
  }
  ASSERT_TRUE(fs::exists(out / "last.ckpt"));
  EXPECT_GT(load_checkpoint((out / "last.ckpt").string()).step, 0);
  EXPECT_NE(slurp(job.ranks[0].log).find("interrupted at step"), std::string::npos);
}

TEST_F(Distributed, DriftingRankIsCaught) {
  const auto out = tmp_.path / "run";
  ::setenv("LIC_TEST_INJECT_DRIFT", "2", 1);
  auto job = spawn_ranks(train_args(out, 6, 2), tmp_.path);
  ::unsetenv("LIC_TEST_INJECT_DRIFT");
  for (auto& p : job.ranks) {
    ASSERT_TRUE(wait_for(p, 60)) << slurp(p.log);
    EXPECT_NE(exit_code(p), 0) << slurp(p.log);
  }
  const auto log = slurp(job.ranks[0].log);
  EXPECT_NE(log.find("parameters differ between ranks at step 2"), std::string::npos) << log;
}

TEST(DistributedFlags, BadRankIsAClearError) {
  auto r = run_lic("train --data /nonexistent --world-size 2 --rank 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--rank 2 is outside 0..1"), std::string::npos) << r.err;
}

}  // namespace
