#pragma once
/// @file
/// A caching allocator for LibTorch's CPU tensors.
///
/// LibTorch allocates CPU tensors with `posix_memalign` and frees them with `free`. glibc serves
/// every large block with its own `mmap` and unmaps it when it is freed, so each activation
/// buffer of each training step or evaluation batch is faulted in, and zeroed by the kernel, page
/// by page: on a 2-core machine the default model's evaluation spends more time in those page
/// faults than in its kernels. The caching allocator keeps freed blocks and hands them out again
/// for later requests, as LibTorch's CUDA allocator does for GPU memory.
///
/// Freed blocks become free runs of mapped pages; a freed block merges with the free runs right
/// before and after it. A request takes the head of the smallest free run that holds it, and
/// the rest of the run stays cached (unless under 64 KiB would be left); only when no free run
/// holds it is new memory mapped. So blocks that are free at a moment serve requests of other
/// sizes, and the mapped total stays close to the largest total in use. Cached pages are
/// returned to the system, least recently freed first, only when they exceed the cap. A
/// training step or an evaluation batch asks for the same sizes in the same order every time,
/// so after the first one nearly every request is served from the cache. The cost is memory:
/// the pages that are free at one moment stay mapped, so the footprint is the in-use bytes
/// plus at most the cap. Tensor values are unaffected: only where their storage comes from
/// changes.

#include <cstddef>
#include <cstdint>

namespace nordf {

/// What the caching allocator holds and has done since it was first enabled.
struct CpuCacheStats {
  bool enabled = false;             ///< installed as LibTorch's CPU allocator
  std::size_t max_cached_bytes = 0; ///< the cap on `cached_bytes`
  std::size_t in_use_bytes = 0;     ///< blocks handed out and not yet freed (cached sizes only)
  std::size_t cached_bytes = 0;     ///< free runs kept for reuse
  std::size_t peak_bytes = 0;       ///< largest `in_use_bytes + cached_bytes` seen
  std::size_t peak_in_use_bytes = 0;  ///< largest `in_use_bytes` seen
  std::uint64_t hits = 0;           ///< requests served from the cache
  std::uint64_t misses = 0;         ///< requests that mapped new memory
  std::uint64_t released = 0;       ///< free runs, or their tails, returned to the system
};

/// Requests smaller than this go straight to `posix_memalign`; glibc's arenas already reuse them.
inline constexpr std::size_t kCpuCacheMinBytes = std::size_t{64} << 10;

/// Installs the caching allocator as LibTorch's CPU allocator, or changes its cap if it is
/// installed. Freed blocks are cached up to `max_cached_bytes`; past the cap, the least recently
/// freed pages are returned to the system (a freed block larger than the cap at once). Tensors allocated before the call keep their own deleter.
/// Returns false, changing nothing, if another allocator has claimed LibTorch's CPU slot with a
/// higher priority. Thread-safe.
bool enable_cpu_cache(std::size_t max_cached_bytes);

/// Puts LibTorch's default CPU allocator back and returns every cached page to the system.
/// Tensors still alive keep working; their blocks are unmapped when they are freed.
void disable_cpu_cache();

/// Returns every cached page to the system; blocks in use are untouched. Returns the bytes freed.
std::size_t release_cpu_cache();

/// A snapshot of the allocator's counters.
CpuCacheStats cpu_cache_stats();

/// The cap `configure_cpu_cache` uses when `NORDF_CPU_CACHE_MB` is unset: a quarter of the
/// physical memory.
std::size_t default_cpu_cache_bytes();

/// What the apps and `experiment::run` call: enables the cache with the cap in MiB given by the
/// environment variable `NORDF_CPU_CACHE_MB` (0 disables it, leaving LibTorch's allocator), or
/// `default_cpu_cache_bytes()` when it is unset. Throws `std::invalid_argument` naming the
/// variable if it is not a non-negative integer. Returns whether the cache is enabled.
bool configure_cpu_cache();

}  // namespace nordf
