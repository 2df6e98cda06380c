#include "half_widening.h"

#include <iterator>
#include <vector>

#include "../schedules/schedule.h"
#include "half_widening_bitcode.h"  // kHalfWideningBitcode, from half_widening.ll

namespace gqa {

void link_half_widening(Halide::GeneratorContext::ExternsMap &externs, const Halide::Target &target) {
    if (schedules::half_widening(target) != algo::HalfWidening::f16c_call) return;
    const std::string name = "gqa.half_widening";
    const std::vector<uint8_t> bitcode(std::begin(kHalfWideningBitcode), std::end(kHalfWideningBitcode));
    externs.emplace(name, Halide::ExternalCode::bitcode_wrapper(target, bitcode, name));
}

}  // namespace gqa
