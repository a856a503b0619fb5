#include "delivery/sha256.h"

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::StatusOr<std::string> Sha256OfFile(
    const std::string& path,
    const std::function<void(absl::string_view)>& sink) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const absl::string_view piece(buf.data(), static_cast<size_t>(in.gcount()));
    if (piece.empty()) break;
    h.Update(piece);
    if (sink) sink(piece);
  }
  return h.Hex();
}

}  // namespace edgesplit
