#include "services/blocks.h"

#include "base/clock.h"
#include "services/user_records.h"
#include "services/warm_hold.h"

namespace tern::services {

Result<Blocks::List> Blocks::load(const std::string& user) {
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    if (List* l = cache_.find(user)) return *l;
    generation = generation_;
  }
  auto rows = store_.user_records(user, records::kBlockPrefix, kMaxPerUser);
  if (!rows) return rows.error();
  auto set = std::make_shared<std::set<std::string>>();
  const size_t skip = std::string(records::kBlockPrefix).size();
  for (const auto& [name, _] : *rows) set->insert(name.substr(skip));
  List list = std::move(set);
  std::lock_guard lock(mu_);
  if (List* l = cache_.find(user)) return *l;  // a change landed meanwhile: it is newer
  // Another node's change was announced during the read, which may have missed it: answered,
  // not kept (the next call reads again).
  if (generation != generation_) return list;
  cache_.emplace(user, list);
  return list;
}

bool Blocks::blocks(const std::string& blocker, const std::string& other) {
  if (!cached(blocker))
    if (auto held = WarmHold::held_block(blocker, other)) return *held;  // evicted since the warm-up
  auto l = load(blocker);
  return l && (*l)->count(other) != 0;
}

Result<std::vector<std::string>> Blocks::list(const std::string& user) {
  auto l = load(user);
  if (!l) return l.error();
  return std::vector<std::string>((*l)->begin(), (*l)->end());
}

void Blocks::forget(const std::string& user) {
  std::lock_guard lock(mu_);
  cache_.erase(user);
  ++generation_;
}

void Blocks::forget_all() {
  std::lock_guard lock(mu_);
  cache_.clear();
  ++generation_;
}

void Blocks::block(const std::string& user, const std::string& other, Done done) { change(user, other, true, std::move(done)); }

void Blocks::unblock(const std::string& user, const std::string& other, Done done) {
  change(user, other, false, std::move(done));
}

void Blocks::change(const std::string& user, const std::string& other, bool add, Done done) {
  auto current = load(user);
  if (!current) return done(current.error());
  if (add && !(*current)->count(other) && (*current)->size() >= kMaxPerUser)
    return done(make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(kMaxPerUser) + " blocked users"));
  store::Batch batch;
  if (add) batch.add(store::PutUserRecord{user, records::block(other), std::to_string(now_ms())});
  else batch.add(store::DeleteUserRecord{user, records::block(other)});
  committer_.submit(std::move(batch), [this, user, other, add, done = std::move(done)](const Result<void>& r) {
    if (r) {
      // Copy-on-write: readers hold the old set without the lock.
      std::lock_guard lock(mu_);
      auto next = std::make_shared<std::set<std::string>>();
      if (List* l = cache_.find(user)) *next = **l;
      else if (auto rows = store_.user_records(user, records::kBlockPrefix, kMaxPerUser))
        for (const auto& [name, _] : *rows) next->insert(name.substr(std::string(records::kBlockPrefix).size()));
      if (add) next->insert(other);
      else next->erase(other);
      cache_.erase(user);
      cache_.emplace(user, List(std::move(next)));
    }
    done(r);
  });
}

}  // namespace tern::services
