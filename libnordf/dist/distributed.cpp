#include <libnordf/dist/distributed.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>

namespace nordf::dist {

namespace {

/// The integer in environment variable `name`, or nullopt when unset.
std::optional<int64_t> env_int(const char* name, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  size_t used = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != std::strlen(v) || x < lo || x > hi)
    throw std::invalid_argument(std::string("environment variable ") + name + "='" + v + "' is not a number in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

bool loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Environment environment() {
  Environment e;
  const bool torchrun = std::getenv("RANK") != nullptr;
  const auto rank = env_int(torchrun ? "RANK" : "SLURM_PROCID", 0, 1 << 20);
  const auto world = env_int(torchrun ? "WORLD_SIZE" : "SLURM_NTASKS", 1, 1 << 20);
  if (!rank && !world) return e;
  if (!world) throw std::invalid_argument(std::string(torchrun ? "RANK" : "SLURM_PROCID") + " is set but not " +
                                          (torchrun ? "WORLD_SIZE" : "SLURM_NTASKS"));
  e.rank = rank.value_or(0);
  e.world_size = *world;
  if (e.rank >= e.world_size)
    throw std::invalid_argument("rank " + std::to_string(e.rank) + " is not below the world size " +
                                std::to_string(e.world_size));
  e.local_rank = env_int(torchrun ? "LOCAL_RANK" : "SLURM_LOCALID", 0, 1 << 20).value_or(0);
  e.local_world_size =
      env_int(torchrun ? "LOCAL_WORLD_SIZE" : "SLURM_NTASKS_PER_NODE", 1, 1 << 20).value_or(e.world_size);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) e.master_addr = addr;
  e.master_port = env_int("MASTER_PORT", 1, 65535).value_or(29500);
  return e;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::chrono::milliseconds timeout;
  /// Runs a collective and waits; a failure names the peer where the world makes it known.
  void run(const c10::intrusive_ptr<c10d::Work>& work, int64_t rank, int64_t size, const char* what) const {
    try {
      work->wait(timeout);
    } catch (const std::exception& e) {
      std::string why = e.what();
      if (auto nl = why.find('\n'); nl != std::string::npos) why = why.substr(0, nl);
      const std::string peer = size == 2 ? "rank " + std::to_string(1 - rank) : "another rank";
      throw std::runtime_error("rank " + std::to_string(rank) + ": " + what + " failed: lost contact with " + peer +
                               ", which died or hung (" + why + ")");
    }
  }
};

ProcessGroup::ProcessGroup(const Environment& env, torch::Device device, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), rank_(env.rank), size_(env.world_size) {
  impl_->timeout = timeout;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    impl_->store = c10::make_intrusive<c10d::PrefixStore>("nordf/", tcp);
    if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, static_cast<int>(env.rank),
                                                              static_cast<int>(env.world_size), opts);
#else
      throw std::runtime_error("this LibTorch has no NCCL: distributed training on CUDA is not available");
#endif
    } else {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      // Loopback jobs bind to 127.0.0.1; others to GLOO_SOCKET_IFNAME, else this host's name.
      if (loopback(env.master_addr))
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, static_cast<int>(env.rank),
                                                              static_cast<int>(env.world_size), opts);
    }
  } catch (const std::exception& e) {
    std::string why = e.what();
    if (auto nl = why.find('\n'); nl != std::string::npos) why = why.substr(0, nl);
    throw std::runtime_error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                             ": the rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                             " failed (" + why + ")");
  }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::average(const std::vector<torch::Tensor>& tensors, torch::Tensor& extra, int64_t bucket_bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  // Buckets of consecutive tensors of one dtype and device, flattened into one buffer each.
  size_t i = 0;
  bool first = true;
  while (i < tensors.size() || first) {
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    while (i < tensors.size() && (bucket.empty() || (bytes + tensors[i].nbytes() <= static_cast<size_t>(bucket_bytes) &&
                                                     tensors[i].scalar_type() == bucket.front().scalar_type() &&
                                                     tensors[i].device() == bucket.front().device()))) {
      bytes += static_cast<int64_t>(tensors[i].nbytes());
      bucket.push_back(tensors[i++]);
    }
    std::vector<torch::Tensor> flat_parts;
    for (const auto& t : bucket) flat_parts.push_back(t.reshape({-1}));
    const bool with_extra = first && extra.defined() && extra.numel() > 0;
    torch::Tensor flat;
    if (!flat_parts.empty()) {
      // Divided before the sum, so the allreduce leaves the mean; the extra values, appended after
      // the division, leave as sums.
      flat = torch::cat(flat_parts).div_(static_cast<double>(size_));
      if (with_extra) flat = torch::cat({flat, extra.to(flat.options())});
    } else {
      flat = with_extra ? extra.clone() : torch::Tensor();
    }
    if (flat.defined()) {
      std::vector<torch::Tensor> v{flat};
      impl_->run(impl_->pg->allreduce(v), rank_, size_, "an allreduce");
      int64_t off = 0;
      for (const auto& t : bucket) {
        t.view({-1}).copy_(flat.narrow(0, off, t.numel()));
        off += t.numel();
      }
      if (with_extra) extra.copy_(flat.narrow(0, off, extra.numel()).to(extra.options()));
    }
    first = false;
  }
  comm_seconds_ += since(t0);
}

void ProcessGroup::sum(torch::Tensor& tensor) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> v{tensor};
  impl_->run(impl_->pg->allreduce(v), rank_, size_, "an allreduce");
  comm_seconds_ += since(t0);
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, int64_t root) {
  const auto t0 = std::chrono::steady_clock::now();
  // One broadcast per dtype: the tensors flattened into one buffer, then copied back.
  std::map<torch::ScalarType, std::vector<torch::Tensor>> by_type;
  for (const auto& t : tensors) by_type[t.scalar_type()].push_back(t);
  for (auto& [type, group] : by_type) {
    std::vector<torch::Tensor> parts;
    for (const auto& t : group) parts.push_back(t.reshape({-1}));
    std::vector<torch::Tensor> v{torch::cat(parts)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    impl_->run(impl_->pg->broadcast(v, o), rank_, size_, "a broadcast");
    int64_t off = 0;
    for (const auto& t : group) {
      t.view({-1}).copy_(v[0].narrow(0, off, t.numel()));
      off += t.numel();
    }
  }
  comm_seconds_ += since(t0);
}

void ProcessGroup::barrier() {
  const auto t0 = std::chrono::steady_clock::now();
  impl_->run(impl_->pg->barrier(), rank_, size_, "a barrier");
  comm_seconds_ += since(t0);
}

void broadcast_module(ProcessGroup& group, torch::nn::Module& module) {
  torch::NoGradGuard g;
  std::vector<torch::Tensor> all;
  for (auto& p : module.parameters()) all.push_back(p.data());
  for (auto& b : module.buffers()) all.push_back(b);
  group.broadcast(all, 0);
}

}  // namespace nordf::dist
