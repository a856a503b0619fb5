// Version of the edgesplit.v1 wire protocol this build speaks. Peers send it
// in OpenSession and RegisterNode; a server refuses other versions.
#ifndef EDGESPLIT_PROTO_PROTOCOL_H_
#define EDGESPLIT_PROTO_PROTOCOL_H_

#include <cstdint>

namespace edgesplit {

inline constexpr uint32_t kProtocolVersion = 1;

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_PROTOCOL_H_
