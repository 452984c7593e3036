#include <libnordf/core/memory.h>

#include <c10/core/CPUAllocator.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <sys/resource.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// Floats filling `bytes` (a multiple of 4).
torch::Tensor block(int64_t bytes) { return torch::empty({bytes / 4}, torch::kFloat32); }

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Enables the cache for one test case and takes it out again, whatever the test did.
struct CacheScope {
  explicit CacheScope(std::size_t cap) { REQUIRE(nordf::enable_cpu_cache(cap)); }
  ~CacheScope() { nordf::disable_cpu_cache(); }
};

}  // namespace

TEST_CASE("cpu cache: a freed block is handed out again, without new page faults", "[core][memory]") {
  torch::set_num_threads(1);
  CacheScope scope(256 * kMiB);
  void* first = nullptr;
  {
    auto t = block(8 * kMiB);
    t.fill_(1.0f);  // touches every page: they are faulted in here, once
    first = t.data_ptr();
  }
  const auto before = nordf::cpu_cache_stats();
  CHECK(before.cached_bytes == static_cast<std::size_t>(8 * kMiB));
  const long faults = minor_faults();
  auto again = block(8 * kMiB);
  again.fill_(2.0f);
  const long new_faults = minor_faults() - faults;
  const auto after = nordf::cpu_cache_stats();
  CHECK(again.data_ptr() == first);
  CHECK(after.hits == before.hits + 1);
  CHECK(after.misses == before.misses);
  CHECK(after.cached_bytes == 0);
  // 8 MiB is 2048 pages; the reused block is already mapped, so next to none fault again.
  CHECK(new_faults < 256);
  CHECK(again.sum().item<double>() == 2.0 * 2 * kMiB);
}

TEST_CASE("cpu cache: a request takes the head of the smallest free run that holds it", "[core][memory]") {
  CacheScope scope(256 * kMiB);
  char* base = nullptr;
  { base = static_cast<char*>(block(20 * kMiB).data_ptr()); }  // one free run of 20 MiB
  // Carve it up: 4 MiB (a), 1 MiB held, 5 MiB (b), 1 MiB held, and 9 MiB left at the end.
  auto a = block(4 * kMiB), g = block(kMiB), b = block(5 * kMiB), h = block(kMiB);
  CHECK(a.data_ptr() == base);
  CHECK(g.data_ptr() == base + 4 * kMiB);
  CHECK(b.data_ptr() == base + 5 * kMiB);
  CHECK(h.data_ptr() == base + 10 * kMiB);
  a.reset();
  b.reset();
  const auto start = nordf::cpu_cache_stats();
  CHECK(start.cached_bytes == static_cast<std::size_t>(18 * kMiB));  // 4 + 5 + 9
  auto c = block(3 * kMiB);  // the 4 MiB run is the smallest that holds it; 1 MiB of it stays cached
  CHECK(c.data_ptr() == base);
  auto d = block(4 * kMiB + kMiB / 2);  // the 5 MiB run
  CHECK(d.data_ptr() == base + 5 * kMiB);
  auto e = block(8 * kMiB);  // the 9 MiB run at the end
  CHECK(e.data_ptr() == base + 11 * kMiB);
  auto s = nordf::cpu_cache_stats();
  CHECK(s.hits == start.hits + 3);
  CHECK(s.misses == start.misses);
  CHECK(s.cached_bytes == static_cast<std::size_t>(2 * kMiB + kMiB / 2));  // 1 + 0.5 + 1
  auto f = block(2 * kMiB);  // no free run holds 2 MiB: new memory, nothing evicted for it
  s = nordf::cpu_cache_stats();
  CHECK(s.misses == start.misses + 1);
  CHECK(s.released == start.released);
  CHECK(s.cached_bytes == static_cast<std::size_t>(2 * kMiB + kMiB / 2));
  CHECK(s.in_use_bytes >= static_cast<std::size_t>(19 * kMiB));
  CHECK(s.peak_in_use_bytes >= s.in_use_bytes);
  CHECK(s.peak_bytes >= s.in_use_bytes + s.cached_bytes);
}

TEST_CASE("cpu cache: freed neighbours merge into one run", "[core][memory]") {
  CacheScope scope(256 * kMiB);
  char* base = nullptr;
  { base = static_cast<char*>(block(12 * kMiB).data_ptr()); }
  auto x = block(4 * kMiB), y = block(4 * kMiB), z = block(4 * kMiB);
  CHECK(y.data_ptr() == base + 4 * kMiB);
  x.reset();
  z.reset();
  y.reset();  // joins the runs on both sides
  const auto before = nordf::cpu_cache_stats();
  CHECK(before.cached_bytes == static_cast<std::size_t>(12 * kMiB));
  auto whole = block(12 * kMiB);
  CHECK(whole.data_ptr() == base);
  const auto after = nordf::cpu_cache_stats();
  CHECK(after.hits == before.hits + 1);
  CHECK(after.misses == before.misses);
  CHECK(after.cached_bytes == 0);
  whole.fill_(3.0f);
  CHECK(whole.sum().item<double>() == 3.0 * 3 * kMiB);
}

