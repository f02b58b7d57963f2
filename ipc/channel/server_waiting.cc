#include "ipc/channel/server_waiting.h"

#include "ipc/channel/endpoint.h"
#include "ipc/channel/layout.h"

namespace sluice {

using channel_layout::ActivityState;
using channel_layout::kSlotFlagOneway;

absl::StatusOr<std::optional<IncomingCall>> ServerWaiting::TryReceive() {
  internal::Endpoint& endpoint = *channel_->endpoint_;
  if (absl::Status health = endpoint.health(); !health.ok()) return health;
  MutexLock lock(&channel_->mu_);
  std::optional<IncomingCall> call;
  if (absl::Status claimed = channel_->TryClaimLocked(&call); !claimed.ok()) return claimed;
  // Tells the caller we run, so it may spin for the reply (see Receive).
  if (call.has_value()) endpoint.PublishActivity(ActivityState::kRunning);
  return call;
}

absl::StatusOr<std::optional<IncomingCall>> ServerWaiting::TryReceiveChained(
    absl::FunctionRef<bool(uint64_t chain_id)> accept) {
  internal::Endpoint& endpoint = *channel_->endpoint_;
  if (absl::Status health = endpoint.health(); !health.ok()) return health;
  MutexLock lock(&channel_->mu_);
  std::optional<IncomingCall> call;
  if (absl::Status claimed = channel_->TryClaimLocked(&call, &accept); !claimed.ok()) {
    return claimed;
  }
  // Tells the caller we run, so it may spin for the reply (see Receive).
  if (call.has_value()) endpoint.PublishActivity(ActivityState::kRunning);
  return call;
}

bool ServerWaiting::ChainedRequestPending(absl::FunctionRef<bool(uint64_t chain_id)> accept) const {
  const internal::Endpoint& endpoint = *channel_->endpoint_;
  // An ended channel's slots may still look pending; nobody can take them.
  if (endpoint.terminated()) return false;
  const uint32_t n = endpoint.header().slot_count;
  for (uint32_t i = 0; i < n; ++i) {
    const channel_layout::Slot& slot = endpoint.slot(i);
    if (slot.request_seq.load(std::memory_order_acquire) ==
            channel_->claimed_seq_[i].load(std::memory_order_relaxed) ||
        (slot.flags.load(std::memory_order_relaxed) & kSlotFlagOneway) != 0) {
      continue;
    }
    if (accept(slot.chain_id.load(std::memory_order_relaxed))) return true;
  }
  return false;
}

const FutexWord& ServerWaiting::doorbell() const {
  return channel_->endpoint_->client_words().doorbell;
}

uint32_t ServerWaiting::BeginSleep() {
  internal::Endpoint& endpoint = *channel_->endpoint_;
  endpoint.PublishActivity(ActivityState::kSleeping);
  endpoint.server_words().sleepers.fetch_add(1, std::memory_order_seq_cst);
  return endpoint.client_words().doorbell.load(std::memory_order_seq_cst);
}

void ServerWaiting::EndSleep() {
  channel_->endpoint_->server_words().sleepers.fetch_sub(1, std::memory_order_seq_cst);
}

void ServerWaiting::ListenOnBell(absl::AnyInvocable<void() const> kick) {
  channel_->endpoint_->SetBellKick(std::move(kick));
  channel_->endpoint_->server_words().bell_listeners.store(1, std::memory_order_seq_cst);
}

int ServerWaiting::bell() const { return channel_->endpoint_->bell(); }

void ServerWaiting::DrainBell() { channel_->endpoint_->DrainBell(); }

void ServerWaiting::RingBell() { channel_->endpoint_->RingBell(); }

}  // namespace sluice
