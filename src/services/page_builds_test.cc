// Unit tests of PageBuilds: the pages of a loop are built one at a time, in order, by the
// fiber that asked first; a bounded number wait; off the loops a page is built at once.
// A page asked for while another is built (here: from inside the build, as another fiber
// does while the build waits for the store) must not start before that build returned.
#include "services/page_builds.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/loops.h"

namespace tern::services {
namespace {

TEST(PageBuilds, PagesAskedForDuringABuildWaitAndRunInOrderAfterIt) {
  PageBuilds pages(2);
  std::vector<std::string> log;
  bool inside = false;
  auto page = [&](std::string name) {
    return [&, name] {
      EXPECT_FALSE(inside) << name << " started while another page was being built";
      inside = true;
      log.push_back(name);
      inside = false;
    };
  };
  ASSERT_TRUE(pages.run(0, [&] {
    inside = true;
    log.push_back("first");
    // Asked for meanwhile on the same loop: queued, not run here.
    EXPECT_TRUE(pages.run(0, page("second")));
    EXPECT_TRUE(pages.run(0, page("third")));
    // Another loop does not wait for this one.
    EXPECT_TRUE(pages.run(1, [&] { log.push_back("other loop"); }));
    EXPECT_EQ(log.size(), 2u) << "a page of loop 0 ran inside the first build";
    inside = false;
  }));
  EXPECT_EQ(log, (std::vector<std::string>{"first", "other loop", "second", "third"}));
  ASSERT_TRUE(pages.run(0, page("later")));  // none building: at once
  EXPECT_EQ(log.back(), "later");
}

TEST(PageBuilds, AtMostkMaxWaitingPagesWaitPerLoop) {
  PageBuilds pages(1);
  size_t built = 0;
  bool refused = false;
  ASSERT_TRUE(pages.run(0, [&] {
    for (size_t i = 0; i < PageBuilds::kMaxWaiting; ++i) ASSERT_TRUE(pages.run(0, [&] { ++built; }));
    refused = !pages.run(0, [&] { ++built; });
  }));
  EXPECT_TRUE(refused) << "page " << PageBuilds::kMaxWaiting + 1 << " waiting was taken";
  EXPECT_EQ(built, PageBuilds::kMaxWaiting);
  EXPECT_TRUE(pages.run(0, [&] { ++built; })) << "the queue emptied: a new page is taken";
  EXPECT_EQ(built, PageBuilds::kMaxWaiting + 1);
}

TEST(PageBuilds, OffTheLoopsAPageIsBuiltAtOnce) {
  PageBuilds pages(1);
  int outer = 0, inner = 0;
  ASSERT_TRUE(pages.run(Loops::kNone, [&] {
    ++outer;
    ASSERT_TRUE(pages.run(Loops::kNone, [&] { ++inner; }));
    EXPECT_EQ(inner, 1) << "reader threads bound these pages: none waits";
  }));
  EXPECT_EQ(outer, 1);
}

}  // namespace
}  // namespace tern::services
