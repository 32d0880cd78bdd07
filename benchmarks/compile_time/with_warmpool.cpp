// Figure 7: what a user's translation unit costs to compile with warmpool's SOCI adapter.
// SPDX-License-Identifier: BSL-1.0
#include <warmpool/soci.hpp>

int count_rows(warmpool::soci_pool& pool) {
    auto sql = pool.acquire();
    int n = 0;
    *sql << "SELECT count(*) FROM t", soci::into(n);
    return n;
}
