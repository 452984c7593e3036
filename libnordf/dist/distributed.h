#pragma once
/// @file
/// Data-parallel training across processes and machines on PyTorch's own c10d engine: a TCPStore
/// rendezvous and a Gloo process group for CPU tensors (NCCL for CUDA tensors, where LibTorch was
/// built with it). Launched as PyTorch jobs are: torchrun-style variables, SLURM's srun, mpirun
/// with the variables exported, or `--nproc N` in the apps.

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nordf::dist {

/// Where this process sits in a job.
struct Environment {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;  ///< processes on this machine (sizes their threads)
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  bool distributed() const { return world_size > 1; }
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun's
/// names); without RANK, SLURM's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and
/// SLURM_NTASKS_PER_NODE. With none of them, a single process (world size 1). Throws
/// `std::invalid_argument` naming a variable that is not a number or is out of range.
Environment environment();

/// A process group for data-parallel training. All ranks must construct it (it is a
/// rendezvous: rank 0 hosts the TCPStore at MASTER_ADDR:MASTER_PORT), and all must call the same
/// collectives in the same order. A collective that a dead or hung peer cannot complete fails
/// within `timeout` with a `std::runtime_error` naming the lost rank where it can be known.
class ProcessGroup {
 public:
  /// Rendezvous of `env.world_size` processes. The backend follows `device`: Gloo for the CPU,
  /// NCCL for CUDA. Throws `std::runtime_error` when the rendezvous fails within `timeout`.
  ProcessGroup(const Environment& env, torch::Device device, std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const { return rank_; }
  int64_t size() const { return size_; }

  /// Averages `tensors` over the ranks in place (sum / world size), flattened into buckets of at
  /// most `bucket_bytes`, one allreduce per bucket, so that a step's gradient sync costs a few
  /// collectives rather than one per parameter. `extra` (a small float64 vector, possibly empty)
  /// is summed, not averaged, in the first bucket: flags and loss terms ride along for free.
  void average(const std::vector<torch::Tensor>& tensors, torch::Tensor& extra, int64_t bucket_bytes = 25 << 20);
  /// Sums a small tensor over the ranks in place.
  void sum(torch::Tensor& tensor);
  /// Copies rank `root`'s `tensors` to every rank, in place.
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t root = 0);
  void barrier();

  /// Seconds spent in collectives so far (including waiting for slower ranks).
  double communication_seconds() const { return comm_seconds_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t rank_ = 0, size_ = 1;
  double comm_seconds_ = 0;
};

/// Makes the CPU tensors `tensors` identical on all ranks to rank 0's (parameters and buffers).
void broadcast_module(ProcessGroup& group, torch::nn::Module& module);

}  // namespace nordf::dist
