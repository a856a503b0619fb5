// Version of the edgesplit.v1 wire protocol this build speaks. Peers send it
// in OpenSession and RegisterNode; a server refuses other versions.
#ifndef EDGESPLIT_PROTO_PROTOCOL_H_
#define EDGESPLIT_PROTO_PROTOCOL_H_

#include <cstdint>
#include <string>

namespace edgesplit {

inline constexpr uint32_t kProtocolVersion = 1;

// Where compute profiles are kept, by the controller and by the server that
// measured them: the model id, with "@<weights>" for a ComputeProfile of a
// weight type other than the node's own.
inline std::string ComputeKey(const std::string& model_id,
                              const std::string& weights) {
  return weights.empty() ? model_id : model_id + "@" + weights;
}

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_PROTOCOL_H_
