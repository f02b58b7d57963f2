// CallHeader: what a call is addressed to, carried beside its message in the
// call's slot, and the limit on the descriptors a call carries. Both sides
// of a channel use them (client_channel.h, server_channel.h); the channel
// itself interprets none of the header's words.
#ifndef SLUICE_IPC_CHANNEL_CALL_HEADER_H_
#define SLUICE_IPC_CHANNEL_CALL_HEADER_H_

#include <cstddef>
#include <cstdint>

#include "ipc/socket/unix_socket.h"

namespace sluice {

// Descriptors one call (or reply) may carry: one SCM_RIGHTS message's worth,
// less the one a spilled message needs.
inline constexpr size_t kMaxFdsPerCall = kMaxFdsPerMessage - 1;

// The RPC layer puts its interface id and method id (plus signature) here,
// and whatever its words mean.
// On the server side it is as the client wrote it: untrusted.
struct CallHeader {
  uint64_t interface_id = 0;
  uint64_t method = 0;
  // The call chain this call belongs to (rpc::CallRouter); 0 for none.
  uint64_t chain_id = 0;
  // A word the RPC layer sends with the request, as a reply carries
  // Reply::word (rpc: the ticket of a oneway call's loans); 0 for none.
  uint64_t word = 0;
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_CALL_HEADER_H_
