#include "delivery/blob_store.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "delivery/sha256.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;

}  // namespace

std::string Sha256Hex(absl::string_view bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.Hex();
}

absl::Status ValidateBlobId(absl::string_view hex) {
  bool ok = hex.size() == 64;
  for (char c : hex)
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob id \"", hex.substr(0, 80),
                     "\" is not a SHA-256 in lowercase hex"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(std::string root) {
  std::error_code ec;
  for (const char* sub : {"sha256", "partial"}) {
    fs::create_directories(fs::path(root) / sub, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "blob store ", root, ": cannot create ", sub, ": ", ec.message()));
    }
  }
  return std::unique_ptr<BlobStore>(new BlobStore(std::move(root)));
}

std::string BlobStore::PathOf(absl::string_view id) const {
  return absl::StrCat(root_, "/sha256/", id);
}

void BlobStore::Remove(absl::string_view id) {
  if (!ValidateBlobId(id).ok()) return;
  std::error_code ec;
  fs::remove(PathOf(id), ec);
}

std::string BlobStore::PartialPath(absl::string_view id) const {
  return absl::StrCat(root_, "/partial/", id);
}

absl::StatusOr<std::string> BlobStore::Put(absl::string_view bytes) {
  std::string id = Sha256Hex(bytes);
  if (Has(id)) return id;
  ES_RETURN_IF_ERROR(WriteFileAtomically(PathOf(id), bytes));
  return id;
}

bool BlobStore::Has(absl::string_view id) const {
  std::error_code ec;
  return ValidateBlobId(id).ok() && fs::is_regular_file(PathOf(id), ec);
}

absl::StatusOr<int64_t> BlobStore::Size(absl::string_view id) const {
  ES_RETURN_IF_ERROR(ValidateBlobId(id));
  std::error_code ec;
  const auto n = fs::file_size(PathOf(id), ec);
  if (ec) return absl::NotFoundError(absl::StrCat("blob ", id, " is not here"));
  return static_cast<int64_t>(n);
}

absl::StatusOr<std::string> BlobStore::Read(absl::string_view id,
                                            int64_t offset,
                                            int64_t max_bytes) const {
  ES_ASSIGN_OR_RETURN(int64_t size, Size(id));
  if (offset < 0 || offset > size || max_bytes < 0) {
    return absl::OutOfRangeError(absl::StrCat("blob ", id, " has ", size,
                                              " bytes; asked from ", offset));
  }
  std::ifstream in(PathOf(id), std::ios::binary);
  std::string out(static_cast<size_t>(std::min(max_bytes, size - offset)),
                  '\0');
  in.seekg(offset);
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  if (!in)
    return absl::DataLossError(absl::StrCat("blob ", id, ": short read"));
  return out;
}

absl::StatusOr<std::string> BlobStore::ReadVerified(absl::string_view id) {
  ES_ASSIGN_OR_RETURN(int64_t size, Size(id));
  ES_ASSIGN_OR_RETURN(std::string bytes, Read(id, 0, size));
  if (Sha256Hex(bytes) != id) {
    std::error_code ec;
    fs::remove(PathOf(id), ec);
    return absl::DataLossError(
        absl::StrCat("blob ", id, " on disk does not match its hash"));
  }
  return bytes;
}

int64_t BlobStore::PartialSize(absl::string_view id) const {
  std::error_code ec;
  const auto n = fs::file_size(PartialPath(id), ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

absl::Status BlobStore::AppendPartial(absl::string_view id, int64_t offset,
                                      absl::string_view chunk) {
  ES_RETURN_IF_ERROR(ValidateBlobId(id));
  if (offset != PartialSize(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("blob ", id, ": chunk at ", offset, ", have ",
                     PartialSize(id), " bytes"));
  }
  std::ofstream out(PartialPath(id), std::ios::binary | std::ios::app);
  out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  out.flush();
  if (!out) {
    return absl::ResourceExhaustedError(
        absl::StrCat("blob ", id, ": cannot write ", PartialPath(id)));
  }
  return absl::OkStatus();
}

absl::Status BlobStore::CommitPartial(absl::string_view id) {
  ES_RETURN_IF_ERROR(ValidateBlobId(id));
  ES_ASSIGN_OR_RETURN(std::string got, Sha256OfFile(PartialPath(id)));
  if (got != id) {
    DropPartial(id);
    return absl::DataLossError(absl::StrCat(
        "blob ", id, ": the bytes received hash to ", got, "; discarded"));
  }
  std::error_code ec;
  fs::rename(PartialPath(id), PathOf(id), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("blob ", id, ": cannot move into place: ", ec.message()));
  }
  return absl::OkStatus();
}

void BlobStore::DropPartial(absl::string_view id) {
  std::error_code ec;
  fs::remove(PartialPath(id), ec);
}

}  // namespace edgesplit
