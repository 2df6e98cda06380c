#include "half_widening.h"

#include <iterator>
#include <vector>

#include "../schedules/schedule.h"
#include "half_widening_bitcode.h"  // kHalfWideningBitcode, from half_widening.ll

namespace gqa {

algo::HalfWidening link_half_widening(Halide::GeneratorContext::ExternsMap &externs, const Halide::Target &target) {
    const algo::HalfWidening widening = schedules::half_widening(target);
    if (widening == algo::HalfWidening::f16c_call) {
        const std::string name = "gqa.half_widening";
        const std::vector<uint8_t> bitcode(std::begin(kHalfWideningBitcode), std::end(kHalfWideningBitcode));
        externs.emplace(name, Halide::ExternalCode::bitcode_wrapper(target, bitcode, name));
    }
    return widening;
}

}  // namespace gqa
