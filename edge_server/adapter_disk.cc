#include "edge_server/adapter_disk.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "base/file_util.h"

namespace edgesplit {

namespace fs = std::filesystem;

namespace {

// One spelling per directory ("a//b/" and "a/b" are the same key).
std::string Key(const std::string& dir) {
  std::string k = fs::path(dir).lexically_normal().string();
  while (k.size() > 1 && k.back() == '/') k.pop_back();
  return k;
}

// The directories directly below `dir`; none on any error (a scan must
// not stop the server).
std::vector<fs::path> Subdirectories(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) out.push_back(it->path());
  }
  return out;
}

}  // namespace

void FetchedAdapterDisk::Scan(const std::string& adapter_dir) {
  std::vector<std::pair<fs::file_time_type, HeldAdapter>> found;
  for (const fs::path& model :
       Subdirectories(fs::path(adapter_dir) / ".cluster")) {
    const std::string model_dir = model.filename().string();
    for (const fs::path& adapter : Subdirectories(model)) {
      // A staging directory a crash left (PublishDirectory's ".<name>...")
      // is no adapter: names never start with '.'.
      if (absl::StartsWith(adapter.filename().string(), ".")) continue;
      HeldAdapter a;
      // A hashed name ("%<hex>") does not say which model it was.
      a.model_id = absl::StartsWith(model_dir, "%") ? "" : model_dir;
      a.name = adapter.filename().string();
      a.dir = adapter.string();
      bool readable = true;
      std::error_code ec;
      fs::directory_iterator it(adapter, ec), end;
      for (; !ec && it != end && readable; it.increment(ec)) {
        std::error_code type_ec;
        // Fetched adapters hold regular files only (a FIFO would block).
        absl::StatusOr<std::string> bytes =
            it->is_regular_file(type_ec)
                ? ReadFile(it->path().string())
                : absl::StatusOr<std::string>(absl::DataLossError("odd file"));
        readable = bytes.ok();
        if (readable) {
          a.blobs[Sha256Hex(*bytes)] = static_cast<int64_t>(bytes->size());
        }
      }
      if (!readable || ec) continue;
      found.emplace_back(fs::last_write_time(adapter, ec), std::move(a));
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
  adapter.dir = Key(adapter.dir);
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

bool FetchedAdapterDisk::Holds(const std::string& dir) const {
  return held_.count(Key(dir)) > 0;
}

int64_t FetchedAdapterDisk::bytes() const {
  // Each adapter's directory holds its own copy of its files; the blob
  // store holds each distinct file once.
  std::map<std::string, int64_t> distinct;
  int64_t total = 0;
  for (const auto& [dir, e] : held_) {
    for (const auto& [id, n] : e.adapter.blobs) {
      total += n;
      distinct.emplace(id, n);
    }
  }
  for (const auto& [id, n] : distinct) total += n;
  return total;
}

std::vector<HeldAdapter> FetchedAdapterDisk::EvictOverBudget(
    const std::string& keep) {
  std::vector<HeldAdapter> evicted;
  if (max_bytes_ <= 0) return evicted;
  const std::string kept = keep.empty() ? "" : Key(keep);
  int64_t total = bytes();
  for (auto it = lru_.rbegin(); total > max_bytes_ && it != lru_.rend();) {
    if (*it == kept) {
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
      total -= n;  // Its directory's copy.
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
