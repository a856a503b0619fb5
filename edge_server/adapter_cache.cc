#include "edge_server/adapter_cache.h"

#include <chrono>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "delivery/adapter_files.h"

namespace edgesplit {

AdapterCache::AdapterCache(ModelConfig model, BlockRange blocks,
                           AdapterCacheOptions options)
    : model_(std::move(model)), blocks_(blocks), options_(std::move(options)) {}

absl::StatusOr<std::shared_ptr<const LoraAdapter>> AdapterCache::Get(
    const std::string& name) {
  ES_RETURN_IF_ERROR(ValidateAdapterName(name));
  {
    absl::ReleasableMutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      ++stats_.hits;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      std::shared_ptr<const LoraAdapter> hit = it->second.adapter;
      lock.Release();
      if (options_.source != nullptr) {
        options_.source->Used(options_.model_id, name, options_.dir);
      }
      return hit;
    }
    ++stats_.misses;
  }
  const auto t0 = std::chrono::steady_clock::now();
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const LoraAdapter> adapter, Load(name));
  int64_t bytes = 0;
  for (const auto& [module, f] : adapter->modules()) {
    bytes += static_cast<int64_t>(f.a.nbytes() + f.b.nbytes());
  }
  absl::MutexLock lock(&mu_);
  stats_.load_ms += std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count();
  auto it = entries_.find(name);
  if (it != entries_.end()) return it->second.adapter;  // Loaded meanwhile.
  if (bytes > options_.memory_bytes) return adapter;    // Never fits: not kept.
  lru_.push_front(name);
  entries_[name] = {adapter, bytes, lru_.begin()};
  stats_.resident_bytes += bytes;
  EvictOverBudgetLocked(name);
  return adapter;
}

absl::StatusOr<std::shared_ptr<const LoraAdapter>> AdapterCache::Load(
    const std::string& name) const {
  if (options_.dir.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "adapter \"", name, "\": this server has no adapter directory"));
  }
  ES_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> whole, LoadFromDisk(name));
  std::unique_ptr<LoraAdapter> part = whole->Slice(model_, blocks_);
  whole.reset();  // Only this stage's blocks stay in memory.
  // LoadPeft gives float32 contiguous factors: the fused decode path's.
  return std::shared_ptr<const LoraAdapter>(std::move(part));
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> AdapterCache::LoadFromDisk(
    const std::string& name) const {
  absl::Status read;
  // Twice at most: a fetched adapter may be evicted from disk (another
  // stage's fetch over the disk budget) between finding it and reading it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (options_.source != nullptr) {
      // Fetches it if it is missing; either way the source sees the use.
      ES_RETURN_IF_ERROR(
          options_.source->Materialize(options_.model_id, name, options_.dir));
    }
    ES_ASSIGN_OR_RETURN(std::string dir,
                        FindAdapterDir(options_.dir, options_.model_id, name));
    if (dir.empty()) {
      if (options_.source == nullptr) {
        return absl::NotFoundError(
            absl::StrCat("adapter \"", name, "\" is not in ", options_.dir));
      }
      read = absl::NotFoundError(absl::StrCat(
          "adapter \"", name, "\" was fetched but is not in ", options_.dir));
      continue;
    }
    absl::StatusOr<std::unique_ptr<LoraAdapter>> whole =
        LoraAdapter::LoadPeft(dir, model_, name);
    // Without a source nothing evicts; a bad adapter fails again, at the
    // cost of one more read.
    if (whole.ok() || options_.source == nullptr) return whole;
    read = whole.status();
  }
  return read;
}

void AdapterCache::EvictOverBudgetLocked(const std::string& keep) {
  while (stats_.resident_bytes > options_.memory_bytes && !lru_.empty()) {
    const std::string victim = lru_.back();
    if (victim == keep) break;
    auto it = entries_.find(victim);
    stats_.resident_bytes -= it->second.bytes;
    lru_.pop_back();
    entries_.erase(it);
    ++stats_.evictions;
  }
}

AdapterCacheStats AdapterCache::stats() const {
  absl::MutexLock lock(&mu_);
  AdapterCacheStats s = stats_;
  s.resident = static_cast<int64_t>(entries_.size());
  return s;
}

}  // namespace edgesplit
