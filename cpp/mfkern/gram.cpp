#include "mfkern/gram.hpp"

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "mfkern/blas.hpp"

namespace mfkern {

namespace {

// Features of particles k0..k0+m-1 for inputs x into h (column-major n x m), in parallel over tiles.
template <class F>
void panel_features(const Particles& p, const Inputs& x, Activation act, long k0, long m, F* h, int n_threads) {
    const long tiles = (m + kParticleTile - 1) / kParticleTile;
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (tiles > 1)
    for (long t = 0; t < tiles; ++t) {
        const long a = t * kParticleTile, len = std::min(kParticleTile, m - a);
        feature_tile(p, x, act, k0 + a, len, h + static_cast<std::size_t>(x.n) * a, static_cast<F*>(nullptr));
    }
}

long tile_count(long n) { return (n + kGramTile - 1) / kGramTile; }

}  // namespace

void accumulate_lower(long n, long k, double scale, const float* h, long ldh, double* out, int n_threads) {
    std::vector<std::pair<long, long>> tiles;
    for (long i = 0; i < tile_count(n); ++i)
        for (long j = 0; j <= i; ++j) tiles.emplace_back(i, j);
    const long count = static_cast<long>(tiles.size());
#pragma omp parallel num_threads(n_threads) if (count > 1)
    {
        std::vector<float> tile(static_cast<std::size_t>(kGramTile) * kGramTile);
#pragma omp for schedule(dynamic)
        for (long t = 0; t < count; ++t) {
            const long r0 = tiles[t].first * kGramTile, c0 = tiles[t].second * kGramTile;
            const long nr = std::min(kGramTile, n - r0), nc = std::min(kGramTile, n - c0);
            if (r0 == c0)
                blas::syrk_lower(nr, k, 1.0f, h + r0, ldh, 0.0f, tile.data(), nr);
            else
                blas::gemm(false, true, nr, nc, k, 1.0f, h + r0, ldh, h + c0, ldh, 0.0f, tile.data(), nr);
            for (long c = 0; c < nc; ++c)
                for (long r = (r0 == c0 ? c : 0); r < nr; ++r)
                    out[(c0 + c) * n + r0 + r] += scale * double(tile[c * nr + r]);
        }
    }
}

void accumulate_lower(long n, long k, double scale, const double* h, long ldh, double* out, int n_threads) {
    std::vector<std::pair<long, long>> tiles;  // (row tile, column tile), lower triangle
    for (long i = 0; i < tile_count(n); ++i)
        for (long j = 0; j <= i; ++j) tiles.emplace_back(i, j);
    const long count = static_cast<long>(tiles.size());
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (count > 1)
    for (long t = 0; t < count; ++t) {
        const long r0 = tiles[t].first * kGramTile, c0 = tiles[t].second * kGramTile;
        const long nr = std::min(kGramTile, n - r0), nc = std::min(kGramTile, n - c0);
        if (r0 == c0)
            blas::syrk_lower(nr, k, scale, h + r0, ldh, 1.0, out + c0 * n + r0, n);
        else
            blas::gemm(false, true, nr, nc, k, scale, h + r0, ldh, h + c0, ldh, 1.0, out + c0 * n + r0, n);
    }
}

namespace {

// Large n: panels of particles in sequence, each panel's rank-m update split into output tiles.
template <class F>
void gram_by_output_tiles(const Particles& p, const Inputs& x, Activation act, long panel, FeatureCache<F>* cache,
                          double* k, int n_threads) {
    const long n = x.n, N = p.count;
    const bool cached = cache && cache->enabled();
    std::vector<F> buffer(cached ? 0 : static_cast<std::size_t>(n) * std::min(panel, N));
    const double scale = 1.0 / double(N);
    for (long k0 = 0; k0 < N; k0 += panel) {
        const long m = std::min(panel, N - k0);
        const F* h;
        if (cached) {
            cache->fill(k0, m, n_threads);
            h = cache->h(k0);
        } else {
            panel_features(p, x, act, k0, m, buffer.data(), n_threads);
            h = buffer.data();
        }
        accumulate_lower(n, m, scale, h, n, k, n_threads);
    }
}

// Small n (few output tiles, so little to share out): kGramGroups partial Grams, group g summing panels
// g, g + G, g + 2G, ... (features and rank-m update both inside the group's task), then added in order.
template <class F>
void gram_by_particle_groups(const Particles& p, const Inputs& x, Activation act, long panel,
                             FeatureCache<F>* cache, double* k, int n_threads) {
    const long n = x.n, N = p.count, panels = (N + panel - 1) / panel;
    const long groups = std::min(kGramGroups, panels);
    const bool cached = cache && cache->enabled();
    const double scale = 1.0 / double(N);
    std::vector<double> partial(static_cast<std::size_t>(groups) * n * n, 0.0);
#pragma omp parallel num_threads(n_threads) if (groups > 1)
    {
        std::vector<F> buffer(cached ? 0 : static_cast<std::size_t>(n) * std::min(panel, N));
        std::vector<F> product(std::is_same<F, double>::value ? 0 : static_cast<std::size_t>(n) * n);
#pragma omp for schedule(dynamic)
        for (long g = 0; g < groups; ++g) {
            for (long q = g; q < panels; q += groups) {
                const long k0 = q * panel, m = std::min(panel, N - k0);
                const F* h;
                if (cached) {
                    cache->fill(k0, m, 1);
                    h = cache->h(k0);
                } else {
                    for (long a = 0; a < m; a += kParticleTile)
                        feature_tile(p, x, act, k0 + a, std::min(kParticleTile, m - a),
                                     buffer.data() + static_cast<std::size_t>(n) * a, static_cast<F*>(nullptr));
                    h = buffer.data();
                }
                double* pg = partial.data() + static_cast<std::size_t>(g) * n * n;
                if constexpr (std::is_same<F, double>::value) {
                    blas::syrk_lower(n, m, scale, h, n, 1.0, pg, n);
                } else {
                    blas::syrk_lower(n, m, 1.0f, h, n, 0.0f, product.data(), n);
                    for (long c = 0; c < n; ++c)
                        for (long r = c; r < n; ++r) pg[c * n + r] += scale * double(product[c * n + r]);
                }
            }
        }
    }
    for (long g = 0; g < groups; ++g) {
        const double* pg = partial.data() + static_cast<std::size_t>(g) * n * n;
        for (long c = 0; c < n; ++c)
            for (long r = c; r < n; ++r) k[c * n + r] += pg[c * n + r];
    }
}

}  // namespace

template <class F>
void gram_symmetric(const Particles& p, const Inputs& x, Activation act, long panel, FeatureCache<F>* cache,
                    double* k, int n_threads) {
    const long n = x.n, N = p.count;
    std::fill(k, k + n * n, 0.0);
    if (n <= kSmallGram) {
        if (panel <= 0) {
            // Enough panels for every group to have work, each still a worthwhile rank-m update.
            const long per_group = (N + kGramGroups - 1) / kGramGroups;
            const long rounded = (per_group + kParticleTile - 1) / kParticleTile * kParticleTile;
            panel = std::max(kParticleTile, std::min(default_block_size(n, N), rounded));
        }
        gram_by_particle_groups(p, x, act, panel, cache, k, n_threads);
    } else {
        gram_by_output_tiles(p, x, act, panel > 0 ? panel : default_block_size(n, N), cache, k, n_threads);
    }
    for (long c = 0; c < n; ++c)
        for (long r = c + 1; r < n; ++r) k[r * n + c] = k[c * n + r];
}

template void gram_symmetric<double>(const Particles&, const Inputs&, Activation, long, FeatureCache<double>*,
                                     double*, int);
template void gram_symmetric<float>(const Particles&, const Inputs&, Activation, long, FeatureCache<float>*,
                                    double*, int);

void gram_cross(const Particles& p, const Inputs& xa, const Inputs& xb, Activation act, long panel,
                double* out_rows, int n_threads) {
    const long N = p.count;
    if (panel <= 0) panel = default_block_size(std::max(xa.n, xb.n), N);
    std::vector<double> ha(static_cast<std::size_t>(xa.n) * std::min(panel, N)),
        hb(static_cast<std::size_t>(xb.n) * std::min(panel, N));
    std::fill(out_rows, out_rows + xa.n * xb.n, 0.0);
    // Row-major na x nb output is column-major nb x na: tiles of H(Xb) H(Xa)^T.
    const long rows = tile_count(xb.n), cols = tile_count(xa.n), count = rows * cols;
    const double scale = 1.0 / double(N);
    for (long k0 = 0; k0 < N; k0 += panel) {
        const long m = std::min(panel, N - k0);
        panel_features(p, xa, act, k0, m, ha.data(), n_threads);
        panel_features(p, xb, act, k0, m, hb.data(), n_threads);
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (count > 1)
        for (long t = 0; t < count; ++t) {
            const long r0 = (t / cols) * kGramTile, c0 = (t % cols) * kGramTile;
            const long nr = std::min(kGramTile, xb.n - r0), nc = std::min(kGramTile, xa.n - c0);
            blas::gemm(false, true, nr, nc, m, scale, hb.data() + r0, xb.n, ha.data() + c0, xa.n, 1.0,
                       out_rows + c0 * xb.n + r0, xb.n);
        }
    }
}

}  // namespace mfkern
