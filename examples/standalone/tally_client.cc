// tally_client: adds to a few counters of tally.Tally, leaving out what the
// schema lets it leave out, and checks the server's answers against its own
// count. Exit status 0 only if every answer matches.
#include <cstdio>
#include <map>
#include <string>

#include "absl/time/time.h"
#include "ipc/host/service_host.h"
#include "tally_sluice.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& line) {
  std::printf("tally_client: %s %s\n", ok ? "ok  " : "FAIL", line.c_str());
  failures += ok ? 0 : 1;
}

// "apples=5 (crate) pears=2 " for a Top response.
std::string Describe(const tally::TopResponse& top) {
  std::string text;
  if (top.counters() == nullptr) return text;
  for (const tally::Counter* counter : *top.counters()) {
    text += counter->name()->str() + "=" + std::to_string(counter->total());
    if (counter->note() != nullptr && counter->note()->size() > 0) {
      text += " (" + counter->note()->str() + ")";
    }
    text += " ";
  }
  return text;
}

}  // namespace

int main() {
  auto manager = sluice::ServiceManager::Connect();
  if (!manager.ok()) {
    std::fprintf(stderr, "tally_client: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  if (absl::Status up = (*manager)->WaitFor(tally::TallyInterface::kName, absl::Seconds(10));
      !up.ok()) {
    std::fprintf(stderr, "tally_client: %s\n", up.ToString().c_str());
    return 1;
  }
  auto tally = sluice::Connect<tally::TallyProxy>(**manager);
  if (!tally.ok()) {
    std::fprintf(stderr, "tally_client: %s\n", tally.status().ToString().c_str());
    return 1;
  }

  // What the server should hold, counted here as the calls go out.
  std::map<std::string, int64_t> expected;
  int adds = 0;
  auto added = [&](const std::string& name, int64_t amount,
                   const absl::StatusOr<sluice::rpc::Response<tally::AddResponse>>& reply) {
    expected[name] += amount;
    ++adds;
    Check(reply.ok() && (*reply)->total() == expected[name],
          "Add(" + name + ", " + std::to_string(amount) + ") -> " +
              (reply.ok() ? std::to_string((*reply)->total()) : reply.status().ToString()));
  };
  added("apples", 1, (*tally)->Add("apples"));  // amount: the schema default; no note.
  added("apples", 4, (*tally)->Add("apples", 4, "crate"));
  added("pears", 2, (*tally)->Add("pears", 2));
  added("plums", 1, (*tally)->Add("plums"));
  added("quinces", -1, (*tally)->Add("quinces", -1));

  auto top = (*tally)->Top();  // limit = 3, the schema default; any prefix.
  const std::string want_top = "apples=" + std::to_string(expected["apples"]) +
                               " (crate) pears=" + std::to_string(expected["pears"]) +
                               " plums=" + std::to_string(expected["plums"]) + " ";
  Check(top.ok() && Describe(**top) == want_top,
        "Top() -> " + (top.ok() ? Describe(**top) : top.status().ToString()));

  auto some = (*tally)->Top(5, "p");
  const std::string want_some = "pears=" + std::to_string(expected["pears"]) +
                                " plums=" + std::to_string(expected["plums"]) + " ";
  Check(some.ok() && Describe(**some) == want_some,
        "Top(5, \"p\") -> " + (some.ok() ? Describe(**some) : some.status().ToString()));

  std::printf("tally_client: %d adds\n", adds);
  std::printf("tally_client: %s\n", failures == 0 ? "all answers match" : "MISMATCH");
  return failures == 0 ? 0 : 1;
}
