#include "delivery/blob_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/grpc_status.h"

namespace edgesplit {

absl::StatusOr<v1::ReadBlobResponse> ServeReadBlob(
    const BlobStore& store, const v1::ReadBlobRequest& request) {
  ES_RETURN_IF_ERROR(ValidateBlobId(request.id()));
  if (request.max_bytes() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_bytes must be positive, got ", request.max_bytes()));
  }
  ES_ASSIGN_OR_RETURN(int64_t size, store.Size(request.id()));
  v1::ReadBlobResponse response;
  ES_ASSIGN_OR_RETURN(
      *response.mutable_data(),
      store.Read(request.id(), request.offset(),
                 std::min(request.max_bytes(), kMaxBlobChunkBytes)));
  response.set_total_bytes(size);
  return response;
}

grpc::ServerUnaryReactor* BlobServiceImpl::ReadBlob(
    grpc::CallbackServerContext* ctx, const v1::ReadBlobRequest* request,
    v1::ReadBlobResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  absl::Status s = authorize_(ctx, *request);
  if (s.ok()) {
    auto r = ServeReadBlob(*store_, *request);
    if (r.ok()) {
      *response = *std::move(r);
    } else {
      s = r.status();
    }
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

absl::StatusOr<std::string> GrpcBlobSource::Read(const std::string& id,
                                                 int64_t offset,
                                                 int64_t max_bytes,
                                                 absl::Time deadline,
                                                 int64_t* total) {
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(deadline));
  v1::ReadBlobRequest request;
  request.set_id(id);
  request.set_offset(offset);
  request.set_max_bytes(max_bytes);
  v1::ReadBlobResponse response;
  ES_RETURN_IF_ERROR(
      FromGrpcStatus(stub_->ReadBlob(&ctx, request, &response), name_));
  *total = response.total_bytes();
  return std::move(*response.mutable_data());
}

}  // namespace edgesplit
