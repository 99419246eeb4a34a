// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//
// Every random number mfkern draws is a pure function of (seed, step, index, stream, block), so a run is
// bitwise identical whatever the number of threads (or processes) that evaluate it, and any step of a run
// can be replayed without replaying the ones before it.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace mfkern {

enum class Stream : std::uint32_t { ParticleNoise = 0, LabelNoise = 1 };

inline std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> ctr,
                                                  std::array<std::uint32_t, 2> key) {
    constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        const std::uint64_t p0 = static_cast<std::uint64_t>(M0) * ctr[0];
        const std::uint64_t p1 = static_cast<std::uint64_t>(M1) * ctr[2];
        ctr = {static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<std::uint32_t>(p1),
               static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<std::uint32_t>(p0)};
        key[0] += W0;
        key[1] += W1;
    }
    return ctr;
}

// The random numbers of one (seed, step, index, stream): a sequence of blocks of 4 x 32 random bits.
class CounterRng {
  public:
    CounterRng(std::uint64_t seed, std::uint32_t step, std::uint32_t index, Stream stream)
        : key_{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)},
          step_(step), index_(index), stream_(static_cast<std::uint32_t>(stream)) {}

    std::array<std::uint32_t, 4> block(std::uint32_t b) const {
        return philox4x32_10({b, index_, step_, stream_}, key_);
    }

    // Two uniforms from block b: u0 in (0, 1], u1 in [0, 1), 53 random bits each.
    static void uniforms(const std::array<std::uint32_t, 4>& r, double& u0, double& u1) {
        constexpr double two_m53 = 1.0 / 9007199254740992.0;
        const std::uint64_t a = (static_cast<std::uint64_t>(r[0]) << 32 | r[1]) >> 11;
        const std::uint64_t c = (static_cast<std::uint64_t>(r[2]) << 32 | r[3]) >> 11;
        u0 = (static_cast<double>(a) + 1.0) * two_m53;
        u1 = static_cast<double>(c) * two_m53;
    }

    // Fill out[0..count) with independent standard normals (Box-Muller, two per block).
    void normals(double* out, int count) const {
        constexpr double two_pi = 6.283185307179586476925;
        for (int j = 0, b = 0; j < count; j += 2, ++b) {
            double u0, u1;
            uniforms(block(static_cast<std::uint32_t>(b)), u0, u1);
            const double radius = std::sqrt(-2.0 * std::log(u0));
            out[j] = radius * std::cos(two_pi * u1);
            if (j + 1 < count) out[j + 1] = radius * std::sin(two_pi * u1);
        }
    }

    // Fill out[0..count) with independent Uniform[-level, level] numbers.
    void symmetric_uniforms(double* out, int count, double level) const {
        for (int j = 0, b = 0; j < count; j += 2, ++b) {
            double u0, u1;
            uniforms(block(static_cast<std::uint32_t>(b)), u0, u1);
            out[j] = level * (2.0 * u1 - 1.0);
            if (j + 1 < count) out[j + 1] = level * (1.0 - 2.0 * (u0 - 0x1p-53));
        }
    }

  private:
    std::array<std::uint32_t, 2> key_;
    std::uint32_t step_, index_, stream_;
};

}  // namespace mfkern
