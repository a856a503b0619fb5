#include "edge_server/adapter_disk.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "base/file_util.h"

namespace edgesplit {

namespace fs = std::filesystem;

void FetchedAdapterDisk::Scan(const std::string& adapter_dir) {
  std::error_code ec;
  const fs::path root = fs::path(adapter_dir) / ".cluster";
  if (!fs::is_directory(root, ec)) return;
  std::vector<std::pair<fs::file_time_type, HeldAdapter>> found;
  for (const auto& model : fs::directory_iterator(root, ec)) {
    if (!model.is_directory(ec)) continue;
    const std::string model_dir = model.path().filename().string();
    for (const auto& adapter : fs::directory_iterator(model.path(), ec)) {
      if (!adapter.is_directory(ec)) continue;
      HeldAdapter a;
      // A hashed name ("%<hex>") does not say which model it was.
      a.model_id = absl::StartsWith(model_dir, "%") ? "" : model_dir;
      a.name = adapter.path().filename().string();
      a.dir = adapter.path().string();
      bool readable = true;
      for (const auto& file : fs::directory_iterator(adapter.path(), ec)) {
        auto bytes = ReadFile(file.path().string());
        if (!bytes.ok()) {
          readable = false;
          break;
        }
        a.blobs[Sha256Hex(*bytes)] = static_cast<int64_t>(bytes->size());
      }
      if (readable) {
        found.emplace_back(fs::last_write_time(adapter.path(), ec),
                           std::move(a));
      }
    }
  }
  // Oldest use first: Track() puts the last one in front.
  std::sort(found.begin(), found.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  for (auto& [when, a] : found) Track(std::move(a));
}

void FetchedAdapterDisk::Use(HeldAdapter adapter) {
  // The directory's time is its last use, so the order survives restarts.
  std::error_code ec;
  fs::last_write_time(adapter.dir, fs::file_time_type::clock::now(), ec);
  Track(std::move(adapter));
}

void FetchedAdapterDisk::Track(HeldAdapter adapter) {
  auto it = held_.find(adapter.dir);
  if (it != held_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.position);
    // The registry's answer names the model a scan could not.
    if (!adapter.model_id.empty()) {
      it->second.adapter.model_id = adapter.model_id;
    }
    return;
  }
  for (const auto& [id, bytes] : adapter.blobs) ++blob_users_[id];
  lru_.push_front(adapter.dir);
  const std::string dir = adapter.dir;
  held_[dir] = Entry{std::move(adapter), lru_.begin()};
}

int64_t FetchedAdapterDisk::bytes() const {
  std::map<std::string, int64_t> distinct;
  for (const auto& [dir, e] : held_) {
    distinct.insert(e.adapter.blobs.begin(), e.adapter.blobs.end());
  }
  int64_t total = 0;
  for (const auto& [id, n] : distinct) total += n;
  return total;
}

std::vector<HeldAdapter> FetchedAdapterDisk::EvictOverBudget(
    const std::string& keep) {
  std::vector<HeldAdapter> evicted;
  if (max_bytes_ <= 0) return evicted;
  int64_t total = bytes();
  for (auto it = lru_.rbegin(); total > max_bytes_ && it != lru_.rend();) {
    if (*it == keep) {
      ++it;
      continue;
    }
    auto entry = held_.find(*it);
    HeldAdapter victim = std::move(entry->second.adapter);
    held_.erase(entry);
    it = std::make_reverse_iterator(lru_.erase(std::next(it).base()));
    std::error_code ec;
    fs::remove_all(victim.dir, ec);
    for (const auto& [id, n] : victim.blobs) {
      if (--blob_users_[id] > 0) continue;
      blob_users_.erase(id);
      total -= n;
      store_->Remove(id);
    }
    evicted.push_back(std::move(victim));
  }
  return evicted;
}

}  // namespace edgesplit
