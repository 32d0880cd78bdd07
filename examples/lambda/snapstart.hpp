// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// SnapStart's two moments, as a list of named steps: what to do before Lambda takes the
// snapshot at the end of init, and what to do in each copy restored from it. main() registers
// the pool's two steps; your own (flushing a cache, re-reading a secret, reseeding a random
// generator, reopening a file) go in the same lists.

#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ledger_example {

class snapshot_steps {
public:
    using step = std::function<void()>;

    /// Added steps run in the order added, before the snapshot.
    void before_snapshot(std::string name, step s) {
        before_.push_back({std::move(name), std::move(s)});
    }

    /// Added steps run in the reverse order, after a restore: what was put away last is brought
    /// back first, so a step can rely on the ones added before it.
    void after_restore(std::string name, step s) {
        after_.push_back({std::move(name), std::move(s)});
    }

    /// Throws std::runtime_error naming the step that failed; the steps after it do not run.
    void run_before_snapshot() const {
        for (const auto& n : before_) {
            run(n, "before the snapshot");
        }
    }

    /// As run_before_snapshot(), for the after-restore steps.
    void run_after_restore() const {
        for (auto it = after_.rbegin(); it != after_.rend(); ++it) {
            run(*it, "after the restore");
        }
    }

private:
    struct named {
        std::string name;
        step run;
    };

    static void run(const named& n, const char* when) {
        try {
            n.run();
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("the step \"") + n.name + "\" " + when +
                                     " failed: " + e.what());
        } catch (...) {
            throw std::runtime_error(std::string("the step \"") + n.name + "\" " + when +
                                     " threw a non-standard exception");
        }
    }

    std::vector<named> before_;
    std::vector<named> after_;
};

} // namespace ledger_example
