// warmpool — a header-only connection pool for C++17.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#define WARMPOOL_VERSION_MAJOR 0
#define WARMPOOL_VERSION_MINOR 1
#define WARMPOOL_VERSION_PATCH 0

// Single number for preprocessor comparisons: MAJOR * 10000 + MINOR * 100 + PATCH.
#define WARMPOOL_VERSION                                                                           \
    (WARMPOOL_VERSION_MAJOR * 10000 + WARMPOOL_VERSION_MINOR * 100 + WARMPOOL_VERSION_PATCH)
