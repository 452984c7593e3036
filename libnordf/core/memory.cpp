#include <libnordf/core/memory.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nordf {
namespace {

constexpr std::size_t kAlignment = 64;  // LibTorch's own CPU alignment (c10::gAlignment)

std::size_t page_size() {
  static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

using Block = std::pair<void*, std::size_t>;  // mapped address, mapped size

// A run of free, mapped pages: possibly several freed blocks, or part of one. `stamp` orders
// the runs by when they were last freed into; eviction takes the oldest first.
struct FreeRun {
  std::size_t size = 0;
  std::uint64_t stamp = 0;
};

// All state behind one mutex. Created once and never destroyed: tensors may be freed during
// static destruction, after a function-local static would be gone.
//
// The free runs are indexed three ways: by address, to merge a freed block with the runs on
// either side of it (neighbouring anonymous mappings are one range to `munmap`, whichever call
// mapped them); by size, for the best fit; and by stamp, for eviction.
struct Cache {
  std::mutex mu;
  bool enabled = false;
  c10::Allocator* previous = nullptr;
  std::size_t cap = 0;
  std::uint64_t clock = 0;
  std::unordered_map<void*, std::size_t> live;  // blocks handed out, by address: their mapped size
  std::map<std::uintptr_t, FreeRun> runs;       // free runs by address
  // (size, newest first, address): the first entry not below {n, 0, 0} is the smallest run of at
  // least n bytes, and among runs of that size the most recently freed, likeliest still in the
  // CPU's caches.
  std::set<std::tuple<std::size_t, std::uint64_t, std::uintptr_t>> by_size;
  std::set<std::pair<std::uint64_t, std::uintptr_t>> by_stamp;  // oldest first
  CpuCacheStats stats;

  void insert_run(std::uintptr_t addr, FreeRun run) {
    runs.emplace(addr, run);
    by_size.emplace(run.size, ~run.stamp, addr);
    by_stamp.emplace(run.stamp, addr);
    stats.cached_bytes += run.size;
  }

  // Takes the run at `it` out of every index. Returns the address and the run.
  std::pair<std::uintptr_t, FreeRun> erase_run(std::map<std::uintptr_t, FreeRun>::iterator it) {
    const auto out = *it;
    by_size.erase({out.second.size, ~out.second.stamp, out.first});
    by_stamp.erase({out.second.stamp, out.first});
    runs.erase(it);
    stats.cached_bytes -= out.second.size;
    return out;
  }

  // Caches a freed block, merged with the free runs that touch it.
  void add_free(std::uintptr_t addr, std::size_t size) {
    auto next = runs.lower_bound(addr);
    if (next != runs.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second.size == addr) {
        const auto [a, run] = erase_run(prev);
        addr = a;
        size += run.size;
      }
    }
    if (next != runs.end() && addr + size == next->first) size += erase_run(next).second.size;
    insert_run(addr, FreeRun{size, ++clock});
  }

  // Unmaps the least recently freed pages until the cache holds at most `cap` bytes: whole runs,
  // and the tail of the last one when only part of it is over. Requires the lock.
  void trim(std::vector<Block>& out) {
    while (stats.cached_bytes > cap) {
      const auto oldest = runs.find(by_stamp.begin()->second);
      const auto [addr, run] = erase_run(oldest);
      const std::size_t over = stats.cached_bytes + run.size - cap;
      if (over < run.size) {
        const std::size_t cut = (over + page_size() - 1) / page_size() * page_size();
        if (cut < run.size) {
          insert_run(addr, FreeRun{run.size - cut, run.stamp});
          out.push_back({reinterpret_cast<void*>(addr + run.size - cut), cut});
          ++stats.released;
          continue;
        }
      }
      out.push_back({reinterpret_cast<void*>(addr), run.size});
      ++stats.released;
    }
  }

  // Hands out `size` bytes (a whole number of pages) from the smallest free run that holds them,
  // or returns nullptr. A run with at least kCpuCacheMinBytes to spare is split: its head is
  // handed out and its tail stays cached. Requires the lock.
  void* take(std::size_t size) {
    const auto fit = by_size.lower_bound({size, 0, 0});
    if (fit == by_size.end()) return nullptr;
    const auto [addr, run] = erase_run(runs.find(std::get<2>(*fit)));
    std::size_t block = run.size;
    if (run.size - size >= kCpuCacheMinBytes) {
      insert_run(addr + size, FreeRun{run.size - size, run.stamp});
      block = size;
    }
    void* ptr = reinterpret_cast<void*>(addr);
    live.emplace(ptr, block);
    stats.in_use_bytes += block;
    ++stats.hits;
    note_peak();
    return ptr;
  }

  void note_peak() {
    stats.peak_bytes = std::max(stats.peak_bytes, stats.in_use_bytes + stats.cached_bytes);
    stats.peak_in_use_bytes = std::max(stats.peak_in_use_bytes, stats.in_use_bytes);
  }
};

Cache& cache() {
  static Cache* const c = new Cache;
  return *c;
}

void unmap(const std::vector<Block>& blocks) {
  for (const auto& [ptr, size] : blocks) ::munmap(ptr, size);
}

// The deleter of small blocks' DataPtrs: they never enter the cache, so freeing them takes no lock.
void small_free(void* ptr) { std::free(ptr); }

// The deleter of mapped blocks, and raw_deleter(), which must handle every block.
void cached_free(void* ptr) {
  if (!ptr) return;
  Cache& c = cache();
  std::vector<Block> to_unmap;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    const auto it = c.live.find(ptr);
    if (it == c.live.end()) {
      std::free(ptr);  // a small block from posix_memalign, through raw_deleter()
      return;
    }
    const std::size_t size = it->second;
    c.live.erase(it);
    c.stats.in_use_bytes -= size;
    if (c.enabled && size <= c.cap) {
      c.add_free(reinterpret_cast<std::uintptr_t>(ptr), size);
      c.trim(to_unmap);
    } else {
      to_unmap.push_back({ptr, size});
    }
  }
  unmap(to_unmap);
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n == 0) return {nullptr, nullptr, &cached_free, cpu};
    if (n < kCpuCacheMinBytes) {
      void* ptr = nullptr;
      if (::posix_memalign(&ptr, kAlignment, n) != 0 || !ptr)
        TORCH_CHECK(false, "libnordf CPU allocator: cannot allocate ", n, " bytes");
      return {ptr, ptr, &small_free, cpu};
    }
    const std::size_t page = page_size();
    const std::size_t size = (n + page - 1) / page * page;
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mu);
      if (void* ptr = c.take(size)) return {ptr, ptr, &cached_free, cpu};
      ++c.stats.misses;
    }
    void* ptr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptr == MAP_FAILED) {
      release_cpu_cache();
      ptr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      TORCH_CHECK(ptr != MAP_FAILED, "libnordf CPU allocator: cannot allocate ", n, " bytes");
    }
    std::lock_guard<std::mutex> lock(c.mu);
    c.live.emplace(ptr, size);
    c.stats.in_use_bytes += size;
    c.note_peak();
    return {ptr, ptr, &cached_free, cpu};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &cached_free; }
};

