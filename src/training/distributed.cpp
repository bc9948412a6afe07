// The c10d Collective: TCPStore rendezvous + ProcessGroupGloo (CPU) or ProcessGroupNCCL
// (CUDA builds), with flattened-bucket collectives and errors turned into one clear message.
//
// Debian's libtorch ships c10d in libtorch_cpu.so, but ProcessGroupGloo.hpp includes Gloo's
// own headers (Debian: libgloo-dev) and is compiled only with USE_C10D_GLOO defined. Without
// those headers this file still builds and `lic train` runs in one process only.
#if __has_include(<gloo/context.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#define LIC_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
// NCCL: only when the build defines USE_C10D_NCCL (a CUDA LibTorch with NCCL; PyTorch's own
// CMake config sets it for such builds). The CPU build never sees these headers.
#if defined(USE_C10D_NCCL) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#define LIC_HAVE_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "lic/distributed.h"
#include "lic/error.h"

namespace lic {

namespace {

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  check(end && *end == '\0' && x >= lo && x <= hi,
        std::string("environment variable ") + name + "='" + v + "' is not an integer in " + std::to_string(lo) +
            ".." + std::to_string(hi));
  return static_cast<int>(x);
}

}  // namespace

void read_torchrun_env(DistOptions& o) {
  o.world_size = env_int("WORLD_SIZE", o.world_size, 1, 1 << 20);
  o.rank = env_int("RANK", o.rank, 0, (1 << 20) - 1);
  o.local_rank = env_int("LOCAL_RANK", o.local_rank, 0, (1 << 20) - 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) o.master_addr = a;
  o.master_port = env_int("MASTER_PORT", o.master_port, 1, 65535);
  if (const char* s = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) o.use_agent_store = std::string(s) == "True";
  if (const char* s = std::getenv("TORCHELASTIC_RESTART_COUNT"); s && *s) o.restart_count = s;
}

bool dist_backend_available(const std::string& backend) {
#ifdef LIC_HAVE_GLOO
  if (backend == "gloo") return true;
#endif
#ifdef LIC_HAVE_NCCL
  if (backend == "nccl") return true;
#endif
  return false;
}