TEST_CASE("cpu cache: the cap bounds what is kept, and release empties it", "[core][memory]") {
  CacheScope scope(1 * kMiB);
  { auto big = block(2 * kMiB); }  // larger than the cap: unmapped at once
  CHECK(nordf::cpu_cache_stats().cached_bytes == 0);
  {
    auto a = block(kMiB / 2), b = block(kMiB / 2), c = block(kMiB / 2);
  }  // 1.5 MiB freed into a 1 MiB cache
  auto s = nordf::cpu_cache_stats();
  CHECK(s.cached_bytes == static_cast<std::size_t>(kMiB));
  CHECK(s.max_cached_bytes == static_cast<std::size_t>(kMiB));
  CHECK(nordf::release_cpu_cache() == static_cast<std::size_t>(kMiB));
  CHECK(nordf::cpu_cache_stats().cached_bytes == 0);
  // Only the part over the cap goes: 512 KiB and then 768 KiB freed into a 1 MiB cache leave
  // 1 MiB cached, the older run cut short (or the two merged and cut, if they touch).
  { auto whole = block(kMiB); }
  auto x = block(kMiB / 2), y = block(kMiB / 2);  // both from the cached 1 MiB
  x.reset();
  const auto misses_before = nordf::cpu_cache_stats().misses;
  { auto z = block(3 * kMiB / 4); }  // no free run holds it: new memory
  s = nordf::cpu_cache_stats();
  CHECK(s.misses == misses_before + 1);
  CHECK(s.cached_bytes == static_cast<std::size_t>(kMiB));
  CHECK(nordf::release_cpu_cache() == static_cast<std::size_t>(kMiB));
  // Small requests bypass the cache: they are glibc's to reuse.
  const auto misses = nordf::cpu_cache_stats().misses;
  { auto small = block(4096); }
  CHECK(nordf::cpu_cache_stats().misses == misses);
  CHECK(nordf::cpu_cache_stats().cached_bytes == 0);
}

TEST_CASE("cpu cache: disabling restores LibTorch's allocator, and live tensors survive it", "[core][memory]") {
  c10::Allocator* const original = c10::GetCPUAllocator();
  torch::Tensor kept;
  {
    CacheScope scope(64 * kMiB);
    CHECK(c10::GetCPUAllocator() != original);
    kept = torch::arange(kMiB, torch::kFloat32);  // 4 MiB, from the cache's allocator
  }
  CHECK(c10::GetCPUAllocator() == original);
  CHECK(!nordf::cpu_cache_stats().enabled);
  CHECK(kept[kMiB - 1].item<float>() == static_cast<float>(kMiB - 1));
  kept.reset();  // freed after disabling: unmapped, not cached
  CHECK(nordf::cpu_cache_stats().cached_bytes == 0);
}

TEST_CASE("cpu cache: a network trains to the same values with and without it", "[core][memory]") {
  torch::set_num_threads(1);
  auto train = [] {
    torch::manual_seed(3);
    torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1)), torch::nn::GELU(),
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 8, 3).padding(1)));
    torch::optim::Adam opt(net->parameters(), 1e-3);
    const auto x = torch::randn({4, 3, 48, 48});  // activations of 4 × 16 × 48² floats: 576 KiB, cached
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      net->forward(x).square().mean().backward();
      opt.step();
    }
    return net->forward(x).detach().clone();
  };
  const auto plain = train();
  torch::Tensor cached, again;
  {
    CacheScope scope(256 * kMiB);
    cached = train();
    again = train();  // the second run takes its buffers from the cache the first one filled
    CHECK(nordf::cpu_cache_stats().hits > 0);
  }
  CHECK(torch::equal(plain, cached));
  CHECK(torch::equal(plain, again));
}

TEST_CASE("cpu cache: threads allocating at once never share a block", "[core][memory]") {
  CacheScope scope(64 * kMiB);
  std::atomic<int> corrupted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t, &corrupted] {
      std::mt19937 rng(t);
      std::vector<torch::Tensor> held;
      for (int i = 0; i < 200; ++i) {
        const int64_t floats = (16 + static_cast<int64_t>(rng() % 8)) * 4096;  // 256–368 KiB
        auto x = torch::full({floats}, static_cast<float>(t * 1000 + i));
        held.push_back(x);
        if (held.size() > 3) {
          const auto& old = held.front();
          if (!torch::all(old == old[0]).item<bool>()) ++corrupted;
          held.erase(held.begin());
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(corrupted == 0);
  CHECK(nordf::cpu_cache_stats().hits > 0);
}

TEST_CASE("cpu cache: NORDF_CPU_CACHE_MB sets the cap, 0 turns it off, anything else is refused", "[core][memory]") {
  c10::Allocator* const original = c10::GetCPUAllocator();
  ::setenv("NORDF_CPU_CACHE_MB", "64", 1);
  CHECK(nordf::configure_cpu_cache());
  CHECK(nordf::cpu_cache_stats().max_cached_bytes == static_cast<std::size_t>(64 * kMiB));
  ::setenv("NORDF_CPU_CACHE_MB", "0", 1);
  CHECK(!nordf::configure_cpu_cache());
  CHECK(c10::GetCPUAllocator() == original);
  for (const char* bad : {"", "-1", "12MB", "1e3", "9999999999"}) {
    ::setenv("NORDF_CPU_CACHE_MB", bad, 1);
    REQUIRE_THROWS_WITH(nordf::configure_cpu_cache(), Catch::Contains("NORDF_CPU_CACHE_MB='" + std::string(bad) + "'"));
  }
  ::unsetenv("NORDF_CPU_CACHE_MB");
  CHECK(nordf::configure_cpu_cache());
  CHECK(nordf::cpu_cache_stats().max_cached_bytes == nordf::default_cpu_cache_bytes());
  nordf::disable_cpu_cache();
}