CachingCpuAllocator& allocator() {
  static CachingCpuAllocator* const a = new CachingCpuAllocator;
  return *a;
}

}  // namespace

bool enable_cpu_cache(std::size_t max_cached_bytes) {
  Cache& c = cache();
  std::vector<Block> to_unmap;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (!c.enabled) {
      c10::Allocator* current = c10::GetCPUAllocator();
      if (current != &allocator()) {
        c10::SetCPUAllocator(&allocator());
        if (c10::GetCPUAllocator() != &allocator()) return false;  // a higher-priority allocator holds the slot
        c.previous = current;
      }
      c.enabled = true;
    }
    c.cap = max_cached_bytes;
    c.stats.max_cached_bytes = max_cached_bytes;
    c.trim(to_unmap);
  }
  unmap(to_unmap);
  return true;
}

void disable_cpu_cache() {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (!c.enabled) return;
    c.enabled = false;
    if (c10::GetCPUAllocator() == &allocator())
      c10::SetCPUAllocator(c.previous ? c.previous : c10::GetDefaultCPUAllocator());
  }
  release_cpu_cache();
}

std::size_t release_cpu_cache() {
  Cache& c = cache();
  std::vector<Block> to_unmap;
  std::size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    bytes = c.stats.cached_bytes;
    while (!c.runs.empty()) {
      const auto [addr, run] = c.erase_run(c.runs.begin());
      to_unmap.push_back({reinterpret_cast<void*>(addr), run.size});
      ++c.stats.released;
    }
  }
  unmap(to_unmap);
  return bytes;
}

CpuCacheStats cpu_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  CpuCacheStats s = c.stats;
  s.enabled = c.enabled;
  return s;
}

std::size_t default_cpu_cache_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  return pages > 0 ? static_cast<std::size_t>(pages) * page_size() / 4 : std::size_t{1} << 30;
}

bool configure_cpu_cache() {
  const char* env = std::getenv("NORDF_CPU_CACHE_MB");
  std::size_t bytes = default_cpu_cache_bytes();
  if (env) {
    const std::string text(env);
    if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("NORDF_CPU_CACHE_MB='" + text +
                                  "': expected the cache size in MiB, a whole number from 0 (off) to 999999999");
    bytes = static_cast<std::size_t>(std::stoull(text)) << 20;
  }
  if (bytes == 0) {
    disable_cpu_cache();
    return false;
  }
  return enable_cpu_cache(bytes);
}

}  // namespace nordf
