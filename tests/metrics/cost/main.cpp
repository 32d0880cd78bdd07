// checkout_cost.sh's driver: warmpool's checkout cycle in up to four versions (variant.cpp),
// timed in alternating rounds in one process, so that the machine's load falls on all alike.
//
//   checkout_cost time ROUNDS CYCLES      per version: median ns/cycle; per round: ratio to the
//                                         first version; prints the median ratio
//   checkout_cost profile INDEX CYCLES    only version INDEX's cycles, for callgrind
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

double run_0(long);
double run_1(long);
double run_2(long);
double run_3(long);
void profile_0(long);
void profile_1(long);
void profile_2(long);
void profile_3(long);

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const auto n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

} // namespace

int main(int argc, char** argv) {
    double (*const runs[])(long) = {run_0, run_1, run_2, run_3};
    void (*const profiles[])(long) = {profile_0, profile_1, profile_2, profile_3};
    const int versions = std::atoi(std::getenv("CHECKOUT_COST_VERSIONS"));
    if (argc == 4 && std::strcmp(argv[1], "profile") == 0) {
        profiles[std::atoi(argv[2])](std::atol(argv[3]));
        return 0;
    }
    if (argc != 4 || std::strcmp(argv[1], "time") != 0) {
        std::fprintf(stderr, "usage: checkout_cost time ROUNDS CYCLES | profile INDEX CYCLES\n");
        return 2;
    }
    const int rounds = std::atoi(argv[2]);
    const long cycles = std::atol(argv[3]);
    std::vector<std::vector<double>> ns(static_cast<std::size_t>(versions));
    for (int v = 0; v < versions; ++v) {
        runs[v](cycles / 10); // warm: pool opened, caches filled
    }
    for (int r = 0; r < rounds; ++r) {
        for (int k = 0; k < versions; ++k) {
            // Order alternates from round to round, so no version always runs first.
            const int v = r % 2 ? versions - 1 - k : k;
            ns[static_cast<std::size_t>(v)].push_back(runs[v](cycles));
        }
    }
    for (int v = 0; v < versions; ++v) {
        const auto& mine = ns[static_cast<std::size_t>(v)];
        std::vector<double> ratios;
        for (std::size_t r = 0; r < mine.size(); ++r) {
            ratios.push_back(mine[r] / ns[0][r]);
        }
        std::printf("version %d: median %.2f ns/cycle (min %.2f, max %.2f), median ratio to "
                    "version 0: %.3f\n",
                    v, median(mine), *std::min_element(mine.begin(), mine.end()),
                    *std::max_element(mine.begin(), mine.end()), median(ratios));
    }
    return 0;
}
