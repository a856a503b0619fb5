// The disk side of a server's adapter cache: adapters fetched from the
// cluster (<adapter_dir>/.cluster/<model_id>/<name>, and their files as
// blobs in the server's blob store, which peers read) kept under a byte
// budget, least recently used first out (a use: a session loading it from
// disk or finding it in memory, or the controller placing it here).
// Evicting an adapter removes its directory and the blobs no other held
// adapter uses; its owner then tells the controller it no longer holds it.
// Adapters an operator put in <adapter_dir>/<name> are never touched.
// Blobs shared with model copies (model_fetcher.h) are not tracked here:
// adapters and model copies have no files in common in practice.
#ifndef EDGESPLIT_EDGE_SERVER_ADAPTER_DISK_H_
#define EDGESPLIT_EDGE_SERVER_ADAPTER_DISK_H_

#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <vector>

#include "delivery/blob_store.h"

namespace edgesplit {

// A fetched adapter on disk.
struct HeldAdapter {
  std::string model_id;  // "" when only its hashed directory name is known.
  std::string name;
  std::string dir;  // Its PEFT directory (the key, normalized).
  std::map<std::string, int64_t> blobs;  // Its files: blob id -> bytes.
};

// Not thread-safe: ClusterAdapterSource holds it under its disk lock.
class FetchedAdapterDisk {
 public:
  // `store` outlives it; `max_bytes` 0: no limit.
  FetchedAdapterDisk(BlobStore* store, int64_t max_bytes)
      : store_(store), max_bytes_(max_bytes) {}

  // Takes in the adapters an earlier run fetched below
  // <adapter_dir>/.cluster (a file's blob id is the SHA-256 of its bytes),
  // in the order of their directories' times (Use sets them). Unreadable
  // entries are skipped.
  void Scan(const std::string& adapter_dir);
  // `adapter` is held and was just used: the last to go. (An adapter held
  // already keeps its blobs; `adapter.blobs` may then be empty.)
  void Use(HeldAdapter adapter);
  // Whether an adapter with this directory is held.
  bool Holds(const std::string& dir) const;
  // The disk the held adapters take: each one's directory, and each
  // distinct file once more as a blob (blobs a failed fetch left are not
  // counted).
  int64_t bytes() const;
  int64_t max_bytes() const { return max_bytes_; }
  // While over the budget, evicts the least recently used adapter other
  // than the one in `keep` (a directory): removes its directory and the
  // blobs no other held adapter uses. Returns what it evicted.
  std::vector<HeldAdapter> EvictOverBudget(const std::string& keep);

 private:
  // Use() without touching the directory.
  void Track(HeldAdapter adapter);

  BlobStore* const store_;
  const int64_t max_bytes_;
  std::list<std::string> lru_;  // Directories, most recent first.
  struct Entry {
    HeldAdapter adapter;
    std::list<std::string>::iterator position;
  };
  std::map<std::string, Entry> held_;      // By directory.
  std::map<std::string, int> blob_users_;  // Blob id -> held adapters.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_ADAPTER_DISK_H_
