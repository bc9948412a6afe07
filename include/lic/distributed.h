// Data-parallel training over PyTorch's c10d: a TCPStore for the rendezvous and a
// ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA builds) for the collectives. The
// launcher is torchrun (its RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
// environment is read as-is) or anything that passes the same values as flags.
// See the README section "Distributed (data-parallel) training".
#pragma once
#include <memory>
#include <string>

#include "lic/train.h"

namespace lic {

struct DistOptions {
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;   // GPU index on this node (NCCL)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double timeout_s = 120;  // store and collective timeout: a dead or hung rank fails the others
  // torchrun with a static rendezvous hosts the store in its agent (all ranks are clients,
  // keys under /worker/attempt_<restart>); otherwise rank 0 hosts it.
  bool use_agent_store = false;
  std::string restart_count = "0";
  std::string backend = "gloo";  // gloo | nccl
  size_t bucket_bytes = size_t(25) << 20;  // flattened all-reduce buckets (as DDP's bucket_cap_mb)
  // How long the other ranks wait while rank 0 alone validates or writes a checkpoint
  // (at least timeout_s).
  double rank0_work_timeout_s = 1800;

  bool enabled() const { return world_size > 1; }
};

// The Collective of make_process_group, with the extras the trainer uses.
struct DistCollective : Collective {
  // Called by every rank after work only rank 0 does (validation, checkpoints): the others
  // wait for rank 0 on the store, up to rank0_work_timeout_s, instead of running into the
  // collective timeout in their next all-reduce.
  virtual void wait_for_rank0() = 0;
  virtual double timeout_s() const = 0;
};

// Fills the fields torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT,
// TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT) from the environment; fields
// whose variable is unset keep their value. lic::Error on malformed values.
void read_torchrun_env(DistOptions& o);

// Whether this build can create a process group of the given backend.
bool dist_backend_available(const std::string& backend);

// Joins the process group (blocks until all world_size ranks arrive or the timeout runs
// out). Collective errors (a rank that died, hung past the timeout, or diverged) are
// thrown as lic::Error naming the operation, the rank and the timeout.
// `device` is where the backend reduces (CPU for gloo, the rank's GPU for nccl).
std::unique_ptr<DistCollective> make_process_group(const DistOptions& o, const std::string& device = "cpu");

}  // namespace lic
