#include <libnordf/core/memory.h>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
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

// All state behind one mutex. Created once and never destroyed: tensors may be freed during
// static destruction, after a function-local static would be gone.
struct Cache {
  std::mutex mu;
  bool enabled = false;
  c10::Allocator* previous = nullptr;
  std::size_t cap = 0;
  std::unordered_map<void*, std::size_t> live;                  // mapped blocks handed out
  std::list<Block> lru;                                         // cached blocks, least recently freed first
  std::multimap<std::size_t, std::list<Block>::iterator> by_size;  // the same blocks by size
  CpuCacheStats stats;

  // Moves the least recently freed cached block to `out`. Requires the lock and a non-empty cache.
  void evict_oldest(std::vector<Block>& out) {
    const auto oldest = lru.begin();
    auto [first, last] = by_size.equal_range(oldest->second);
    for (; first != last; ++first)
      if (first->second == oldest) {
        by_size.erase(first);
        break;
      }
    stats.cached_bytes -= oldest->second;
    ++stats.released;
    out.push_back(*oldest);
    lru.erase(oldest);
  }

  void note_peak() {
    stats.peak_bytes = std::max(stats.peak_bytes, stats.in_use_bytes + stats.cached_bytes);
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
      const auto pos = c.lru.insert(c.lru.end(), Block{ptr, size});
      c.by_size.emplace(size, pos);
      c.stats.cached_bytes += size;
      while (c.stats.cached_bytes > c.cap) c.evict_oldest(to_unmap);
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
      // Best fit: the smallest cached block that holds the request and wastes at most an eighth
      // of it; among equal sizes, the most recently freed, likeliest still in the CPU's caches.
      auto fit = c.by_size.lower_bound(size);
      if (fit != c.by_size.end() && fit->first - size <= size / 8) {
        const std::size_t block = fit->first;
        auto newest = std::prev(c.by_size.upper_bound(block));
        void* ptr = newest->second->first;
        c.lru.erase(newest->second);
        c.by_size.erase(newest);
        c.stats.cached_bytes -= block;
        c.stats.in_use_bytes += block;
        ++c.stats.hits;
        c.live.emplace(ptr, block);
        return {ptr, ptr, &cached_free, cpu};
      }
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
    while (c.stats.cached_bytes > c.cap) c.evict_oldest(to_unmap);
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
    while (!c.lru.empty()) c.evict_oldest(to_unmap);
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