#if defined(LIC_HAVE_GLOO) || defined(LIC_HAVE_NCCL)
namespace {

using ms = std::chrono::milliseconds;

ms to_ms(double s) { return ms(static_cast<int64_t>(s * 1000.0 + 0.5)); }

class C10dCollective final : public DistCollective {
 public:
  C10dCollective(const DistOptions& o, const std::string& device) : o_(o), device_(device) {
    const ms timeout = to_ms(o.timeout_s);
    try {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(o.master_port);
      so.isServer = o.rank == 0 && !o.use_agent_store;
      so.numWorkers = static_cast<size_t>(o.world_size);
      so.waitWorkers = false;  // join_barrier below waits, with a clear message
      so.timeout = timeout;
      so.multiTenant = true;
      auto tcp = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
      if (o.use_agent_store)  // torchrun's static rendezvous: the agent hosts the store
        store_ = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + o.restart_count, tcp);
      else
        store_ = tcp;
    } catch (const c10::Error& e) {
      fail_join(e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail_join(e.what());
    }
    // Everyone arrives before the backend connects (its own rendezvous waits longer).
    join_barrier(timeout);
    try {
      if (o.backend == "gloo") {
#ifdef LIC_HAVE_GLOO
        auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
        if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        else
          opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, o.rank, o.world_size, opts);
#endif
      } else if (o.backend == "nccl") {
#ifdef LIC_HAVE_NCCL
        // Make a dead or hung peer an exception in wait() rather than a hang.
        setenv("NCCL_BLOCKING_WAIT", "1", 0);
        setenv("NCCL_ASYNC_ERROR_HANDLING", "1", 0);
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_.index()));
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, o.rank, o.world_size, opts);
#endif
      }
    } catch (const c10::Error& e) {
      fail_join(e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail_join(e.what());
    }
    check(pg_.defined(), "distributed backend '" + o.backend + "' is not available in this build");
    spdlog::debug("rank {}/{} joined the {} process group at {}:{}", o.rank, o.world_size, o.backend,
                  o.master_addr, o.master_port);
  }

  ~C10dCollective() override {
    pg_.reset();
    store_.reset();
  }

  int rank() const override { return o_.rank; }
  int world_size() const override { return o_.world_size; }

  void broadcast(std::vector<torch::Tensor>& tensors) override {
    bucketed("broadcast", tensors, [this](at::Tensor& flat) {
      std::vector<at::Tensor> v = {flat};
      c10d::BroadcastOptions bo;
      bo.rootRank = 0;
      return pg_->broadcast(v, bo);
    });
  }

  void all_reduce_mean(std::vector<torch::Tensor>& tensors) override { all_reduce(tensors, true); }
  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override { all_reduce(tensors, false); }

  void barrier() override {
    guarded("barrier", [this] { pg_->barrier()->wait(); });
  }

  void wait_for_rank0() override {
    const std::string key = "lic/rank0_done/" + std::to_string(rank0_seq_++);
    guarded("wait for rank 0", [&] {
      if (o_.rank == 0) store_->set(key, std::vector<uint8_t>{1});
      else store_->wait({key}, to_ms(std::max(o_.timeout_s, o_.rank0_work_timeout_s)));
    });
  }

  double timeout_s() const override { return o_.timeout_s; }

 private:
  [[noreturn]] void fail_join(const std::string& what) const {
    throw Error(fmt::format(
        "distributed: rank {} of {} could not join the process group at {}:{} within {:g} s: {} "
        "(check that every rank was started with the same --master-addr/--master-port, that the port is free "
        "on rank 0's host, and --dist-timeout)",
        o_.rank, o_.world_size, o_.master_addr, o_.master_port, o_.timeout_s, what));
  }

  // All ranks count themselves in; each waits until the count reaches world_size.
  void join_barrier(ms timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    try {
      store_->add("lic/joined", 1);
      auto pause = ms(5);
      while (store_->add("lic/joined", 0) < o_.world_size) {
        if (std::chrono::steady_clock::now() > deadline) {
          const auto n = store_->add("lic/joined", 0);
          fail_join(fmt::format("only {} of {} ranks arrived", n, o_.world_size));
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, ms(200));
      }
    } catch (const Error&) {
      throw;
    } catch (const c10::Error& e) {
      fail_join(e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail_join(e.what());
    }
  }

  template <class F>
  void guarded(const char* op, F&& f) {
    try {
      f();
    } catch (const Error&) {
      throw;
    } catch (const c10::Error& e) {
      fail(op, e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(op, e.what());
    }
  }

  [[noreturn]] void fail(const char* op, const std::string& what) const {
    throw Error(fmt::format(
        "distributed {} failed on rank {} of {}: another rank exited, crashed or stopped responding "
        "(collective timeout {:g} s, --dist-timeout); see the other ranks' messages. Backend said: {}",
        op, o_.rank, o_.world_size, o_.timeout_s, what));
  }

  void all_reduce(std::vector<torch::Tensor>& tensors, bool mean) {
    bucketed(mean ? "all_reduce" : "all_reduce(sum)", tensors, [this, mean](at::Tensor& flat) {
      std::vector<at::Tensor> v = {flat};
      c10d::AllreduceOptions ao;
      ao.reduceOp = c10d::ReduceOp::SUM;
      return pg_->allreduce(v, ao);
    }, mean);
  }

  // Flattens the tensors into contiguous buckets (one dtype each, up to bucket_bytes), runs
  // `op` on every bucket (all in flight at once), then copies the results back.
  template <class Op>
  void bucketed(const char* name, std::vector<torch::Tensor>& tensors, Op op, bool mean = false) {
    torch::NoGradGuard ng;
    struct Bucket {
      torch::ScalarType dtype;
      std::vector<size_t> idx;
      size_t bytes = 0;
      at::Tensor flat;
    };
    std::vector<Bucket> buckets;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      if (!t.defined() || t.numel() == 0) continue;
      auto dt = t.scalar_type();
      if (dt == torch::kBool) dt = torch::kByte;
      const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
      Bucket* b = nullptr;
      for (auto it = buckets.rbegin(); it != buckets.rend(); ++it)
        if (it->dtype == dt) {
          b = &*it;
          break;
        }
      if (!b || (b->bytes > 0 && b->bytes + bytes > o_.bucket_bytes)) {
        buckets.push_back({dt, {}, 0, {}});
        b = &buckets.back();
      }
      b->idx.push_back(i);
      b->bytes += bytes;
    }
    const auto dev = o_.backend == "nccl" ? device_ : torch::Device(torch::kCPU);
    guarded(name, [&] {
      std::vector<c10::intrusive_ptr<c10d::Work>> works;
      for (auto& b : buckets) {
        std::vector<at::Tensor> parts;
        parts.reserve(b.idx.size());
        for (auto i : b.idx) parts.push_back(tensors[i].reshape({-1}).to(dev, b.dtype));
        b.flat = parts.size() == 1 ? parts[0].clone() : torch::cat(parts);
        works.push_back(op(b.flat));
      }
      for (auto& w : works) w->wait();
    });
    for (auto& b : buckets) {
      if (mean) {
        if (at::isFloatingType(b.dtype)) b.flat.div_(o_.world_size);
        else b.flat.div_(o_.world_size, "floor");
      }
      int64_t off = 0;
      for (auto i : b.idx) {
        auto& t = tensors[i];
        const int64_t n = t.numel();
        t.copy_(b.flat.narrow(0, off, n).view(t.sizes()));
        off += n;
      }
    }
  }

  DistOptions o_;
  torch::Device device_;
  int64_t rank0_seq_ = 0;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
};

}  // namespace
#endif

std::unique_ptr<DistCollective> make_process_group(const DistOptions& o, const std::string& device) {
  check(o.world_size >= 1 && o.rank >= 0 && o.rank < o.world_size,
        "distributed: rank " + std::to_string(o.rank) + " is outside 0.." + std::to_string(o.world_size - 1) +
            " (--rank must be below --world-size)");
  check(o.master_port >= 1 && o.master_port <= 65535, "distributed: --master-port must be 1..65535");
  check(o.timeout_s > 0, "distributed: --dist-timeout must be positive");
  check(dist_backend_available(o.backend),
        o.backend == "nccl"
            ? std::string("distributed training on CUDA needs a LibTorch built with NCCL (USE_C10D_NCCL); this build "
                          "has none: use --device cpu (Gloo)")
            : std::string("this lic was built without Gloo's headers (Debian: apt install libgloo-dev, then rebuild), "
                          "so it cannot join a process group; run one process, or rebuild"));
#if defined(LIC_HAVE_GLOO) || defined(LIC_HAVE_NCCL)
  return std::make_unique<C10dCollective>(o, device);
#else
  (void)device;
  return nullptr;
#endif
}

}  // namespace lic
