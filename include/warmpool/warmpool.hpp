// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The generic core: basic_pool over any backend traits (see traits.hpp). No database library is
// needed; warmpool/soci.hpp adds SOCI sessions.

#include <warmpool/version.hpp>

#include <warmpool/errors.hpp>
#include <warmpool/events.hpp>
#include <warmpool/options.hpp>
#include <warmpool/stats.hpp>
#include <warmpool/traits.hpp>

#include <warmpool/lease.hpp>
#include <warmpool/pool.hpp>

#include <warmpool/metrics.hpp> // Prometheus text exposition of pool_stats
