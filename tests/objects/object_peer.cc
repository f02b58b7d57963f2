// The other processes of the object-reference tests:
//
//   object_peer SOCKET NAME --ready_fd=3         publish a Holder as NAME, say ready, serve
//                                                until killed
//   object_peer SOCKET --keep_made=NAME --ready_fd=3
//                                                take the object NAME's Make() returns and
//                                                keep it (its Response gone), say ready,
//                                                wait until killed
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "ipc/host/service_host.h"
#include "ipc/rpc/object.h"
#include "tests/objects/objects_service.h"

namespace {

int KeepMade(sluice::ServiceManager& manager, const std::string& name) {
  auto holder = sluice::Connect<sluice::testing::objects::HolderProxy>(manager, name);
  if (!holder.ok()) {
    std::fprintf(stderr, "object_peer: %s\n", holder.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<sluice::rpc::Remote<sluice::testing::objects::CallbackProxy>> kept;
  {
    auto made = (*holder)->Make();
    if (!made.ok()) {
      std::fprintf(stderr, "object_peer: Make: %s\n", made.status().ToString().c_str());
      return 2;
    }
    kept = sluice::rpc::TakeObject<sluice::testing::objects::CallbackProxy>(*made,
                                                                            (*made)->callback());
  }
  const absl::Status called = kept.ok() ? (*kept)->Call(1).status() : kept.status();
  if (!called.ok()) {
    std::fprintf(stderr, "object_peer: the made object: %s\n", called.ToString().c_str());
    return 2;
  }
  (void)!::write(3, "ready\n", 6);
  ::close(3);
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: object_peer SOCKET (NAME | --keep_made=NAME) --ready_fd=3\n");
    return 2;
  }
  auto manager = sluice::ServiceManager::Connect({.socket_path = argv[1]});
  if (!manager.ok()) {
    std::fprintf(stderr, "object_peer: %s\n", manager.status().ToString().c_str());
    return 2;
  }
  const std::string role = argv[2];
  if (absl::StartsWith(role, "--keep_made=")) {
    return KeepMade(**manager, role.substr(std::string("--keep_made=").size()));
  }
  sluice::ServiceHost host(**manager);
  if (absl::Status published =
          host.Publish(std::make_shared<sluice::testing::HolderService>(), role);
      !published.ok()) {
    std::fprintf(stderr, "object_peer: %s\n", published.ToString().c_str());
    return 2;
  }
  (void)!::write(3, "ready\n", 6);
  ::close(3);
  for (;;) ::pause();
}
