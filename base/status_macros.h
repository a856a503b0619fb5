// Status propagation helpers. Abseil 20220623 ships no public equivalents.
#ifndef EDGESPLIT_BASE_STATUS_MACROS_H_
#define EDGESPLIT_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ES_CONCAT_INNER_(a, b) a##b
#define ES_CONCAT_(a, b) ES_CONCAT_INNER_(a, b)

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define ES_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status es_status_ = (expr);      \
    if (!es_status_.ok()) return es_status_; \
  } while (0)

// ES_ASSIGN_OR_RETURN(auto x, FunctionReturningStatusOr());
#define ES_ASSIGN_OR_RETURN(lhs, rexpr) \
  ES_ASSIGN_OR_RETURN_IMPL_(ES_CONCAT_(es_statusor_, __LINE__), lhs, rexpr)

#define ES_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)    \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // EDGESPLIT_BASE_STATUS_MACROS_H_
