// Figure 7's baseline: the same function on a plain SOCI session.
// SPDX-License-Identifier: BSL-1.0
#include <soci/soci.h>

int count_rows(soci::session& sql) {
    int n = 0;
    sql << "SELECT count(*) FROM t", soci::into(n);
    return n;
}
